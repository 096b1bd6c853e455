package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// ConnsOptions configures `iii bench conns`.
type ConnsOptions struct {
	N          int           // idle worker connections to hold
	CallFor    time.Duration // how long to measure calls while they are held
	Executable string
	Logger     *slog.Logger
}

// ConnsReport is what holding N idle connections cost the engine.
type ConnsReport struct {
	Requested    int     `json:"requested"`
	Held         int     `json:"held"`
	DialErrors   int64   `json:"dial_errors"`
	FileLimit    uint64  `json:"file_limit"`
	LimitNote    string  `json:"limit_note,omitempty"`
	RSSBefore    int64   `json:"rss_before_bytes"`
	RSSAfter     int64   `json:"rss_after_bytes"`
	BytesPerConn float64 `json:"rss_bytes_per_conn"`
	Call         Result  `json:"call"` // one call in flight while all are held
}

// Conns opens N idle worker connections to an engine in a child process
// and reports the engine's memory per connection and the latency of calls
// made meanwhile.
func Conns(ctx context.Context, o ConnsOptions) (*ConnsReport, error) {
	if o.N <= 0 {
		return nil, errors.New("bench: --n must be positive")
	}
	if o.CallFor <= 0 {
		o.CallFor = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	rep := &ConnsReport{Requested: o.N}
	limit, err := raiseFileLimit()
	rep.FileLimit = limit
	switch {
	case err != nil:
		rep.LimitNote = fmt.Sprintf("could not raise the open-file limit: %v", err)
	case limit < uint64(o.N)+256:
		rep.LimitNote = fmt.Sprintf("the open-file limit is %d, below the %d connections asked for (+256 spare): raise it with `ulimit -n` (hard limit) first", limit, o.N)
	}
	c, err := startChild(ctx, o.Executable, "engine", o.Logger)
	if err != nil {
		return nil, err
	}
	defer c.stop()

	// Settle: a worker and a caller are connected and warm before the
	// "before" sample, so the difference is the idle connections alone.
	mo := Options{Workers: 1, Concurrency: 1, Duration: time.Second, Payload: 128, Logger: o.Logger}
	if err := mo.check(); err != nil {
		return nil, err
	}
	if _, err := measure(ctx, mo, c.url, nil); err != nil {
		return nil, err
	}
	rep.RSSBefore = c.sample().rss

	conns := make([]*websocket.Conn, 0, o.N)
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		failed  atomic.Int64
		sem     = make(chan struct{}, 128)
		lastErr atomic.Value
	)
	for range o.N {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		// Exits when the dial (and its greeting) is done.
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(dctx, c.url, &websocket.DialOptions{HTTPClient: http.DefaultClient})
			if err == nil {
				_, _, err = ws.Read(dctx) // workerregistered
			}
			if err != nil {
				failed.Add(1)
				lastErr.Store(err)
				if ws != nil {
					ws.CloseNow()
				}
				return
			}
			mu.Lock()
			conns = append(conns, ws)
			mu.Unlock()
		}()
	}
	wg.Wait()
	defer func() {
		for _, ws := range conns {
			ws.CloseNow()
		}
	}()
	rep.Held, rep.DialErrors = len(conns), failed.Load()
	if rep.DialErrors > 0 && rep.LimitNote == "" {
		rep.LimitNote = fmt.Sprintf("%d dials failed, last: %v", rep.DialErrors, lastErr.Load())
	}
	time.Sleep(500 * time.Millisecond) // let the engine's allocations settle before sampling
	rep.RSSAfter = c.sample().rss
	if rep.Held > 0 {
		rep.BytesPerConn = float64(rep.RSSAfter-rep.RSSBefore) / float64(rep.Held)
	}
	mo.Duration = o.CallFor
	res, err := measure(ctx, mo, c.url, nil)
	if err != nil {
		return rep, err
	}
	rep.Call = *res
	rep.Call.Target = "engine"
	return rep, nil
}

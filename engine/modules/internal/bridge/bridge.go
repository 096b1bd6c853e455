// Package bridge connects a module to another engine as one of that
// engine's workers: iii's `bridge` adapter of the state and stream modules
// (the module calls the same functions there: state::set there for a
// state::set here; it still validates its input, fires its own triggers and
// tells its own subscribers; only the storage is remote), and the iii-bridge
// worker (package bridgeclient).
//
// As in iii, the connection is made in the background: an engine whose
// remote is not up yet still starts, and keeps trying. Calls made before
// the first connection wait for it, up to their timeout; after it, the SDK
// reconnects on its own and calls wait in its queue.
package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

const (
	// connectTimeout bounds one connection attempt.
	connectTimeout = 10 * time.Second
	// retryInitial and retryMax bound the wait between attempts.
	retryInitial = 100 * time.Millisecond
	retryMax     = 5 * time.Second
	// waitDefault bounds a call's wait for the first connection when the
	// call names no timeout of its own.
	waitDefault = sdk.DefaultInvocationTimeout
)

// ErrClosed is returned for calls after Close.
var ErrClosed = errors.New("bridge: closed")

// Remote is a connection to another engine.
type Remote struct {
	url   string
	ready chan struct{} // closed once connected; w is set before
	w     *sdk.Worker
	stop  context.CancelFunc
	done  chan struct{} // closed when the connecting goroutine has ended

	closeOnce sync.Once
	closeErr  error
}

// Dial starts connecting to the engine at url as a worker named name, in
// the background, retrying until it connects or Close. onConnect (may be
// nil) runs once, on the first connection, before any call is sent: it
// registers what the worker offers, which the SDK replays on reconnects.
// Only a malformed url is an error.
func Dial(rawURL, name string, log *slog.Logger, onConnect func(*sdk.Worker) error) (*Remote, error) {
	if u, err := url.Parse(rawURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("bridge to %q: want a ws:// or wss:// URL", rawURL)
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &Remote{url: rawURL, ready: make(chan struct{}), stop: stop, done: make(chan struct{})}
	go r.connect(ctx, name, log, onConnect) // ends once connected, or at Close
	return r, nil
}

func (r *Remote) connect(ctx context.Context, name string, log *slog.Logger, onConnect func(*sdk.Worker) error) {
	defer close(r.done)
	delay := retryInitial
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, connectTimeout)
		w, err := sdk.Connect(cctx, r.url, sdk.WithName(name), sdk.WithLogger(log), sdk.WithTelemetry(false))
		cancel()
		if err == nil {
			if onConnect != nil {
				if err := onConnect(w); err != nil {
					log.Error("bridge: setting up on the remote engine failed", "url", r.url, "err", err)
				}
			}
			r.w = w
			close(r.ready)
			log.Info("bridge: connected", "url", r.url, "attempts", attempt)
			return
		}
		if attempt == 1 || attempt%20 == 0 {
			log.Warn("bridge: remote engine unreachable; retrying", "url", r.url, "attempt", attempt, "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, retryMax)
	}
}

// Connected reports whether the first connection has been made.
func (r *Remote) Connected() bool {
	select {
	case <-r.ready:
		return true
	default:
		return false
	}
}

// URL is the remote engine's address.
func (r *Remote) URL() string { return r.url }

// worker waits up to wait (or ctx) for the first connection.
func (r *Remote) worker(ctx context.Context, wait time.Duration) (*sdk.Worker, error) {
	select {
	case <-r.ready:
		return r.w, nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-r.ready:
		return r.w, nil
	case <-r.done: // ended without connecting: closed
		select {
		case <-r.ready:
			return r.w, nil
		default:
			return nil, ErrClosed
		}
	case <-t.C:
		return nil, fmt.Errorf("bridge to %s: not connected after %v", r.url, wait)
	case <-ctx.Done():
		return nil, fmt.Errorf("bridge to %s: not connected: %w", r.url, ctx.Err())
	}
}

// Trigger is sdk.Worker.Trigger on the remote engine, once connected; the
// wait for the connection counts against req.Timeout.
func (r *Remote) Trigger(ctx context.Context, req sdk.TriggerRequest) (json.RawMessage, error) {
	wait := waitDefault
	if req.Timeout > 0 {
		wait = req.Timeout
	}
	start := time.Now()
	w, err := r.worker(ctx, wait)
	if err != nil {
		return nil, err
	}
	if req.Timeout > 0 {
		req.Timeout = max(req.Timeout-time.Since(start), time.Millisecond)
	}
	return w.Trigger(ctx, req)
}

// Call calls fn on the remote engine with in (any JSON-encodable value, or
// raw JSON). A JSON null answer is no result (nil). The remote's own errors
// come back as *protocol.ErrorBody.
func (r *Remote) Call(ctx context.Context, fn string, in any) (json.RawMessage, error) {
	res, err := r.Trigger(ctx, sdk.TriggerRequest{FunctionID: fn, Payload: in})
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(res); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	return res, nil
}

// Close stops connecting, and disconnects when connected.
func (r *Remote) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.stop()
		<-r.done // soon: a connection attempt ends with the cancelled context
		select {
		case <-r.ready:
			if err := r.w.Close(ctx); err != nil {
				r.closeErr = fmt.Errorf("bridge to %s: close: %w", r.url, err)
			}
		default:
		}
	})
	return r.closeErr
}

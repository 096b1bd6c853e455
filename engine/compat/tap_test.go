package compat_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
)

// tap is a WebSocket proxy between SDK workers and the engine that records
// every worker-socket frame and can cut the worker's side of a connection
// while leaving the engine's side open, as a dead NAT mapping would.
type tap struct {
	upstream string // engine ws:// URL
	srv      *httptest.Server
	url      string

	mu       sync.Mutex
	sessions []*tapSession // worker sockets ("/") in connection order
	changed  chan struct{} // cap 1; signalled on any new session or frame
	wg       sync.WaitGroup
	conns    []*websocket.Conn // every socket, closed on cleanup
}

// tapSession is one proxied worker connection.
type tapSession struct {
	down, up *websocket.Conn // worker side, engine side

	mu         sync.Mutex
	fromWorker []frame
	fromEngine []frame
	dropped    bool          // worker side cut on purpose; keep up open
	upClosed   chan struct{} // closed when the engine side has ended
}

func startTap(t *testing.T, upstream string) *tap {
	t.Helper()
	tp := &tap{upstream: upstream, changed: make(chan struct{}, 1)}
	tp.srv = httptest.NewServer(http.HandlerFunc(tp.serve))
	tp.url = "ws" + strings.TrimPrefix(tp.srv.URL, "http")
	t.Cleanup(func() {
		tp.mu.Lock()
		conns := tp.conns
		tp.mu.Unlock()
		for _, c := range conns {
			c.CloseNow()
		}
		tp.wg.Wait()
		tp.srv.Close()
	})
	return tp
}

func (tp *tap) signal() {
	select {
	case tp.changed <- struct{}{}:
	default:
	}
}

func (tp *tap) track(c *websocket.Conn) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.conns = append(tp.conns, c)
}

func (tp *tap) serve(w http.ResponseWriter, r *http.Request) {
	tp.wg.Add(1)
	defer tp.wg.Done()
	up, _, err := websocket.Dial(r.Context(), tp.upstream+r.URL.Path, nil)
	if err != nil {
		http.Error(w, "tap: "+err.Error(), http.StatusBadGateway)
		return
	}
	down, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		up.CloseNow()
		return
	}
	up.SetReadLimit(-1)
	down.SetReadLimit(-1)
	tp.track(up)
	tp.track(down)
	s := &tapSession{down: down, up: up, upClosed: make(chan struct{})}
	record := r.URL.Path == "/"
	if record {
		tp.mu.Lock()
		tp.sessions = append(tp.sessions, s)
		tp.mu.Unlock()
		tp.signal()
	}
	ctx := context.Background()
	var pumps sync.WaitGroup
	pumps.Add(1)
	// Worker to engine; exits when the worker side ends. The engine side is
	// closed too unless the worker side was cut on purpose.
	go func() {
		defer pumps.Done()
		for {
			typ, b, err := down.Read(ctx)
			if err != nil {
				s.mu.Lock()
				dropped := s.dropped
				s.mu.Unlock()
				if !dropped {
					up.Close(websocket.StatusNormalClosure, "")
				}
				return
			}
			if record && typ == websocket.MessageText {
				if f, err := parseFrame(b); err == nil {
					s.mu.Lock()
					s.fromWorker = append(s.fromWorker, f)
					s.mu.Unlock()
					tp.signal()
				}
			}
			if err := up.Write(ctx, typ, b); err != nil {
				return
			}
		}
	}()
	// Engine to worker; runs until the engine side ends, even after the
	// worker side was cut (frames are then recorded and discarded).
	for {
		typ, b, err := up.Read(ctx)
		if err != nil {
			close(s.upClosed)
			down.CloseNow()
			break
		}
		if record && typ == websocket.MessageText {
			if f, err := parseFrame(b); err == nil {
				s.mu.Lock()
				s.fromEngine = append(s.fromEngine, f)
				s.mu.Unlock()
				tp.signal()
			}
		}
		_ = down.Write(ctx, typ, b)
	}
	pumps.Wait()
}

// session waits for the i-th worker connection (0-based).
func (tp *tap) session(t *testing.T, ctx context.Context, i int) *tapSession {
	t.Helper()
	for {
		tp.mu.Lock()
		n := len(tp.sessions)
		var s *tapSession
		if i < n {
			s = tp.sessions[i]
		}
		tp.mu.Unlock()
		if s != nil {
			return s
		}
		select {
		case <-tp.changed:
		case <-ctx.Done():
			t.Fatalf("tap: worker connection #%d never came (%d so far): %v", i+1, n, ctx.Err())
		}
	}
}

// waitFrames waits until pred holds for the session's recorded frames.
func (tp *tap) waitFrames(t *testing.T, ctx context.Context, s *tapSession, what string, pred func(fromWorker, fromEngine []frame) bool) ([]frame, []frame) {
	t.Helper()
	for {
		s.mu.Lock()
		fw, fe := append([]frame(nil), s.fromWorker...), append([]frame(nil), s.fromEngine...)
		s.mu.Unlock()
		if pred(fw, fe) {
			return fw, fe
		}
		select {
		case <-tp.changed:
		case <-ctx.Done():
			t.Fatalf("tap: %s never seen: %v\nworker sent: %v\nengine sent: %v", what, ctx.Err(), fw, fe)
		}
	}
}

// dropWorkerSide cuts the worker's side of s without a close handshake and
// keeps the engine's side open.
func (s *tapSession) dropWorkerSide() {
	s.mu.Lock()
	s.dropped = true
	s.mu.Unlock()
	s.down.CloseNow()
}

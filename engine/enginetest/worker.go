package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// FrameTimeout is how long Expect waits for a frame.
const FrameTimeout = 10 * time.Second

// Worker speaks the wire protocol frame by frame, as a test double of a
// worker SDK (the real SDKs are exercised in engine/compat).
type Worker struct {
	t      testing.TB
	Conn   *websocket.Conn
	ID     string // worker_id of workerregistered
	Token  string // reattach_token of workerregistered
	frames chan map[string]any
	errc   chan error
}

// DialRaw opens a WebSocket to url within FrameTimeout, without reading
// from it.
func DialRaw(t testing.TB, url string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), FrameTimeout)
	defer cancel()
	return websocket.Dial(ctx, url, opts)
}

// Dial connects a worker to url and waits for its workerregistered frame.
// The socket is closed at cleanup.
func Dial(t testing.TB, url string) *Worker { return DialWith(t, url, nil) }

// DialWith is Dial with dial options (headers, a custom HTTP client).
func DialWith(t testing.TB, url string, opts *websocket.DialOptions) *Worker {
	t.Helper()
	ws, _, err := DialRaw(t, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(64 << 20)
	w := &Worker{t: t, Conn: ws, frames: make(chan map[string]any, 256), errc: make(chan error, 1)}
	// Exits when the socket closes (cleanup closes it).
	go func() {
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				w.errc <- err
				close(w.frames)
				return
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("engine sent non-JSON frame %q: %v", data, err)
				continue
			}
			w.frames <- m
		}
	}()
	t.Cleanup(func() {
		ws.CloseNow()
		for range w.frames {
		}
	})
	hello := w.Expect("workerregistered")
	w.ID, _ = hello["worker_id"].(string)
	w.Token, _ = hello["reattach_token"].(string)
	if w.ID == "" || w.Token == "" {
		t.Fatalf("workerregistered without ids: %v", hello)
	}
	return w
}

// Send writes v as one text frame: a string or []byte as is, anything
// else as JSON.
func (w *Worker) Send(v any) {
	w.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			w.t.Fatalf("marshal: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), FrameTimeout)
	defer cancel()
	if err := w.Conn.Write(ctx, websocket.MessageText, b); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// Next returns the next frame, failing the test after timeout.
func (w *Worker) Next(timeout time.Duration) map[string]any {
	w.t.Helper()
	m, ok := w.NextWithin(timeout)
	if !ok {
		w.t.Fatalf("no frame within %v", timeout)
	}
	return m
}

// NextWithin returns the next frame if one arrives within d; false when
// none does (a socket closed meanwhile fails the test).
func (w *Worker) NextWithin(d time.Duration) (map[string]any, bool) {
	w.t.Helper()
	select {
	case m, ok := <-w.frames:
		if !ok {
			w.t.Fatalf("socket closed while waiting for a frame: %v", <-w.errc)
		}
		return m, true
	case <-time.After(d):
		return nil, false
	}
}

// Expect returns the next frame and checks its type.
func (w *Worker) Expect(typ string) map[string]any {
	w.t.Helper()
	m := w.Next(FrameTimeout)
	if m["type"] != typ {
		w.t.Fatalf("got frame %v, want type %q", m, typ)
	}
	return m
}

// Quiet asserts no frame arrives before a ping round trip completes: the
// engine handles a connection's frames in order, so anything it meant to
// send before the pong arrives first.
//
// functionregistered, the engine's ack of a registration to a worker that
// speaks observe.v1, is skipped: tests of observe read it themselves.
func (w *Worker) Quiet() {
	w.t.Helper()
	w.Send(`{"type":"ping"}`)
	for {
		m := w.Next(FrameTimeout)
		if m["type"] == "functionregistered" {
			continue
		}
		if m["type"] != "pong" {
			w.t.Fatalf("unexpected frame %v (wanted only pong)", m)
		}
		return
	}
}

// Closed waits for the engine to close the socket and returns the close
// status.
func (w *Worker) Closed(timeout time.Duration) websocket.StatusCode {
	w.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-w.frames:
			if !ok {
				return websocket.CloseStatus(<-w.errc)
			}
		case <-deadline:
			w.t.Fatalf("socket not closed within %v", timeout)
		}
	}
}

// Call invokes a function through the engine and returns the result frame.
func (w *Worker) Call(fn string, data any, id string) map[string]any {
	w.t.Helper()
	w.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": fn, "data": data})
	return w.Expect("invocationresult")
}

// Register registers a function and returns once the engine has handled
// the registration.
func (w *Worker) Register(fn string) {
	w.t.Helper()
	w.Send(map[string]any{"type": "registerfunction", "id": fn})
	w.Quiet() // frames are handled in order: the registration is done
}

// ServeOnce answers the next invokefunction with result, or with errBody
// when it is not nil, and returns the invokefunction frame.
func (w *Worker) ServeOnce(result any, errBody map[string]any) map[string]any {
	w.t.Helper()
	inv := w.Expect("invokefunction")
	res := map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": inv["function_id"]}
	if errBody != nil {
		res["error"] = errBody
	} else {
		res["result"] = result
	}
	w.Send(res)
	return inv
}

// ErrCode is the error code of a result frame ("" when it has none).
func ErrCode(frame map[string]any) string {
	e, _ := frame["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// T is the test the worker reports to.
func (w *Worker) T() testing.TB { return w.t }

// Declare sends engine::workers::register with data (name, runtime,
// features, namespace...) as the 0.25 SDKs do, and waits until the engine
// has handled it.
func (w *Worker) Declare(data map[string]any) {
	w.t.Helper()
	w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register",
		"action": map[string]any{"type": "void"}, "data": data})
	w.Quiet()
}

// SendFragmented writes v as one text message of 1 MiB fragments, as the
// 0.25 SDKs send messages over 16 MiB.
func (w *Worker) SendFragmented(v any) {
	w.t.Helper()
	if err := w.WriteFragmented(v); err != nil {
		w.t.Fatal(err)
	}
}

// WriteFragmented is SendFragmented returning the error.
func (w *Worker) WriteFragmented(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wr, err := w.Conn.Writer(ctx, websocket.MessageText)
	if err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	for len(b) > 0 {
		n := min(len(b), 1<<20)
		if _, err := wr.Write(b[:n]); err != nil {
			return fmt.Errorf("write fragment: %w", err)
		}
		b = b[n:]
	}
	if err := wr.Close(); err != nil {
		return fmt.Errorf("close message: %w", err)
	}
	return nil
}

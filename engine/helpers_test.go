package engine_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testEngine is a real engine on a loopback httptest server.
type testEngine struct {
	*engine.Engine
	srv *httptest.Server
	url string
}

func startEngine(t *testing.T, opts engine.Options) *testEngine {
	t.Helper()
	eng, err := engine.New(opts)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	srv := httptest.NewServer(eng.Handler())
	te := &testEngine{Engine: eng, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := eng.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		srv.Close()
	})
	return te
}

// rawWorker speaks the wire protocol frame by frame, as a test double of a
// worker SDK (the real SDKs are exercised in engine/compat).
type rawWorker struct {
	t      *testing.T
	ws     *websocket.Conn
	id     string
	token  string
	frames chan map[string]any
	errc   chan error
}

func dialOpts(t *testing.T, url string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return websocket.Dial(ctx, url, opts)
}

func dial(t *testing.T, url string) *rawWorker {
	t.Helper()
	ws, _, err := dialOpts(t, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(64 << 20)
	w := &rawWorker{t: t, ws: ws, frames: make(chan map[string]any, 256), errc: make(chan error, 1)}
	// Exits when the socket closes (Cleanup closes it).
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
	hello := w.expect("workerregistered")
	w.id, _ = hello["worker_id"].(string)
	w.token, _ = hello["reattach_token"].(string)
	if w.id == "" || w.token == "" {
		t.Fatalf("workerregistered without ids: %v", hello)
	}
	return w
}

func (w *rawWorker) send(v any) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.ws.Write(ctx, websocket.MessageText, b); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, failing the test after timeout.
func (w *rawWorker) next(timeout time.Duration) map[string]any {
	w.t.Helper()
	select {
	case m, ok := <-w.frames:
		if !ok {
			w.t.Fatalf("socket closed while waiting for a frame: %v", <-w.errc)
		}
		return m
	case <-time.After(timeout):
		w.t.Fatalf("no frame within %v", timeout)
	}
	return nil
}

// expect returns the next frame and checks its type.
func (w *rawWorker) expect(typ string) map[string]any {
	w.t.Helper()
	m := w.next(5 * time.Second)
	if m["type"] != typ {
		w.t.Fatalf("got frame %v, want type %q", m, typ)
	}
	return m
}

// quiet asserts no frame arrives before a ping round trip completes: the
// engine handles a connection's frames in order, so anything it meant to
// send before the pong arrives first.
//
// functionregistered, the engine's ack of a registration to a worker that
// speaks observe.v1, is skipped: tests of observe read it themselves.
func (w *rawWorker) quiet() {
	w.t.Helper()
	w.send(`{"type":"ping"}`)
	for {
		m := w.next(5 * time.Second)
		if m["type"] == "functionregistered" {
			continue
		}
		if m["type"] != "pong" {
			w.t.Fatalf("unexpected frame %v (wanted only pong)", m)
		}
		return
	}
}

// closed waits for the socket to be closed by the engine and returns the
// close status.
func (w *rawWorker) closed(timeout time.Duration) websocket.StatusCode {
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

// call invokes a function through the engine and returns the result frame.
func (w *rawWorker) call(fn string, data any, id string) map[string]any {
	w.t.Helper()
	w.send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": fn, "data": data})
	return w.expect("invocationresult")
}

// register registers a function and waits until the engine lists it.
func (w *rawWorker) register(fn string) {
	w.t.Helper()
	w.send(map[string]any{"type": "registerfunction", "id": fn})
	w.quiet() // frames are handled in order: the registration is done
}

// serveOnce answers the next invokefunction with result (or error).
func (w *rawWorker) serveOnce(result any, errBody map[string]any) map[string]any {
	w.t.Helper()
	inv := w.expect("invokefunction")
	res := map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": inv["function_id"]}
	if errBody != nil {
		res["error"] = errBody
	} else {
		res["result"] = result
	}
	w.send(res)
	return inv
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// newServer serves eng on a loopback server closed at cleanup, without
// shutting the engine down (the test does that).
func newServer(t *testing.T, eng *engine.Engine) string {
	srv := httptest.NewServer(eng.Handler())
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

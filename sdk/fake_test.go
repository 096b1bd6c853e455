package sdk

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/protocol"
)

// fakeEngine is a minimal engine for unit tests: it accepts worker sockets,
// sends workerregistered, and hands every decoded inbound message to the
// test, which answers by hand.
type fakeEngine struct {
	t   *testing.T
	srv *httptest.Server
	wg  sync.WaitGroup // connection handlers

	reject   atomic.Int32 // HTTP status for upgrades; 0 accepts
	rejected atomic.Int32 // upgrades rejected so far
	silent   atomic.Bool  // do not send workerregistered
	noPong   atomic.Int32 // connections (by accept order, from 1) that ignore pings
	accepted atomic.Int32

	headers chan http.Header // upgrade request headers, cap 16
	conns   chan *fakeConn   // accepted connections, cap 64

	mu      sync.Mutex
	closing bool
	live    []*fakeConn
}

type fakeConn struct {
	ws       *websocket.Conn
	id       string
	token    string
	msgs     chan protocol.Message // cap 1024
	otlp     chan []byte           // OTLP telemetry payloads (after the prefix), cap 1024
	done     chan struct{}         // closed when the reader returned
	closeErr error                 // valid after done
}

func newFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	fe := &fakeEngine{
		t:       t,
		headers: make(chan http.Header, 16),
		conns:   make(chan *fakeConn, 64),
	}
	fe.srv = httptest.NewServer(http.HandlerFunc(fe.serve))
	t.Cleanup(fe.close)
	return fe
}

func (fe *fakeEngine) url() string { return "ws" + strings.TrimPrefix(fe.srv.URL, "http") }

func (fe *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	fe.wg.Add(1) // before the upgrade hijacks the connection out of srv.Close's sight
	defer fe.wg.Done()
	if code := fe.reject.Load(); code != 0 {
		fe.rejected.Add(1)
		http.Error(w, "rejected", int(code))
		return
	}
	select {
	case fe.headers <- r.Header.Clone():
	default:
	}
	n := fe.accepted.Add(1)
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OnPingReceived: func(context.Context, []byte) bool { return fe.noPong.Load() != n },
	})
	if err != nil {
		return
	}
	ws.SetReadLimit(64 << 20)
	fc := &fakeConn{
		ws:    ws,
		id:    uuid.NewString(),
		token: uuid.NewString(),
		msgs:  make(chan protocol.Message, 1024),
		otlp:  make(chan []byte, 1024),
		done:  make(chan struct{}),
	}
	fe.mu.Lock()
	if fe.closing {
		fe.mu.Unlock()
		_ = ws.CloseNow()
		return
	}
	fe.live = append(fe.live, fc)
	fe.mu.Unlock()
	if !fe.silent.Load() {
		fc.send(protocol.WorkerRegistered{WorkerID: fc.id, ReattachToken: fc.token})
	}
	select {
	case fe.conns <- fc:
	default:
		fe.t.Errorf("fake engine: too many unclaimed connections")
	}
	// The reader runs in the handler goroutine; it exits when the socket
	// closes (fakeEngine.close closes all of them).
	defer close(fc.done)
	for {
		typ, frame, err := ws.Read(context.Background())
		if err != nil {
			fc.closeErr = err
			return
		}
		if kind, ok := protocol.TelemetryKind(frame); ok && typ == websocket.MessageBinary {
			if kind != protocol.TelemetryTraces {
				fe.t.Errorf("fake engine: unexpected %s telemetry frame", kind)
				continue
			}
			select {
			case fc.otlp <- frame[len(kind):]:
			default:
				fe.t.Errorf("fake engine: too many unread telemetry frames")
			}
			continue
		}
		m, err := protocol.Decode(frame)
		if err != nil {
			fe.t.Errorf("fake engine: undecodable frame %q: %v", frame, err)
			continue
		}
		select {
		case fc.msgs <- m:
		default:
			fe.t.Errorf("fake engine: too many unread messages")
		}
	}
}

func (fe *fakeEngine) close() {
	fe.srv.Close()
	fe.mu.Lock()
	fe.closing = true
	live := fe.live
	fe.mu.Unlock()
	for _, fc := range live {
		_ = fc.ws.CloseNow()
	}
	fe.wg.Wait()
}

// conn waits for the next accepted connection.
func (fe *fakeEngine) conn(ctx context.Context, t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-fe.conns:
		return fc
	case <-ctx.Done():
		t.Fatalf("no connection from the worker: %v", ctx.Err())
		return nil
	}
}

func (fc *fakeConn) send(m protocol.Message) {
	frame, err := protocol.Encode(m)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = fc.ws.Write(ctx, websocket.MessageText, frame)
}

// next returns the next message the worker sent on this connection.
func (fc *fakeConn) next(ctx context.Context, t *testing.T) protocol.Message {
	t.Helper()
	select {
	case m := <-fc.msgs:
		return m
	case <-ctx.Done():
		t.Fatalf("no message from the worker: %v", ctx.Err())
		return nil
	}
}

// waitFor skips messages until one of type T for which match is true.
func waitFor[T protocol.Message](ctx context.Context, t *testing.T, fc *fakeConn, match func(T) bool) T {
	t.Helper()
	for {
		if m, ok := fc.next(ctx, t).(T); ok && (match == nil || match(m)) {
			return m
		}
	}
}

// expect asserts that the next message is of type T.
func expect[T protocol.Message](ctx context.Context, t *testing.T, fc *fakeConn) T {
	t.Helper()
	m := fc.next(ctx, t)
	v, ok := m.(T)
	if !ok {
		var want T
		t.Fatalf("next message: got %T %+v, want %T", m, m, want)
	}
	return v
}

// closed waits until the worker closed this connection and returns the
// close status.
func (fc *fakeConn) closed(ctx context.Context, t *testing.T) websocket.StatusCode {
	t.Helper()
	select {
	case <-fc.done:
		return websocket.CloseStatus(fc.closeErr)
	case <-ctx.Done():
		t.Fatalf("connection not closed: %v", ctx.Err())
		return 0
	}
}

// fastOptions make reconnects quick.
func fastOptions() []Option {
	return []Option{WithReconnectBackoff(5*time.Millisecond, 20*time.Millisecond)}
}

// connect starts a worker against fe and consumes its metadata call.
func connect(ctx context.Context, t *testing.T, fe *fakeEngine, opts ...Option) (*Worker, *fakeConn) {
	t.Helper()
	w, err := Connect(ctx, fe.url(), append(fastOptions(), opts...)...)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := w.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	fc := fe.conn(ctx, t)
	inv := expect[protocol.InvokeFunction](ctx, t, fc)
	if inv.FunctionID != registerWorkerFunction {
		t.Fatalf("first message: got invoke of %q, want %q", inv.FunctionID, registerWorkerFunction)
	}
	return w, fc
}

// poll retries cond until it holds or ctx ends.
func poll(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		}
	}
}

// invoke sends an engine-side call and returns its invocation ID.
func (fc *fakeConn) invoke(fn, data string) string {
	id := uuid.NewString()
	fc.send(protocol.InvokeFunction{InvocationID: id, FunctionID: fn, Data: []byte(data)})
	return id
}

// resultFor waits for the result of invocation id.
func resultFor(ctx context.Context, t *testing.T, fc *fakeConn, id string) protocol.InvocationResult {
	t.Helper()
	return waitFor(ctx, t, fc, func(r protocol.InvocationResult) bool { return r.InvocationID == id })
}

type callOut struct {
	data []byte
	err  error
}

// goTrigger runs Trigger in a goroutine the test waits for.
func goTrigger(t *testing.T, w *Worker, ctx context.Context, req TriggerRequest) <-chan callOut {
	ch := make(chan callOut, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(wg.Wait)
	go func() { // exits when Trigger returns (bounded by the test context)
		defer wg.Done()
		data, err := w.Trigger(ctx, req)
		ch <- callOut{data, err}
	}()
	return ch
}

func await(ctx context.Context, t *testing.T, ch <-chan callOut) callOut {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		t.Fatalf("Trigger did not return: %v", ctx.Err())
		return callOut{}
	}
}

func errCode(err error) string {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		return eb.Code
	}
	return fmt.Sprintf("<%v>", err)
}

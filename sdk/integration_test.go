package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
	"github.com/iii-workbench/iii/sdk"
)

// harness is a real engine behind a loopback server whose engine can be
// replaced (restart) and whose TCP connections can be cut (dropConns).
type harness struct {
	t    *testing.T
	opts engine.Options
	srv  *httptest.Server
	cur  atomic.Pointer[engineHandler]

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

type engineHandler struct {
	eng *engine.Engine
	h   http.Handler
}

func newHarness(t *testing.T, opts engine.Options) *harness {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &harness{t: t, opts: opts, conns: make(map[net.Conn]struct{})}
	h.cur.Store(h.newEngine())
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.cur.Load().h.ServeHTTP(w, r)
	}))
	h.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		h.mu.Lock()
		defer h.mu.Unlock()
		switch s {
		case http.StateNew:
			h.conns[c] = struct{}{}
		case http.StateClosed:
			delete(h.conns, c)
		}
	}
	h.srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.cur.Load().eng.Shutdown(ctx); err != nil {
			t.Errorf("engine Shutdown: %v", err)
		}
		h.srv.Close()
	})
	return h
}

func (h *harness) newEngine() *engineHandler {
	eng, err := engine.New(h.opts)
	if err != nil {
		h.t.Fatalf("engine.New: %v", err)
	}
	return &engineHandler{eng: eng, h: eng.Handler()}
}

func (h *harness) url() string { return "ws" + strings.TrimPrefix(h.srv.URL, "http") }

func (h *harness) engine() *engine.Engine { return h.cur.Load().eng }

// restart swaps in a fresh engine and shuts the old one down, which closes
// every worker socket with 1001.
func (h *harness) restart(ctx context.Context) {
	h.t.Helper()
	old := h.cur.Swap(h.newEngine())
	if err := old.eng.Shutdown(ctx); err != nil {
		h.t.Fatalf("engine Shutdown: %v", err)
	}
}

// dropConns cuts every TCP connection without a WebSocket close.
func (h *harness) dropConns() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns {
		_ = c.Close()
	}
}

// poll retries cond until it holds or ctx ends.
func poll(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		}
	}
}

// worker connects a Go worker that reconnects quickly and closes at the
// end of the test.
func worker(ctx context.Context, t *testing.T, h *harness, name string, opts ...sdk.Option) *sdk.Worker {
	t.Helper()
	opts = append([]sdk.Option{sdk.WithName(name), sdk.WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond)}, opts...)
	w, err := sdk.Connect(ctx, h.url(), opts...)
	if err != nil {
		t.Fatalf("Connect %s: %v", name, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := w.Close(cctx); err != nil {
			t.Errorf("Close %s: %v", name, err)
		}
	})
	return w
}

// served reports whether the engine routes id to worker workerID.
func served(eng *engine.Engine, id, workerID string) bool {
	for _, f := range eng.Snapshot().Functions {
		if f.ID == id {
			return slices.Contains(f.WorkerIDs, workerID)
		}
	}
	return false
}

func waitServed(ctx context.Context, t *testing.T, h *harness, w *sdk.Worker, ids ...string) {
	t.Helper()
	for _, id := range ids {
		poll(ctx, t, "function "+id+" registered", func() bool { return served(h.engine(), id, w.ID()) })
	}
}

type amount struct {
	N int `json:"n"`
}

func TestIntegrationCalls(t *testing.T) {
	ctx := testctx.New(t)
	h := newHarness(t, engine.Options{})
	a := worker(ctx, t, h, "caller")
	b := worker(ctx, t, h, "callee")

	voids := make(chan json.RawMessage, 1)
	release := make(chan struct{})
	defer close(release)
	fns := map[string]sdk.Handler{
		"b::double": sdk.Typed(func(_ context.Context, in amount) (amount, error) {
			return amount{N: in.N * 2}, nil
		}),
		"b::declined": func(context.Context, json.RawMessage) (any, error) {
			return nil, sdk.Errorf("payment_declined", "card declined")
		},
		"b::broken": func(context.Context, json.RawMessage) (any, error) {
			return nil, errors.New("database is down")
		},
		"b::record": func(_ context.Context, in json.RawMessage) (any, error) {
			voids <- in
			return nil, nil
		},
		"b::hang": func(ctx context.Context, _ json.RawMessage) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		},
	}
	for id, fn := range fns {
		if err := b.RegisterFunction(id, fn); err != nil {
			t.Fatalf("RegisterFunction %s: %v", id, err)
		}
	}
	waitServed(ctx, t, h, b, "b::double", "b::declined", "b::broken", "b::record", "b::hang")

	t.Run("result", func(t *testing.T) {
		got, err := sdk.Call[amount](ctx, a, "b::double", amount{N: 21})
		if err != nil || got.N != 42 {
			t.Fatalf("Call b::double(21): got %+v, %v; want 42", got, err)
		}
	})

	errTests := []struct {
		fn, wantCode, wantMsg string
	}{
		{"b::declined", "payment_declined", "card declined"},
		{"b::broken", sdk.CodeInvocationFailed, "database is down"},
		{"nobody::home", sdk.CodeFunctionNotFound, "nobody::home"},
	}
	for _, tt := range errTests {
		t.Run(tt.fn, func(t *testing.T) {
			_, err := a.Trigger(ctx, sdk.TriggerRequest{FunctionID: tt.fn, Payload: map[string]any{}})
			var eb *protocol.ErrorBody
			if !errors.As(err, &eb) || eb.Code != tt.wantCode || !strings.Contains(eb.Message, tt.wantMsg) {
				t.Fatalf("Trigger %s: got %v, want code %s with %q", tt.fn, err, tt.wantCode, tt.wantMsg)
			}
		})
	}

	t.Run("void", func(t *testing.T) {
		res, err := a.Trigger(ctx, sdk.TriggerRequest{FunctionID: "b::record", Payload: map[string]int{"n": 7}, Action: sdk.Void()})
		if err != nil || res != nil {
			t.Fatalf("void Trigger: got %s, %v; want nil, nil", res, err)
		}
		select {
		case in := <-voids:
			var got struct {
				N      int    `json:"n"`
				Caller string `json:"_caller_worker_id"`
			}
			if err := json.Unmarshal(in, &got); err != nil || got.N != 7 || got.Caller != a.ID() {
				t.Errorf("void payload %s: want n 7 and _caller_worker_id %s", in, a.ID())
			}
		case <-ctx.Done():
			t.Fatal("void call never reached the handler")
		}
	})

	t.Run("timeout", func(t *testing.T) {
		_, err := a.Trigger(ctx, sdk.TriggerRequest{FunctionID: "b::hang", Timeout: 50 * time.Millisecond})
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != sdk.CodeTimeout || eb.Message != "invocation timed out after 50ms" {
			t.Fatalf("Trigger b::hang: got %v, want TIMEOUT", err)
		}
	})

	t.Run("metadata", func(t *testing.T) {
		poll(ctx, t, "worker metadata", func() bool {
			for _, wi := range h.engine().Snapshot().Workers {
				if wi.ID == b.ID() {
					return wi.Name == "callee" && wi.Runtime == "go" && wi.Version == sdk.Version && wi.PID > 0
				}
			}
			return false
		})
	})
}

func TestIntegrationReconnectReplays(t *testing.T) {
	ctx := testctx.New(t)
	h := newHarness(t, engine.Options{})
	a := worker(ctx, t, h, "caller")
	b := worker(ctx, t, h, "callee")

	bindings := make(chan sdk.TriggerBinding, 4)
	if err := b.RegisterTriggerType("ticker", "ticks", sdk.TriggerProviderFuncs{
		Register: func(_ context.Context, tb sdk.TriggerBinding) error { bindings <- tb; return nil },
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.RegisterFunction("b::ping", sdk.Typed(func(context.Context, any) (string, error) { return "pong", nil })); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RegisterTrigger(sdk.Trigger{Type: "ticker", FunctionID: "b::ping", Config: map[string]int{"every": 1}}); err != nil {
		t.Fatal(err)
	}
	waitServed(ctx, t, h, b, "b::ping")
	<-bindings

	for _, tc := range []struct {
		name string
		cut  func()
	}{
		{"engine restart", func() { h.restart(ctx) }},
		{"dropped TCP (reattach)", h.dropConns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldA, oldB := a.ID(), b.ID()
			tc.cut()
			poll(ctx, t, "workers reconnected", func() bool { return a.ID() != oldA && b.ID() != oldB })
			waitServed(ctx, t, h, b, "b::ping")
			got, err := sdk.Call[string](ctx, a, "b::ping", nil)
			if err != nil || got != "pong" {
				t.Fatalf("call after reconnect: got %q, %v; want pong", got, err)
			}
			select {
			case tb := <-bindings:
				if tb.FunctionID != "b::ping" || string(tb.Config) != `{"every":1}` {
					t.Errorf("binding delivered after reconnect: %+v", tb)
				}
			case <-ctx.Done():
				t.Fatal("trigger binding not delivered again after reconnect")
			}
			poll(ctx, t, "old connections cleaned up", func() bool {
				var ids []string
				for _, wi := range h.engine().Snapshot().Workers {
					if !wi.Internal {
						ids = append(ids, wi.ID)
					}
				}
				return len(ids) == 2 && !slices.Contains(ids, oldA) && !slices.Contains(ids, oldB)
			})
		})
	}
}

// A trigger registered before its type exists is parked, then delivered
// to the provider worker once the type appears; the provider fires it.
func TestIntegrationTriggerProvider(t *testing.T) {
	ctx := testctx.New(t)
	h := newHarness(t, engine.Options{})
	var logs syncBuffer
	consumer := worker(ctx, t, h, "consumer", sdk.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	provider := worker(ctx, t, h, "provider")

	ticks := make(chan json.RawMessage, 1)
	if err := consumer.RegisterFunction("c::on_tick", func(_ context.Context, in json.RawMessage) (any, error) {
		ticks <- in
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	handle, err := consumer.RegisterTrigger(sdk.Trigger{Type: "ticker", FunctionID: "c::on_tick", Config: map[string]string{"every": "1s"}})
	if err != nil {
		t.Fatal(err)
	}
	waitServed(ctx, t, h, consumer, "c::on_tick")

	calls := make(chan string, 8)
	got := make(chan sdk.TriggerBinding, 8)
	err = provider.RegisterTriggerType("ticker", "fires on an interval", sdk.TriggerProviderFuncs{
		Register: func(_ context.Context, b sdk.TriggerBinding) error {
			calls <- "register"
			if strings.Contains(string(b.Config), "bad") {
				return errors.New("unsupported interval")
			}
			got <- b
			return nil
		},
		Unregister: func(_ context.Context, b sdk.TriggerBinding) error {
			calls <- "unregister " + b.FunctionID
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var b sdk.TriggerBinding
	select {
	case b = <-got:
	case <-ctx.Done():
		t.Fatal("provider never received the parked binding")
	}
	if b.ID != handle.ID() || b.Type != "ticker" || b.FunctionID != "c::on_tick" || string(b.Config) != `{"every":"1s"}` {
		t.Errorf("binding = %+v, want trigger %s for c::on_tick", b, handle.ID())
	}
	<-calls

	// The provider fires the binding by calling its function.
	if _, err := provider.Trigger(ctx, sdk.TriggerRequest{FunctionID: b.FunctionID, Payload: map[string]int{"tick": 1}, Action: sdk.Void()}); err != nil {
		t.Fatalf("firing: %v", err)
	}
	select {
	case in := <-ticks:
		if !strings.Contains(string(in), `"tick":1`) {
			t.Errorf("tick payload %s", in)
		}
	case <-ctx.Done():
		t.Fatal("consumer never got the tick")
	}

	// Withdrawing the trigger reaches the provider with its function.
	if err := handle.Unregister(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-calls:
		if c != "unregister c::on_tick" {
			t.Errorf("provider call %q, want unregister c::on_tick", c)
		}
	case <-ctx.Done():
		t.Fatal("provider never told about the removed trigger")
	}

	// A rejected binding is reported back to its owner.
	if _, err := consumer.RegisterTrigger(sdk.Trigger{Type: "ticker", FunctionID: "c::on_tick", Config: map[string]string{"every": "bad"}}); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "rejection reported to the owner", func() bool {
		return strings.Contains(logs.String(), "unsupported interval")
	})
}

func TestIntegrationAuthAndClose(t *testing.T) {
	ctx := testctx.New(t)
	h := newHarness(t, engine.Options{AuthToken: "s3cret"})
	if w, err := sdk.Connect(ctx, h.url()); err == nil {
		_ = w.Close(ctx)
		t.Fatal("Connect without the token succeeded")
	}
	a := worker(ctx, t, h, "caller", sdk.WithBearerToken("s3cret"))
	b, err := sdk.Connect(ctx, h.url(), sdk.WithBearerToken("s3cret"))
	if err != nil {
		t.Fatalf("Connect with the token: %v", err)
	}
	if err := b.RegisterFunction("b::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }); err != nil {
		t.Fatal(err)
	}
	waitServed(ctx, t, h, b, "b::echo")
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	poll(ctx, t, "functions removed after Close", func() bool {
		_, err := a.Trigger(ctx, sdk.TriggerRequest{FunctionID: "b::echo"})
		var eb *protocol.ErrorBody
		return errors.As(err, &eb) && eb.Code == sdk.CodeFunctionNotFound
	})
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestIntegrationResultsWaitForRoom: answers that find the worker's
// outbound queue full wait for room instead of being dropped (their
// callers would wait out the invocation timeout).
func TestIntegrationResultsWaitForRoom(t *testing.T) {
	ctx := testctx.New(t)
	h := newHarness(t, engine.Options{InvocationTimeout: 5 * time.Second})
	const calls = 64
	var started atomic.Int32
	release := make(chan struct{})
	w := worker(ctx, t, h, "bp-worker", sdk.WithQueueLimit(1))
	if err := w.RegisterFunction("bp::burst", func(ctx context.Context, in json.RawMessage) (any, error) {
		started.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return in, nil
	}); err != nil {
		t.Fatal(err)
	}
	waitServed(ctx, t, h, w, "bp::burst")

	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			in := json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))
			out, err := h.engine().Invoke(ctx, engine.Request{FunctionID: "bp::burst", Data: in})
			if err == nil && !bytes.Equal(out, in) {
				err = fmt.Errorf("call %d answered %s", i, out)
			}
			errs <- err
		}()
	}
	// Every handler answers at once, into a queue of one.
	poll(ctx, t, "all handlers running", func() bool { return started.Load() == calls })
	close(release)
	for range calls {
		if err := <-errs; err != nil {
			t.Errorf("call: %v", err)
		}
	}
	if n := w.DroppedResults(); n != 0 {
		t.Errorf("DroppedResults = %d; want 0", n)
	}
}

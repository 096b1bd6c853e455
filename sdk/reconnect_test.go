package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
)

// describe names a message for order checks.
func describe(m protocol.Message) string {
	switch m := m.(type) {
	case protocol.Reattach:
		return "reattach"
	case protocol.RegisterTriggerType:
		return "registertriggertype " + m.ID
	case protocol.RegisterFunction:
		return "registerfunction " + m.ID
	case protocol.RegisterTrigger:
		return "registertrigger " + m.FunctionID
	case protocol.RegisterService:
		return "registerservice " + m.ID
	case protocol.InvokeFunction:
		return "invokefunction " + m.FunctionID
	}
	return string(m.MessageType())
}

// disconnect kills fc and waits until the worker noticed: the fake engine
// rejects every reconnect until the test calls reopen.
func disconnect(ctx context.Context, t *testing.T, fe *fakeEngine, fc *fakeConn) (reopen func()) {
	t.Helper()
	before := fe.rejected.Load()
	fe.reject.Store(http.StatusServiceUnavailable)
	_ = fc.ws.CloseNow()
	poll(ctx, t, "worker retrying", func() bool { return fe.rejected.Load() > before })
	return func() { fe.reject.Store(0) }
}

func TestReconnectReplaysInOrder(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc1 := connect(ctx, t, fe)
	noop := func(context.Context, json.RawMessage) (any, error) { return "pong", nil }

	// Registered out of replay order on purpose.
	if _, err := w.RegisterTrigger(Trigger{Type: "cron", FunctionID: "jobs::b"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"jobs::a", "jobs::b"} {
		if err := w.RegisterFunction(id, noop); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.RegisterService(Service{ID: "jobs"}); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterTriggerType("tick", "ticks", TriggerProviderFuncs{}); err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterFunction("jobs::gone", noop); err != nil {
		t.Fatal(err)
	}
	if err := w.UnregisterFunction("jobs::gone"); err != nil {
		t.Fatal(err)
	}
	waitFor[protocol.UnregisterFunction](ctx, t, fc1, nil)

	reopen := disconnect(ctx, t, fe, fc1)

	// Calls made while disconnected wait in the queue...
	if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "queued::void", Action: Void()}); err != nil {
		t.Fatalf("void Trigger while disconnected: %v", err)
	}
	waiting := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "queued::call", Timeout: 10 * time.Second})
	// ...unless they time out first.
	_, err := w.Trigger(ctx, TriggerRequest{FunctionID: "queued::expired", Timeout: 10 * time.Millisecond})
	if errCode(err) != CodeTimeout {
		t.Fatalf("Trigger timing out while disconnected: got %v, want TIMEOUT", err)
	}
	poll(ctx, t, "call queued", func() bool {
		w.out.mu.Lock()
		defer w.out.mu.Unlock()
		return len(w.out.entries) == 3
	})

	reopen()
	fc2 := fe.conn(ctx, t)
	ra := expect[protocol.Reattach](ctx, t, fc2)
	if ra.PreviousWorkerID != fc1.id || ra.ReattachToken != fc1.token {
		t.Errorf("reattach = %+v, want previous worker %s token %s", ra, fc1.id, fc1.token)
	}
	want := []string{
		"registertriggertype tick",
		"registerfunction jobs::a",
		"registerfunction jobs::b",
		"registertrigger jobs::b",
		"registerservice jobs",
		"invokefunction queued::void",
		"invokefunction queued::call",
		"invokefunction " + registerWorkerFunction,
	}
	var call protocol.InvokeFunction
	for i, w := range want {
		m := fc2.next(ctx, t)
		if got := describe(m); got != w {
			t.Fatalf("message %d after reattach: got %s (%+v), want %s", i+1, got, m, w)
		}
		if inv, ok := m.(protocol.InvokeFunction); ok && inv.FunctionID == "queued::call" {
			call = inv
		}
	}
	poll(ctx, t, "new worker ID", func() bool { return w.ID() == fc2.id })

	fc2.send(protocol.InvocationResult{InvocationID: call.InvocationID, FunctionID: call.FunctionID, Result: []byte(`"done"`)})
	if r := await(ctx, t, waiting); r.err != nil || string(r.data) != `"done"` {
		t.Fatalf("queued call: got %s, %v; want \"done\"", r.data, r.err)
	}

	// Functions work on the new connection.
	id := fc2.invoke("jobs::a", `{}`)
	if r := resultFor(ctx, t, fc2, id); string(r.Result) != `"pong"` {
		t.Errorf("call after reconnect: got %s %v", r.Result, r.Error)
	}
}

func TestReconnectOnPingFailure(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	fe.noPong.Store(1) // the first connection swallows pings
	w, fc1 := connect(ctx, t, fe, WithPingInterval(20*time.Millisecond))
	if err := w.RegisterFunction("f", func(context.Context, json.RawMessage) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	fc2 := fe.conn(ctx, t)
	if ra := expect[protocol.Reattach](ctx, t, fc2); ra.PreviousWorkerID != fc1.id {
		t.Errorf("reattach after ping failure = %+v, want previous worker %s", ra, fc1.id)
	}
	if rf := expect[protocol.RegisterFunction](ctx, t, fc2); rf.ID != "f" {
		t.Errorf("replayed %+v, want function f", rf)
	}
	fc1.closed(ctx, t)
}

func TestQueueFullWhileDisconnected(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe, WithQueueLimit(2))
	disconnect(ctx, t, fe, fc)
	for i := range 2 {
		if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "f", Action: Void()}); err != nil {
			t.Fatalf("queued call %d: %v", i, err)
		}
	}
	if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "f", Action: Void()}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("call past the queue limit: got %v, want ErrQueueFull", err)
	}
	if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "f"}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("call past the queue limit: got %v, want ErrQueueFull", err)
	}
	w.mu.Lock()
	n := len(w.pending)
	w.mu.Unlock()
	if n != 0 {
		t.Errorf("pending calls after refused calls: %d, want 0", n)
	}
}

// Close while the engine is unreachable returns promptly.
func TestCloseWhileDisconnected(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, err := Connect(ctx, fe.url(), WithReconnectBackoff(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	fc := fe.conn(ctx, t)
	_ = fc.ws.CloseNow()
	waiting := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "f"})
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := w.Close(cctx); err != nil {
		t.Fatalf("Close while disconnected: %v", err)
	}
	if r := await(ctx, t, waiting); !errors.Is(r.err, ErrClosed) {
		t.Errorf("call waiting at Close: got %v, want ErrClosed", r.err)
	}
}

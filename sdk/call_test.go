package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
)

func TestTriggerResult(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	ch := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "orders::get", Payload: map[string]string{"id": "o1"}, Metadata: map[string]int{"m": 1}})
	inv := expect[protocol.InvokeFunction](ctx, t, fc)
	if inv.FunctionID != "orders::get" || string(inv.Data) != `{"id":"o1"}` || inv.InvocationID == "" ||
		inv.Action != nil || string(inv.Metadata) != `{"m":1}` {
		t.Fatalf("invokefunction = %+v", inv)
	}
	fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: inv.FunctionID, Result: []byte(`{"total":3}`)})
	if r := await(ctx, t, ch); r.err != nil || string(r.data) != `{"total":3}` {
		t.Fatalf("Trigger: got %s, %v; want {\"total\":3}", r.data, r.err)
	}
}

func TestTriggerError(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	ch := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "nope"})
	inv := expect[protocol.InvokeFunction](ctx, t, fc)
	if string(inv.Data) != "null" {
		t.Errorf("nil payload sent as %s, want null", inv.Data)
	}
	fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: "nope",
		Result: []byte(`"ignored"`), Error: &protocol.ErrorBody{Code: "function_not_found", Message: "Function nope not found"}})
	r := await(ctx, t, ch)
	var eb *protocol.ErrorBody
	if !errors.As(r.err, &eb) || eb.Code != "function_not_found" || eb.Message != "Function nope not found" || r.data != nil {
		t.Fatalf("Trigger: got %s, %v; want a function_not_found ErrorBody", r.data, r.err)
	}
}

func TestTriggerTimeout(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe, WithInvocationTimeout(40*time.Millisecond))

	tests := []struct {
		timeout time.Duration
		wantMsg string
	}{
		{0, "invocation timed out after 40ms"}, // worker default
		{25 * time.Millisecond, "invocation timed out after 25ms"},
	}
	for _, tt := range tests {
		_, err := w.Trigger(ctx, TriggerRequest{FunctionID: "slow", Timeout: tt.timeout})
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != CodeTimeout || eb.Message != tt.wantMsg {
			t.Fatalf("Trigger with timeout %v: got %v, want TIMEOUT %q", tt.timeout, err, tt.wantMsg)
		}
		// The late result is ignored.
		inv := expect[protocol.InvokeFunction](ctx, t, fc)
		fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: "slow", Result: []byte(`1`)})
	}

	// The worker still works afterwards.
	ch := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "fast", Timeout: 5 * time.Second})
	inv := expect[protocol.InvokeFunction](ctx, t, fc)
	fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: "fast", Result: []byte(`2`)})
	if r := await(ctx, t, ch); r.err != nil || string(r.data) != "2" {
		t.Fatalf("Trigger after timeouts: got %s, %v; want 2", r.data, r.err)
	}
	w.mu.Lock()
	n := len(w.pending)
	w.mu.Unlock()
	if n != 0 {
		t.Errorf("pending calls after everything returned: %d, want 0", n)
	}
}

func TestTriggerContextCancel(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	cctx, cancel := context.WithCancel(ctx)
	ch := goTrigger(t, w, cctx, TriggerRequest{FunctionID: "slow"})
	expect[protocol.InvokeFunction](ctx, t, fc)
	cancel()
	if r := await(ctx, t, ch); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Trigger with cancelled ctx: got %v, want context.Canceled", r.err)
	}
}

func TestTriggerActions(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	data, err := w.Trigger(ctx, TriggerRequest{FunctionID: "notify", Payload: "hi", Action: Void()})
	if err != nil || data != nil {
		t.Fatalf("void Trigger: got %s, %v; want nil, nil", data, err)
	}
	inv := expect[protocol.InvokeFunction](ctx, t, fc)
	if inv.InvocationID != "" || inv.Action == nil || inv.Action.Type != "void" || string(inv.Data) != `"hi"` {
		t.Errorf("void invokefunction = %+v, want no invocation ID and action void", inv)
	}

	ch := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "payment::process", Payload: 1, Action: Enqueue("payments")})
	inv = expect[protocol.InvokeFunction](ctx, t, fc)
	if inv.InvocationID == "" || inv.Action == nil || *inv.Action != (protocol.Action{Type: "enqueue", Queue: "payments"}) {
		t.Fatalf("enqueue invokefunction = %+v, want an invocation ID and action enqueue/payments", inv)
	}
	fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: inv.FunctionID, Result: []byte(`{"messageReceiptId":"r-1"}`)})
	if r := await(ctx, t, ch); r.err != nil || string(r.data) != `{"messageReceiptId":"r-1"}` {
		t.Fatalf("enqueue Trigger: got %s, %v; want the receipt", r.data, r.err)
	}
}

// With telemetry off, a call made from a handler carries the handler's
// trace context unchanged, and no spans are sent. (With it on, see
// TestTracingSpans.)
func TestTriggerPropagatesTrace(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe, WithTelemetry(false))
	err := w.RegisterFunction("outer", func(ctx context.Context, _ json.RawMessage) (any, error) {
		_, err := w.Trigger(ctx, TriggerRequest{FunctionID: "inner", Action: Void()})
		return nil, err
	})
	if err != nil {
		t.Fatalf("RegisterFunction: %v", err)
	}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	fc.send(protocol.InvokeFunction{InvocationID: "9b2f8a1e-3c4d-4e5f-8a6b-7c8d9e0f1a2b", FunctionID: "outer",
		Data: []byte(`{}`), Traceparent: tp, Baggage: "tenant=a"})
	inv := waitFor(ctx, t, fc, func(m protocol.InvokeFunction) bool { return m.FunctionID == "inner" })
	if inv.Traceparent != tp || inv.Baggage != "tenant=a" {
		t.Errorf("nested call trace context: traceparent %q baggage %q, want %q and tenant=a", inv.Traceparent, inv.Baggage, tp)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	fc.closed(ctx, t)
	if n := len(fc.otlp); n != 0 {
		t.Errorf("telemetry off: %d OTLP frames sent, want none", n)
	}
	if st := w.TelemetryStats(); st != (TelemetryStats{}) {
		t.Errorf("telemetry off: stats %+v, want zero", st)
	}
}

func TestCall(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	answer := func(result string) {
		inv := expect[protocol.InvokeFunction](ctx, t, fc)
		fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: inv.FunctionID, Result: []byte(result)})
	}
	type out struct {
		o   order
		err error
	}
	run := func() <-chan out {
		ch := make(chan out, 1)
		var wg sync.WaitGroup
		wg.Add(1)
		t.Cleanup(wg.Wait)
		go func() { // exits when Call returns
			defer wg.Done()
			o, err := Call[order](ctx, w, "orders::get", map[string]string{"id": "o7"})
			ch <- out{o, err}
		}()
		return ch
	}

	ch := run()
	answer(`{"id":"o7","total":9}`)
	if r := <-ch; r.err != nil || r.o != (order{ID: "o7", Total: 9}) {
		t.Errorf("Call: got %+v, %v; want o7/9", r.o, r.err)
	}
	ch = run()
	answer(`"not an order"`)
	if r := <-ch; r.err == nil {
		t.Errorf("Call with an undecodable result: got %+v, want an error", r.o)
	}
}

func TestTriggerMany(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() { // exits when Trigger returns
			defer wg.Done()
			data, err := w.Trigger(ctx, TriggerRequest{FunctionID: "echo", Payload: i})
			if err == nil && string(data) != fmt.Sprint(i) {
				err = fmt.Errorf("call %d: got result %s", i, data)
			}
			errs <- err
		}()
	}
	for range n {
		inv := expect[protocol.InvokeFunction](ctx, t, fc)
		fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: inv.FunctionID, Result: inv.Data})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// A json.RawMessage payload goes out as it is when compact, compacted when
// not, and is refused before anything is sent when it is not JSON.
func TestTriggerRawPayload(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	for _, c := range []struct{ in, want string }{{`{"a":[1,"x"]}`, `{"a":[1,"x"]}`}, {` { "a" : 1 } `, `{"a":1}`}} {
		ch := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "raw::fn", Payload: json.RawMessage(c.in)})
		inv := expect[protocol.InvokeFunction](ctx, t, fc)
		if string(inv.Data) != c.want {
			t.Errorf("payload %s sent as %s, want %s", c.in, inv.Data, c.want)
		}
		fc.send(protocol.InvocationResult{InvocationID: inv.InvocationID, FunctionID: inv.FunctionID})
		if r := await(ctx, t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	_, err := w.Trigger(ctx, TriggerRequest{FunctionID: "raw::fn", Payload: json.RawMessage(`{"a":`)})
	if err == nil || !strings.Contains(err.Error(), "raw::fn") || !strings.Contains(err.Error(), "invalid JSON") {
		t.Fatalf("Trigger with a payload that is not JSON: %v, want an error naming the function and the JSON", err)
	}
}

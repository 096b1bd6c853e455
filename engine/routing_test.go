package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

func TestCrossWorkerCall(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("math::double")

	id := uuid.NewString()
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "math::double",
		"data": map[string]any{"n": 21}, "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	inv := b.Expect("invokefunction")
	if inv["invocation_id"] != id {
		t.Errorf("target got invocation_id %v, want the caller's %s", inv["invocation_id"], id)
	}
	data := inv["data"].(map[string]any)
	if data["_caller_worker_id"] != a.ID || data["n"] != float64(21) {
		t.Errorf("target got data %v, want n=21 and _caller_worker_id=%s", data, a.ID)
	}
	if inv["traceparent"] == nil {
		t.Errorf("traceparent not forwarded: %v", inv)
	}
	b.Send(map[string]any{"type": "invocationresult", "invocation_id": id, "function_id": "math::double", "result": 42})
	res := a.Expect("invocationresult")
	if res["invocation_id"] != id || res["result"] != float64(42) || res["function_id"] != "math::double" {
		t.Errorf("caller got %v, want result 42 for %s", res, id)
	}
}

func TestSameWorkerCall(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a := enginetest.Dial(t, te.URL)
	a.Register("self::echo")
	id := uuid.NewString()
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "self::echo", "data": "hi"})
	inv := a.Expect("invokefunction")
	if inv["data"] != "hi" {
		t.Errorf("non-object payload changed: got %v, want \"hi\"", inv["data"])
	}
	a.Send(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": "self::echo", "result": "hi"})
	if res := a.Expect("invocationresult"); res["result"] != "hi" {
		t.Errorf("got %v, want hi", res)
	}
}

func TestHandlerErrorPassesThrough(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("x::fails")
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "x::fails", "data": nil})
	b.ServeOnce(nil, map[string]any{"code": "invocation_failed", "message": "boom", "stacktrace": "at x.js:1"})
	res := a.Expect("invocationresult")
	e := res["error"].(map[string]any)
	if e["code"] != "invocation_failed" || e["message"] != "boom" || e["stacktrace"] != "at x.js:1" {
		t.Errorf("error not passed through unchanged: %v", e)
	}
}

func TestUnknownFunction(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a := enginetest.Dial(t, te.URL)
	res := a.Call("nope::missing", map[string]any{}, uuid.NewString())
	if enginetest.ErrCode(res) != "function_not_found" {
		t.Fatalf("got %v, want function_not_found", res)
	}
	if msg := res["error"].(map[string]any)["message"]; msg != "Function nope::missing not found" {
		t.Errorf("message %q", msg)
	}
}

func TestFireAndForget(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("log::it")
	cases := []struct {
		name  string
		frame map[string]any
	}{
		{"no invocation_id", map[string]any{"type": "invokefunction", "function_id": "log::it", "data": 1}},
		{"action void with id", map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(),
			"function_id": "log::it", "data": 2, "action": map[string]any{"type": "void"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a.Send(tc.frame)
			inv := b.ServeOnce("done", nil)
			if _, err := uuid.Parse(fmt.Sprint(inv["invocation_id"])); err != nil {
				t.Errorf("target must always get an invocation_id, got %v", inv["invocation_id"])
			}
			a.Quiet() // no invocationresult for the caller
		})
	}
}

func TestDisconnectMidCall(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("slow::op")
	id := uuid.NewString()
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "slow::op", "data": nil})
	b.Expect("invokefunction")
	b.Conn.CloseNow()
	res := a.Expect("invocationresult")
	if enginetest.ErrCode(res) != "invocation_stopped" || res["invocation_id"] != id {
		t.Fatalf("got %v, want invocation_stopped for %s", res, id)
	}
	// The function went away with its only worker.
	if res := a.Call("slow::op", nil, uuid.NewString()); enginetest.ErrCode(res) != "function_not_found" {
		t.Errorf("after disconnect got %v, want function_not_found", res)
	}
}

func TestEngineTimeout(t *testing.T) {
	te := enginetest.New(t, engine.Options{InvocationTimeout: 200 * time.Millisecond})
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("never::answers")
	start := time.Now()
	res := a.Call("never::answers", nil, uuid.NewString())
	if enginetest.ErrCode(res) != protocol.CodeTimeout {
		t.Fatalf("got %v, want code timeout", res)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("timed out after %v, before the 200ms limit", d)
	}
	// A late answer is dropped; the worker keeps working.
	inv := b.Expect("invokefunction")
	b.Send(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": "never::answers", "result": 1})
	b.Quiet()
}

func TestSeveralWorkersServeOneFunction(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	caller := enginetest.Dial(t, te.URL)
	w1, w2 := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	w1.Register("pool::work")
	w2.Register("pool::work")

	// Two calls in flight: least-busy routing gives one to each worker.
	id1, id2 := uuid.NewString(), uuid.NewString()
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": id1, "function_id": "pool::work", "data": 1})
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": id2, "function_id": "pool::work", "data": 2})
	inv1 := w1.Expect("invokefunction")
	inv2 := w2.Expect("invokefunction")
	for _, p := range []struct {
		w   *enginetest.Worker
		inv map[string]any
	}{{w1, inv1}, {w2, inv2}} {
		p.w.Send(map[string]any{"type": "invocationresult", "invocation_id": p.inv["invocation_id"], "function_id": "pool::work", "result": p.inv["data"]})
	}
	got := map[any]bool{}
	for range 2 {
		got[caller.Expect("invocationresult")["invocation_id"]] = true
	}
	if !got[id1] || !got[id2] {
		t.Fatalf("results %v, want both %s and %s", got, id1, id2)
	}

	// One worker leaves: the other keeps serving the id (iii #2041).
	w1.Conn.CloseNow()
	enginetest.WaitFor(t, "w1 gone", func() bool { _, err := te.InFlight(w1.ID); return err != nil })
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "pool::work", "data": 3})
	w2.ServeOnce("still here", nil)
	if res := caller.Expect("invocationresult"); res["result"] != "still here" {
		t.Fatalf("after w1 left got %v", res)
	}
}

func TestDrainingWorkerGetsNoNewCalls(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	caller := enginetest.Dial(t, te.URL)
	old, fresh := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	old.Register("svc::op")
	fresh.Register("svc::op")
	if err := te.SetDraining(old.ID, true); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "svc::op", "data": i})
		fresh.ServeOnce(i, nil)
		caller.Expect("invocationresult")
	}
	old.Quiet() // the draining worker saw none of them
}

func TestUnregisterFunctionOwnership(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	a.Register("own::fn")
	// b did not register it: its unregister must not remove a's.
	b.Send(map[string]any{"type": "unregisterfunction", "id": "own::fn"})
	b.Quiet()
	b.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "own::fn", "data": nil})
	a.ServeOnce("ok", nil)
	b.Expect("invocationresult")
	a.Send(map[string]any{"type": "unregisterfunction", "id": "own::fn"})
	a.Quiet()
	if res := b.Call("own::fn", nil, uuid.NewString()); enginetest.ErrCode(res) != "function_not_found" {
		t.Errorf("after owner unregistered got %v", res)
	}
}

func TestInProcessInvoke(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	w := enginetest.Dial(t, te.URL)
	w.Register("go::greet")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	var got json.RawMessage
	go func() {
		var err error
		got, err = te.Invoke(ctx, engine.Request{FunctionID: "go::greet", Data: json.RawMessage(`{"name":"x"}`)})
		done <- err
	}()
	inv := w.ServeOnce(map[string]any{"hello": "x"}, nil)
	if _, ok := inv["data"].(map[string]any)["_caller_worker_id"]; ok {
		t.Errorf("engine-originated call must not carry _caller_worker_id: %v", inv["data"])
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"hello":"x"}` {
		t.Errorf("got %s", got)
	}
	_, err := te.Invoke(ctx, engine.Request{FunctionID: "no::such"})
	var eb *protocol.ErrorBody
	if !errors.As(err, &eb) || eb.Code != "function_not_found" {
		t.Errorf("got %v, want function_not_found ErrorBody", err)
	}
}

func TestEnqueueWithoutQueueModule(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	a := enginetest.Dial(t, te.URL)
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "x::y",
		"data": nil, "action": map[string]any{"type": "enqueue", "queue": "default"}})
	res := a.Expect("invocationresult")
	if enginetest.ErrCode(res) != "enqueue_error" {
		t.Fatalf("got %v, want enqueue_error", res)
	}
	// An enqueue that names no queue is refused before any queue is asked.
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "x::y",
		"data": nil, "action": map[string]any{"type": "enqueue"}})
	res = a.Expect("invocationresult")
	if msg, _ := res["error"].(map[string]any)["message"].(string); enginetest.ErrCode(res) != "enqueue_error" || !strings.Contains(msg, "queue is empty") {
		t.Fatalf("got %v, want enqueue_error about the empty queue", res)
	}
}

func TestEnqueueHandsOffToQueueFunction(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	got := make(chan json.RawMessage, 1)
	err := te.RegisterFunction("test-queue", engine.Function{ID: engine.QueueEnqueueFunction,
		Handler: func(_ context.Context, c *engine.Call) (json.RawMessage, error) { got <- c.Data; return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	a := enginetest.Dial(t, te.URL)
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "orders::ship",
		"data": map[string]any{"id": 7}, "action": map[string]any{"type": "enqueue", "queue": "payments"}})
	res := a.Expect("invocationresult")
	receipt := res["result"].(map[string]any)["messageReceiptId"]
	var in struct {
		Queue, FunctionID, MessageReceiptID string
	}
	raw := <-got
	var m map[string]any
	json.Unmarshal(raw, &m)
	in.Queue, in.FunctionID, in.MessageReceiptID = m["queue"].(string), m["function_id"].(string), m["messageReceiptId"].(string)
	if in.Queue != "payments" || in.FunctionID != "orders::ship" || in.MessageReceiptID != receipt {
		t.Errorf("queue got %s, caller got receipt %v", raw, receipt)
	}
}

func TestEventsPublished(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	sub := te.Events().Subscribe(256)
	defer sub.Close()
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("ev::fn")
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "ev::fn", "data": nil})
	b.ServeOnce("r", nil)
	a.Expect("invocationresult")
	b.Conn.CloseNow()

	want := []string{"worker.connected", "worker.connected", "function.registered", "invocation.started",
		"invocation.finished", "function.unregistered", "worker.disconnected"}
	var seen []string
	deadline := time.After(5 * time.Second)
	for len(seen) < len(want) {
		select {
		case ev := <-sub.C():
			seen = append(seen, ev.Kind())
			if f, ok := ev.(event.InvocationFinished); ok && (f.Status != event.StatusOK || f.TargetWorkerID != b.ID || f.CallerWorkerID != a.ID) {
				t.Errorf("finished event %+v", f)
			}
		case <-deadline:
			t.Fatalf("events so far %v, want %v", seen, want)
		}
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("events %v, want %v", seen, want)
		}
	}
}

func TestShutdownFailsPendingAndCloses1001(t *testing.T) {
	eng, err := engine.New(engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	te := &enginetest.Engine{Engine: eng, URL: enginetest.Serve(t, eng)}
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("hang::forever")
	py := enginetest.Dial(t, te.URL)
	py.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register",
		"data": map[string]any{"runtime": "python"}, "action": map[string]any{"type": "void"}})
	py.Quiet()
	// A Python SDK socket that has not reported its metadata yet is known
	// by its User-Agent.
	pyUA, _, err := enginetest.DialRaw(t, te.URL, &websocket.DialOptions{HTTPHeader: http.Header{"User-Agent": {"Python/3.11 websockets/17.4"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer pyUA.CloseNow()
	pyUAClosed := make(chan websocket.StatusCode, 1)
	// Exits when the engine closes the socket.
	go func() {
		for {
			if _, _, err := pyUA.Read(context.Background()); err != nil {
				pyUAClosed <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	id := uuid.NewString()
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "hang::forever", "data": nil})
	b.Expect("invokefunction")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- eng.Shutdown(ctx) }()
	res := a.Expect("invocationresult")
	if enginetest.ErrCode(res) != "engine_shutdown" {
		t.Errorf("pending call got %v, want engine_shutdown", res)
	}
	if code := b.Closed(5 * time.Second); code != websocket.StatusGoingAway {
		t.Errorf("close status %v, want 1001", code)
	}
	a.Closed(5 * time.Second)
	// Python iii-sdk workers only reconnect after a close that is not
	// 1000/1001, so they are told the service restarts.
	if code := py.Closed(5 * time.Second); code != websocket.StatusServiceRestart {
		t.Errorf("python worker close status %v, want 1012", code)
	}
	if code := <-pyUAClosed; code != websocket.StatusServiceRestart {
		t.Errorf("python (by User-Agent) close status %v, want 1012", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestTraceContextPropagates(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	sub := te.Events().Subscribe(64)
	defer sub.Close()
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("trace::me")
	const callerTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "trace::me",
		"data": nil, "traceparent": callerTP, "baggage": "user=42,iii.function.id=spoofed"})
	inv := b.ServeOnce(nil, nil)
	tp, _ := inv["traceparent"].(string)
	if len(tp) != 55 || tp[3:35] != callerTP[3:35] || tp[36:52] == callerTP[36:52] {
		t.Fatalf("target traceparent %q: want the caller's trace id and the engine's own span id", tp)
	}
	if bg := inv["baggage"]; bg != "iii.function.id=trace::me,user=42" {
		t.Errorf("target baggage %q", bg)
	}
	a.Expect("invocationresult")
	for {
		select {
		case ev := <-sub.C():
			f, ok := ev.(event.InvocationFinished)
			if !ok || f.FunctionID != "trace::me" {
				continue
			}
			if f.Span.TraceID != callerTP[3:35] || f.Span.ParentSpanID != callerTP[36:52] || f.Span.SpanID != tp[36:52] || f.Trigger != "worker" {
				t.Errorf("span %+v trigger %q", f.Span, f.Trigger)
			}
			// Without a caller traceparent the call starts a new trace.
			a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "trace::me", "data": nil})
			inv := b.ServeOnce(nil, nil)
			if tp, _ := inv["traceparent"].(string); len(tp) != 55 || tp[3:35] == callerTP[3:35] {
				t.Errorf("new trace traceparent %q", tp)
			}
			a.Expect("invocationresult")
			return
		case <-time.After(5 * time.Second):
			t.Fatal("no invocation.finished event")
		}
	}
}

// While nothing records calls, a call to a worker carries the caller's
// context as it came (its baggage naming the target), and a call that had
// none carries none, as with the real iii: no span of the engine's, which
// no one would see, sits between the caller's span and the target's.
func TestTraceContextPassesThroughWhenNothingRecords(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	if te.Events().Active() {
		t.Fatal("the bare engine records calls")
	}
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	b.Register("trace::me")
	const callerTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "trace::me",
		"data": nil, "traceparent": callerTP, "baggage": "user=42,iii.function.id=spoofed"})
	inv := b.ServeOnce(nil, nil)
	if inv["traceparent"] != callerTP || inv["baggage"] != "iii.function.id=trace::me,user=42" {
		t.Errorf("target got traceparent %q baggage %q: want the caller's, the baggage naming the target", inv["traceparent"], inv["baggage"])
	}
	a.Expect("invocationresult")

	a.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "trace::me", "data": nil})
	inv = b.ServeOnce(nil, nil)
	if _, ok := inv["traceparent"]; ok {
		t.Errorf("a call without a trace reached the target with traceparent %q", inv["traceparent"])
	}
	if _, ok := inv["baggage"]; ok {
		t.Errorf("a call without baggage reached the target with baggage %q", inv["baggage"])
	}
	a.Expect("invocationresult")
}

func TestInProcessHandlerCallsContinueTheTrace(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	sub := te.Events().Subscribe(64)
	defer sub.Close()
	te.RegisterFunction("test", engine.Function{ID: "inner::fn",
		Handler: func(context.Context, *engine.Call) (json.RawMessage, error) { return nil, nil }})
	te.RegisterFunction("test", engine.Function{ID: "outer::fn",
		Handler: func(ctx context.Context, _ *engine.Call) (json.RawMessage, error) {
			return te.Invoke(ctx, engine.Request{FunctionID: "inner::fn"})
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := te.Invoke(ctx, engine.Request{FunctionID: "outer::fn"}); err != nil {
		t.Fatal(err)
	}
	spans := map[string]event.SpanIDs{}
	for len(spans) < 2 {
		select {
		case ev := <-sub.C():
			if f, ok := ev.(event.InvocationFinished); ok {
				spans[f.FunctionID] = f.Span
			}
		case <-ctx.Done():
			t.Fatalf("spans so far %v", spans)
		}
	}
	if in, out := spans["inner::fn"], spans["outer::fn"]; in.TraceID != out.TraceID || in.ParentSpanID != out.SpanID || out.ParentSpanID != "" {
		t.Errorf("outer %+v inner %+v: want inner a child of outer, outer a root", out, in)
	}
}

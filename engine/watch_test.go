package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/watch"
	"github.com/iii-workbench/iii/sdk"
)

func sdkWorker(t *testing.T, ctx context.Context, url, name string) *sdk.Worker {
	t.Helper()
	w, err := sdk.Connect(ctx, url, sdk.WithName(name), sdk.WithTelemetry(false))
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	return w
}

// batches collects what engine::events delivers to a function.
type batches struct {
	mu    sync.Mutex
	got   []watch.Batch
	block chan struct{} // while non-nil, deliveries wait on it
}

func (b *batches) handler(ctx context.Context, in json.RawMessage) (any, error) {
	var batch watch.Batch
	if err := json.Unmarshal(in, &batch); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.got = append(b.got, batch)
	block := b.block
	b.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	return nil, nil
}

func (b *batches) events(t *testing.T) []event.Event {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []event.Event
	for _, batch := range b.got {
		for _, env := range batch.Events {
			ev, err := watch.Decode(env)
			if err != nil {
				t.Fatalf("decode %s: %v", env.Kind, err)
			}
			out = append(out, ev)
		}
	}
	return out
}

func (b *batches) dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.got) == 0 {
		return 0
	}
	return b.got[len(b.got)-1].Dropped
}

// subscribe binds fn of w to engine::events.
func subscribe(t *testing.T, w *sdk.Worker, fn string, b *batches, cfg watch.Config) {
	t.Helper()
	if err := w.RegisterFunction(fn, b.handler); err != nil {
		t.Fatal(err)
	}
	if _, err := w.RegisterTrigger(sdk.Trigger{Type: watch.TriggerType, FunctionID: fn, Config: cfg}); err != nil {
		t.Fatal(err)
	}
}

// watching connects a worker named watcher whose watcher::events is
// subscribed to engine::events (batches every 10 ms).
func watching(t *testing.T, ctx context.Context, te *enginetest.Engine) (*sdk.Worker, *batches) {
	t.Helper()
	watcher := sdkWorker(t, ctx, te.URL, "watcher")
	b := &batches{}
	subscribe(t, watcher, "watcher::events", b, watch.Config{BatchMS: 10})
	enginetest.WaitFor(t, "the subscription", func() bool { return len(te.Bindings(watch.TriggerType)) == 1 })
	return watcher, b
}

// snapshot calls engine::snapshot as w.
func snapshot(t *testing.T, ctx context.Context, w *sdk.Worker) watch.Snapshot {
	t.Helper()
	raw, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: watch.FnSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	var snap watch.Snapshot
	if err := json.Unmarshal(raw, &snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestWatchStreamsEvents: a worker bound to engine::events receives the
// engine's events in batches (registrations, calls with payloads), never
// the events of its own deliveries, and engine::snapshot lists what the
// events built.
func TestWatchStreamsEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	te := enginetest.New(t, engine.Options{})
	watcher, b := watching(t, ctx, te)

	svc := sdkWorker(t, ctx, te.URL, "svc")
	if err := svc.RegisterFunction("svc::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, "svc::echo", func() bool { return te.HasFunction("svc::echo") })
	if _, err := watcher.Trigger(ctx, sdk.TriggerRequest{FunctionID: "svc::echo", Payload: map[string]int{"n": 7}}); err != nil {
		t.Fatal(err)
	}
	var finished event.InvocationFinished
	enginetest.WaitFor(t, "svc::echo's events", func() bool {
		for _, ev := range b.events(t) {
			if f, ok := ev.(event.InvocationFinished); ok && f.FunctionID == "svc::echo" {
				finished = f
				return true
			}
		}
		return false
	})
	if !strings.Contains(string(finished.Result), `"n":7`) || finished.Status != event.StatusOK {
		t.Errorf("finished = %+v; want ok with the echoed payload", finished)
	}
	registered := false
	for _, ev := range b.events(t) {
		switch ev := ev.(type) {
		case event.FunctionRegistered:
			registered = registered || ev.FunctionID == "svc::echo"
		case event.InvocationStarted:
			if ev.Trigger == watch.DeliveryKind || ev.FunctionID == "watcher::events" {
				t.Errorf("a delivery's own call was delivered: %+v", ev)
			}
		}
	}
	if !registered {
		t.Error("function.registered of svc::echo was not delivered")
	}

	snap := snapshot(t, ctx, watcher)
	names := map[string]bool{}
	for _, w := range snap.Workers {
		names[w.Name] = true
	}
	if !names["svc"] || !names["watcher"] || len(snap.Triggers) == 0 {
		t.Errorf("snapshot workers %v, %d triggers; want svc and watcher and the binding", names, len(snap.Triggers))
	}

	// The subscription ends with its worker.
	if err := watcher.Close(ctx); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, "the binding to go", func() bool { return len(te.Bindings(watch.TriggerType)) == 0 })
}

// TestWatchNamespaces: what an attached TUI learns of namespaces: the
// worker's event after its declaration names its namespace, and
// engine::snapshot names the namespace of each worker and function.
func TestWatchNamespaces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	te := enginetest.New(t, engine.Options{})
	watcher, b := watching(t, ctx, te)

	declared(t, te.URL, "ledger", "finance", "ledger::post")
	enginetest.WaitFor(t, "ledger's declaration event", func() bool {
		for _, ev := range b.events(t) {
			if u, ok := ev.(event.WorkerUpdated); ok && u.Name == "ledger" && u.Namespace == "finance" {
				return true
			}
		}
		return false
	})

	snap := snapshot(t, ctx, watcher)
	ns := map[string]string{}
	for _, w := range snap.Workers {
		ns["worker "+w.Name] = w.Namespace
	}
	for _, f := range snap.Functions {
		ns["function "+f.ID] = f.Namespace
	}
	want := map[string]string{"worker ledger": "finance", "function ledger::post": "finance",
		"worker watcher": engine.DefaultNamespace, "function watcher::events": engine.DefaultNamespace}
	for k, v := range want {
		if ns[k] != v {
			t.Errorf("snapshot: %s in namespace %q; want %q", k, ns[k], v)
		}
	}
}

// TestWatchDropsCounted: a subscriber that does not keep up loses events,
// counted in the next batch, and the engine is not slowed.
func TestWatchDropsCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	te := enginetest.New(t, engine.Options{})
	watcher := sdkWorker(t, ctx, te.URL, "watcher")
	b := batches{block: make(chan struct{})}
	subscribe(t, watcher, "watcher::events", &b, watch.Config{Buffer: 8, BatchMS: 1})
	enginetest.WaitFor(t, "the subscription", func() bool { return len(te.Bindings(watch.TriggerType)) == 1 })
	svc := sdkWorker(t, ctx, te.URL, "svc")
	if err := svc.RegisterFunction("svc::ok", func(context.Context, json.RawMessage) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, "a blocked delivery", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.got) > 0 })
	for range 100 { // 200 events into a buffer of 8, while the delivery waits
		if _, err := svc.Trigger(ctx, sdk.TriggerRequest{FunctionID: "svc::ok"}); err != nil {
			t.Fatal(err)
		}
	}
	close(b.block)
	b.mu.Lock()
	b.block = nil
	b.mu.Unlock()
	if _, err := svc.Trigger(ctx, sdk.TriggerRequest{FunctionID: "svc::ok"}); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, "a batch counting the drops", func() bool { return b.dropped() >= 100 })
}

// TestBreakpoints holds calls of a real worker's function: continue with
// an edited payload, fail, drop (the caller times out), a timeout while
// held (shown as the call's deadline), and the session's end releasing
// what it held.
func TestBreakpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const timeout = 1500 * time.Millisecond
	te := enginetest.New(t, engine.Options{InvocationTimeout: timeout})
	svc := sdkWorker(t, ctx, te.URL, "svc")
	if err := svc.RegisterFunction("svc::echo", func(_ context.Context, in json.RawMessage) (any, error) {
		var v map[string]any
		if err := json.Unmarshal(in, &v); err != nil {
			return nil, err
		}
		return map[string]any{"n": v["n"]}, nil
	}); err != nil {
		t.Fatal(err)
	}
	caller := sdkWorker(t, ctx, te.URL, "caller")
	dbg := sdkWorker(t, ctx, te.URL, "debugger")
	enginetest.WaitFor(t, "svc::echo", func() bool { return te.HasFunction("svc::echo") })

	do := func(w *sdk.Worker, fn string, in any) (json.RawMessage, error) {
		return w.Trigger(ctx, sdk.TriggerRequest{FunctionID: fn, Payload: in, Timeout: 10 * time.Second})
	}
	if _, err := do(dbg, watch.FnBreakSet, watch.BreakArgs{FunctionIDs: []string{"svc::echo"}}); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		res json.RawMessage
		err error
	}
	call := func(n int) chan answer {
		ch := make(chan answer, 1)
		// Ends with the call (at the latest at the engine's timeout).
		go func() {
			res, err := do(caller, "svc::echo", map[string]int{"n": n})
			ch <- answer{res, err}
		}()
		return ch
	}
	heldCall := func() watch.HeldCall {
		t.Helper()
		var held watch.HeldCall
		enginetest.WaitFor(t, "a held call", func() bool {
			raw, err := do(dbg, watch.FnBreakList, nil)
			if err != nil {
				t.Fatal(err)
			}
			var l watch.BreakList
			if err := json.Unmarshal(raw, &l); err != nil {
				t.Fatal(err)
			}
			if len(l.Held) == 0 {
				return false
			}
			held = l.Held[0]
			return true
		})
		return held
	}
	release := func(r watch.Release) {
		t.Helper()
		if _, err := do(dbg, watch.FnBreakRelease, r); err != nil {
			t.Fatalf("release %+v: %v", r, err)
		}
	}
	wantErr := func(a answer, code string) {
		t.Helper()
		var eb *protocol.ErrorBody
		if !errors.As(a.err, &eb) || eb.Code != code {
			t.Errorf("answer %s, %v; want error %s", a.res, a.err, code)
		}
	}

	// Continue with an edited payload.
	ch := call(1)
	h := heldCall()
	if !strings.Contains(string(h.Data), `"n":1`) || h.Deadline.Sub(h.HeldAt) != timeout {
		t.Errorf("held %+v; want payload n=1 and the deadline %v after it was held", h, timeout)
	}
	release(watch.Release{HoldID: h.HoldID, Data: json.RawMessage(`{"n":2}`)})
	if a := <-ch; a.err != nil || string(a.res) != `{"n":2}` {
		t.Errorf("continued with n=2: %s, %v", a.res, a.err)
	}

	// Fail: the caller gets the error, the event stream the failed call.
	sub := te.Events().Subscribe(1024)
	defer sub.Close()
	ch = call(3)
	release(watch.Release{HoldID: heldCall().HoldID, Action: watch.ActionFail, Error: "nope"})
	wantErr(<-ch, engine.CodeBreakpointFailed)
	for ended := false; !ended; {
		select {
		case ev := <-sub.C():
			if f, ok := ev.(event.InvocationFinished); ok && f.FunctionID == "svc::echo" {
				ended = true
				if f.ErrorCode != engine.CodeBreakpointFailed || f.Status != event.StatusError || f.Trigger != engine.TriggerKindWorker {
					t.Errorf("the failed held call's event: %+v", f)
				}
			}
		case <-ctx.Done():
			t.Fatal("no invocation.finished for the failed held call")
		}
	}

	// Drop: the caller gets the engine's timeout.
	ch = call(4)
	release(watch.Release{HoldID: heldCall().HoldID, Action: watch.ActionDrop})
	wantErr(<-ch, engine.CodeTimeout)

	// Nobody decides: the deadline that kept running ends it.
	start := time.Now()
	ch = call(5)
	heldCall()
	wantErr(<-ch, engine.CodeTimeout)
	if d := time.Since(start); d < timeout {
		t.Errorf("held call timed out after %v; want its deadline of %v", d, timeout)
	}
	if _, err := do(dbg, watch.FnBreakRelease, watch.Release{HoldID: h.HoldID}); err == nil {
		t.Error("releasing a call no longer held succeeded")
	}

	// The session ends: its breakpoints go, the held call continues.
	ch = call(6)
	heldCall()
	if err := dbg.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if a := <-ch; a.err != nil || string(a.res) != `{"n":6}` {
		t.Errorf("after the session ended: %s, %v; want the call delivered unchanged", a.res, a.err)
	}
	if a := <-call(7); a.err != nil {
		t.Errorf("a call after the session ended: %v; want it not held", a.err)
	}
}

// TestSnapshotIsOneCopy: engine::snapshot copies the registries once, so
// a function a worker serves is listed under that worker in the same
// snapshot, however fast registrations change.
func TestSnapshotIsOneCopy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	te := enginetest.New(t, engine.Options{})
	w := enginetest.Dial(t, te.URL)
	reg := []byte(`{"type":"registerfunction","id":"churn::f"}`)
	unreg := []byte(`{"type":"unregisterfunction","id":"churn::f"}`)
	churn, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { // ends with stop
		for {
			for _, b := range [][]byte{reg, unreg} {
				if err := w.Conn.Write(churn, websocket.MessageText, b); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	defer func() {
		stop()
		<-done
	}()
	reader := sdkWorker(t, ctx, te.URL, "reader")
	listed := 0
	for range 100 {
		snap := snapshot(t, ctx, reader)
		inFunctions, underWorker := false, false
		for _, f := range snap.Functions {
			inFunctions = inFunctions || f.ID == "churn::f"
		}
		for _, wk := range snap.Workers {
			underWorker = underWorker || wk.ID == w.ID && slices.Contains(wk.Functions, "churn::f")
		}
		if inFunctions != underWorker {
			t.Fatalf("snapshot lists churn::f in functions: %v, under its worker: %v", inFunctions, underWorker)
		}
		if inFunctions {
			listed++
		}
	}
	if listed == 0 {
		t.Errorf("churn::f was in none of the snapshots")
	}
}

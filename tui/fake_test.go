package tui

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// fakeSource is a Source with scripted answers.
type fakeSource struct {
	info Info

	mu       sync.Mutex
	snap     Snapshot
	subs     []*fakeSub
	invokes  []string // "fn data"
	restarts []string
	controls []string // "fn data"
	// answers by function id; a missing function answers function_not_found
	answers map[string]func(json.RawMessage) (json.RawMessage, error)
}

type fakeSub struct {
	ch      chan event.Event
	dropped atomic.Uint64
	closed  atomic.Bool
}

func (s *fakeSub) C() <-chan event.Event { return s.ch }
func (s *fakeSub) Dropped() uint64       { return s.dropped.Load() }
func (s *fakeSub) Close()                { s.closed.Store(true) }

func newFakeSource() *fakeSource {
	return &fakeSource{
		info: Info{URL: "ws://127.0.0.1:49134", Redis: "embedded",
			Endpoints: []Endpoint{{"http", "127.0.0.1:3111"}, {"stream", "127.0.0.1:3112"}}},
		answers: map[string]func(json.RawMessage) (json.RawMessage, error){},
	}
}

func (f *fakeSource) Info() Info { return f.info }

func (f *fakeSource) Subscribe(buffer int) Subscription {
	s := &fakeSub{ch: make(chan event.Event, buffer)}
	f.mu.Lock()
	f.subs = append(f.subs, s)
	f.mu.Unlock()
	return s
}

func (f *fakeSource) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSource) setSnapshot(s Snapshot) {
	f.mu.Lock()
	f.snap = s
	f.mu.Unlock()
}

func (f *fakeSource) publish(evs ...event.Event) {
	f.mu.Lock()
	subs := f.subs
	f.mu.Unlock()
	for _, s := range subs {
		for _, ev := range evs {
			select {
			case s.ch <- ev:
			default:
				s.dropped.Add(1)
			}
		}
	}
}

func (f *fakeSource) call(fn string, data json.RawMessage) (json.RawMessage, error) {
	f.mu.Lock()
	a := f.answers[fn]
	f.mu.Unlock()
	if a == nil {
		return nil, &protocol.ErrorBody{Code: "function_not_found", Message: "function " + fn + " not found"}
	}
	return a(data)
}

func (f *fakeSource) Invoke(_ context.Context, fn string, data json.RawMessage) (json.RawMessage, error) {
	f.mu.Lock()
	f.invokes = append(f.invokes, fn+" "+string(data))
	f.mu.Unlock()
	return f.call(fn, data)
}

func (f *fakeSource) Query(_ context.Context, fn string, data json.RawMessage) (json.RawMessage, error) {
	return f.call(fn, data)
}

func (f *fakeSource) Control(_ context.Context, fn string, data json.RawMessage) (json.RawMessage, error) {
	f.mu.Lock()
	f.controls = append(f.controls, fn+" "+string(data))
	f.mu.Unlock()
	return f.call(fn, data)
}

func (f *fakeSource) Restart(_ context.Context, worker string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts = append(f.restarts, worker)
	return nil
}

// t0 is the fixed clock of the tests.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func fixedNow() time.Time { return t0 }

// fixture is a small, deterministic engine: two SDK workers, a crashed
// exec worker, the in-process HTTP worker, functions, triggers, calls,
// logs.
func fixture() (Snapshot, []event.Event) {
	snap := Snapshot{
		Workers: []Worker{
			{ID: "w-orders-0001", Name: "orders", Runtime: "node", Version: "0.11.0", PID: 4242, Status: "connected", ConnectedAt: t0.Add(-3*time.Minute - 12*time.Second), Functions: []string{"orders::create", "orders::get"}},
			{ID: "w-billing-0002", Name: "billing", Runtime: "go", Version: "0.1.0", PID: 4343, Status: "connected", ConnectedAt: t0.Add(-75 * time.Second), Functions: []string{"billing::charge"}},
			{ID: "w-watcher-0003", Name: "watcher", Runtime: "python", Version: "0.25.0", PID: 4444, Status: "connected", ConnectedAt: t0.Add(-40 * time.Second), Functions: []string{"watch::audit"}, Namespace: "compliance"},
			{Name: "iii-http", Runtime: "engine", Status: "available", Internal: true, Functions: []string{"http::health"}},
		},
		Functions: []Function{
			{ID: "billing::charge", Workers: []string{"billing"}, WorkerIDs: []string{"w-billing-0002"}},
			{ID: "http::health", Workers: []string{"iii-http"}, Internal: true},
			{ID: "orders::create", Workers: []string{"orders"}, WorkerIDs: []string{"w-orders-0001"}},
			{ID: "orders::get", Workers: []string{"orders"}, WorkerIDs: []string{"w-orders-0001"}},
			{ID: "watch::audit", Workers: []string{"watcher"}, WorkerIDs: []string{"w-watcher-0003"}, Namespace: "compliance"},
		},
		Triggers: []Trigger{
			{ID: "t-1", Type: "http", FunctionID: "orders::create", Worker: "orders", Config: json.RawMessage(`{"api_path":"/orders","http_method":"POST"}`), Active: true},
			{ID: "t-2", Type: "cron", FunctionID: "billing::charge", Worker: "billing", Config: json.RawMessage(`{"expression":"0 0 3 * * * *"}`), Active: true},
			{ID: "t-3", Type: "queue", FunctionID: "orders::get", Config: json.RawMessage(`{"topic":"lookups"}`), Active: false},
		},
		Observers: []Observer{
			{ID: "obs-1", Source: "orders::create", Target: "watch::audit", State: "active", Fires: 12, Owner: "w-watcher-0003"},
			{ID: "obs-2", Source: "billing::charge", Target: "alerts::page", State: "suspended", Reason: "TARGET_GONE: alerts::page is not registered", Dropped: 3},
		},
		Processes: []Process{
			{Worker: "orders", Status: "running", PID: 4242, Restarts: 1, Since: t0.Add(-3 * time.Minute)},
			{Worker: "mailer", Status: "crashed", PID: 0, Restarts: 3, ExitCode: 2, Error: "exited with code 2",
				LastLines: []string{"Traceback (most recent call last):", "ModuleNotFoundError: No module named 'smtplib2'"}},
		},
	}
	var evs []event.Event
	call := func(n int, fn, caller, target, trigger, status string, d time.Duration, data, result string) {
		id := fmt.Sprintf("inv-%04d", n)
		at := t0.Add(-time.Duration(10-n) * 100 * time.Millisecond)
		span := event.SpanIDs{TraceID: "trace-a", SpanID: fmt.Sprintf("span-%02d", n)}
		if n > 1 {
			span.ParentSpanID = "span-01"
		}
		evs = append(evs,
			event.InvocationStarted{InvocationID: id, FunctionID: fn, CallerWorkerID: caller, TargetWorkerID: target,
				Trigger: trigger, Data: json.RawMessage(data), Span: span, At: at.Add(-d)},
			event.InvocationFinished{InvocationID: id, FunctionID: fn, CallerWorkerID: caller, TargetWorkerID: target,
				Worker:  map[string]string{"w-orders-0001": "orders", "w-billing-0002": "billing", "": "iii-http"}[target],
				Trigger: trigger, Span: span, Status: status, Result: json.RawMessage(result), Duration: d, At: at,
				ErrorCode:    map[string]string{"error": "card_declined"}[status],
				ErrorMessage: map[string]string{"error": "insufficient funds"}[status]})
	}
	call(1, "orders::create", "", "w-orders-0001", "http", "ok", 12300*time.Microsecond, `{"sku":"A-1","qty":2}`, `{"order_id":"o-1","total":40}`)
	// obs-1's activation for orders::create (inv-0001): after it, in its
	// trace, in the tail before the calls below.
	actAt := t0.Add(-880 * time.Millisecond)
	actSpan := event.SpanIDs{TraceID: "trace-a", SpanID: "span-06", ParentSpanID: "span-01"}
	evs = append(evs,
		event.ObserverActivated{ObserverID: "obs-1", ActivationID: "act-1", SourceFunction: "orders::create",
			TargetFunction: "watch::audit", ObservedInvocationID: "inv-0001", InvocationID: "inv-0006", At: actAt.Add(-1500 * time.Microsecond)},
		event.InvocationStarted{InvocationID: "inv-0006", FunctionID: "watch::audit", TargetWorkerID: "w-watcher-0003",
			Trigger: "observe", Data: json.RawMessage(`{"observer_id":"obs-1","function_id":"orders::create"}`), Span: actSpan, At: actAt.Add(-1500 * time.Microsecond)},
		event.InvocationFinished{InvocationID: "inv-0006", FunctionID: "watch::audit", TargetWorkerID: "w-watcher-0003", Worker: "watcher",
			Trigger: "observe", Span: actSpan, Status: "ok", Result: json.RawMessage(`null`), Duration: 1500 * time.Microsecond, At: actAt})
	call(2, "billing::charge", "w-orders-0001", "w-billing-0002", "worker", "ok", 4100*time.Microsecond, `{"amount":40}`, `{"charged":true}`)
	call(3, "billing::charge", "w-orders-0001", "w-billing-0002", "worker", "error", 2*time.Millisecond, `{"amount":9000}`, ``)
	call(4, "orders::get", "", "w-orders-0001", "engine", "ok", 850*time.Microsecond, `{"order_id":"o-1"}`, `{"order_id":"o-1","status":"paid"}`)
	call(5, "http::health", "", "", "http", "ok", 90*time.Microsecond, `null`, `{"ok":true}`)
	evs = append(evs,
		event.LogLine{Worker: "orders", PID: 4242, Stream: "stdout", Line: "listening on 49134", At: t0.Add(-2 * time.Minute)},
		event.LogLine{Worker: "mailer", Stream: "stderr", Line: "ModuleNotFoundError: No module named 'smtplib2'", At: t0.Add(-90 * time.Second)},
		event.LogLine{Worker: "billing", PID: 4343, Stream: "stdout", Line: "charged 40", At: t0.Add(-800 * time.Millisecond)},
		event.BreakpointsChanged{FunctionIDs: []string{"billing::charge"}, At: t0.Add(-time.Second)},
		event.CallHeld{HoldID: "hold-1", InvocationID: "inv-0099", FunctionID: "billing::charge", CallerWorkerID: "w-orders-0001",
			Trigger: "worker", Data: json.RawMessage(`{"amount":40,"_caller_worker_id":"w-orders-0001"}`),
			Deadline: t0.Add(25 * time.Second), At: t0.Add(-5 * time.Second)},
	)
	return snap, evs
}

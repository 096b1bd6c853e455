package observability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

func logs(t *testing.T, ctx context.Context, eng *engine.Engine, filter map[string]any) logList {
	t.Helper()
	var out logList
	call(t, ctx, eng, engine.Request{FunctionID: "engine::logs::list", Data: data(filter)}, &out)
	return out
}

func TestLogFunctions(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()

	levels := []struct {
		level    string
		severity int32
		text     string
	}{
		{"info", 9, "INFO"}, {"warn", 13, "WARN"}, {"error", 17, "ERROR"}, {"debug", 5, "DEBUG"}, {"trace", 1, "TRACE"},
	}
	for _, lv := range levels {
		call(t, ctx, eng, engine.Request{FunctionID: "engine::log::" + lv.level, Data: data(map[string]any{
			"message": "msg " + lv.level, "data": map[string]any{"n": 1}, "service_name": "svc",
			"trace_id": "AAAABBBBCCCCDDDDEEEEFFFF00001111", "span_id": "0000111122223333"})}, nil)
	}
	for _, lv := range levels {
		l := logs(t, ctx, eng, map[string]any{"search": "msg " + lv.level})
		if l.Total != 1 {
			t.Fatalf("%s: %d records", lv.level, l.Total)
		}
		r := l.Logs[0]
		if r.SeverityNumber != lv.severity || r.SeverityText != lv.text || r.Body != "msg "+lv.level ||
			r.ServiceName != "svc" || r.Source != "function" || r.Attributes["n"] != float64(1) ||
			r.TraceID != "aaaabbbbccccddddeeeeffff00001111" || r.SpanID != "0000111122223333" {
			t.Errorf("engine::log::%s stored %+v; want severity %d %s, service svc, data n=1, the given ids", lv.level, r, lv.severity, lv.text)
		}
	}
	filters := []struct {
		filter map[string]any
		want   int
	}{
		{map[string]any{"level": "error"}, 1},
		{map[string]any{"level": "WARN"}, 1},
		{map[string]any{"severity_min": 13}, 2},
		{map[string]any{"service_name": "svc"}, 5},
		{map[string]any{"trace_id": "aaaabbbbccccddddeeeeffff00001111"}, 5},
		{map[string]any{"search": "MSG"}, 5},
		{map[string]any{"since": time.Now().Add(time.Hour).UnixMilli()}, 0},
		{map[string]any{"worker": "nobody"}, 0},
	}
	for _, f := range filters {
		if got := logs(t, ctx, eng, f.filter).Total; got != f.want {
			t.Errorf("logs::list %v: %d records, want %d", f.filter, got, f.want)
		}
	}
	if got := logs(t, ctx, eng, map[string]any{"limit": 2}); len(got.Logs) != 2 || got.Total != 5 || got.Logs[0].Body != "msg trace" {
		t.Errorf("limit 2: %d records (total %d), first %q; want the 2 newest of 5, msg trace first", len(got.Logs), got.Total, got.Logs[0].Body)
	}

	_, err := eng.Invoke(ctx, engine.Request{FunctionID: "engine::log::info", Data: data(map[string]any{"data": 1})})
	var eb *protocol.ErrorBody
	if !errors.As(err, &eb) || eb.Code != engine.CodeDeserialization {
		t.Errorf("engine::log::info without message: %v, want %s", err, engine.CodeDeserialization)
	}

	// A worker logging from inside a call: its name and the call's trace.
	w := enginetest.Connect(t, ctx, s.URL(), "log-worker")
	w.RegisterFunction("lg::fn", func(ctx context.Context, _ json.RawMessage) (any, error) {
		_, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "engine::log::warn", Payload: map[string]any{"message": "from a handler"}})
		return nil, err
	})
	waitFunctions(t, ctx, eng, "lg::fn")
	const traceID = "99998888777766665555444433332222"
	call(t, ctx, eng, engine.Request{FunctionID: "lg::fn", Traceparent: "00-" + traceID + "-9999888877776666-01"}, nil)
	l := logs(t, ctx, eng, map[string]any{"worker": "log-worker"})
	if l.Total != 1 || l.Logs[0].Body != "from a handler" || l.Logs[0].TraceID != traceID || l.Logs[0].ServiceName != "log-worker" {
		t.Errorf("worker's log: %+v; want one record of log-worker in trace %s", l.Logs, traceID)
	}

	// Output lines of managed workers (exec module events).
	eng.Events().Publish(event.LogLine{Worker: "my-exec", PID: 42, Stream: "stderr", Line: "listening on :8080", At: time.Now()})
	waitFor(t, ctx, "the output line", func() (bool, string) {
		l := logs(t, ctx, eng, map[string]any{"worker": "my-exec"})
		return l.Total == 1 && l.Logs[0].Body == "listening on :8080" && l.Logs[0].Source == "stderr", fmt.Sprint(l.Logs)
	})

	var cleared struct{ Cleared int }
	call(t, ctx, eng, engine.Request{FunctionID: "engine::logs::clear"}, &cleared)
	if got := logs(t, ctx, eng, nil).Total; got != 0 || cleared.Cleared != 7 {
		t.Errorf("after clear: %d records (cleared %d), want 0 (7)", got, cleared.Cleared)
	}
}

// recorder collects what a worker function received.
type recorder struct {
	mu   sync.Mutex
	got  []map[string]any
	note chan struct{}
}

func newRecorder() *recorder { return &recorder{note: make(chan struct{}, 1)} }

func (r *recorder) handler(_ context.Context, in json.RawMessage) (any, error) {
	var m map[string]any
	json.Unmarshal(in, &m)
	r.mu.Lock()
	r.got = append(r.got, m)
	r.mu.Unlock()
	select {
	case r.note <- struct{}{}:
	default:
	}
	return nil, nil
}

// wait waits until a received payload has key == value and returns all
// received so far.
func (r *recorder) wait(t *testing.T, ctx context.Context, key string, value any) []map[string]any {
	t.Helper()
	for {
		r.mu.Lock()
		got := append([]map[string]any(nil), r.got...)
		r.mu.Unlock()
		for _, m := range got {
			if m[key] == value {
				return got
			}
		}
		select {
		case <-r.note:
		case <-ctx.Done():
			t.Fatalf("no delivery with %s=%v; got %v", key, value, got)
		}
	}
}

func TestLogTrigger(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	w := enginetest.Connect(t, ctx, s.URL(), "log-trigger-worker")
	rec := newRecorder()
	w.RegisterFunction("lt::on", rec.handler)
	waitFunctions(t, ctx, eng, "lt::on")
	if _, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: "log", FunctionID: "lt::on", Config: json.RawMessage(`{"level":"loud"}`)}); err == nil {
		t.Error("log trigger with level loud accepted")
	}
	if _, err := w.RegisterTrigger(sdk.Trigger{Type: "log", FunctionID: "lt::on", Config: map[string]any{"level": "error"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the binding", func() (bool, string) { return len(eng.Bindings("log")) == 1, "" })

	for _, m := range []struct{ fn, msg string }{
		{"engine::log::info", "not for the trigger"},
		{"engine::log::error", "first error"},
		{"engine::log::error", "second error"},
	} {
		call(t, ctx, eng, engine.Request{FunctionID: m.fn, Data: data(map[string]any{"message": m.msg})}, nil)
	}
	got := rec.wait(t, ctx, "body", "second error")
	rec.wait(t, ctx, "body", "first error")
	for _, m := range got {
		if m["body"] == "not for the trigger" {
			t.Errorf("info record delivered to a level: error trigger: %v", m)
		}
	}
	r := got[0]
	for _, k := range []string{"timestamp_unix_nano", "observed_timestamp_unix_nano", "severity_number", "severity_text",
		"body", "attributes", "trace_id", "span_id", "resource", "service_name", "instrumentation_scope_name", "instrumentation_scope_version"} {
		if _, ok := r[k]; !ok {
			t.Errorf("log trigger payload lacks %q: %v", k, r)
		}
	}
	if r["severity_number"] != float64(17) || r["severity_text"] != "ERROR" {
		t.Errorf("payload severity %v %v", r["severity_number"], r["severity_text"])
	}
}

func TestTraceTrigger(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	w := enginetest.Connect(t, ctx, s.URL(), "trace-trigger-worker")
	all, failed := newRecorder(), newRecorder()
	w.RegisterFunction("tt::all", func(ctx context.Context, in json.RawMessage) (any, error) {
		all.handler(ctx, in)
		// A handler that calls on: its calls' spans must not fire it again.
		_, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "tt::ok"})
		return nil, err
	})
	w.RegisterFunction("tt::failed", failed.handler)
	w.RegisterFunction("tt::ok", func(context.Context, json.RawMessage) (any, error) { return 1, nil })
	w.RegisterFunction("tt::bad", func(context.Context, json.RawMessage) (any, error) { return nil, sdk.Errorf("E_BAD", "bad") })
	waitFunctions(t, ctx, eng, "tt::all", "tt::failed", "tt::ok", "tt::bad")
	w.RegisterTrigger(sdk.Trigger{Type: "trace", FunctionID: "tt::all"})
	w.RegisterTrigger(sdk.Trigger{Type: "trace", FunctionID: "tt::failed", Config: map[string]any{"status": "error", "service_name": "iii"}})
	waitFor(t, ctx, "the bindings", func() (bool, string) { return len(eng.Bindings("trace")) == 2, "" })

	call(t, ctx, eng, engine.Request{FunctionID: "tt::ok", Trigger: "cron"}, nil)
	eng.Invoke(ctx, engine.Request{FunctionID: "tt::bad", Trigger: "cron"})
	gotFailed := failed.wait(t, ctx, "name", "tt::bad")
	all.wait(t, ctx, "name", "tt::bad")
	all.wait(t, ctx, "name", "tt::ok")
	// Each delivery to tt::all calls tt::ok; once both calls' spans are
	// stored, any firing they caused has been dispatched.
	waitFor(t, ctx, "the handlers' own calls", func() (bool, string) {
		n := 0
		for _, sp := range spans(t, ctx, eng, map[string]any{"function_id": "tt::ok"}).Spans {
			if sp.Attributes["iii.trigger"] == "worker" {
				n++
			}
		}
		return n == 2, fmt.Sprint(n, " nested calls")
	})
	call(t, ctx, eng, engine.Request{FunctionID: "tt::ok", Trigger: "http"}, nil) // sentinel
	var gotAll []map[string]any
	for sentinel := false; !sentinel; {
		gotAll = all.wait(t, ctx, "name", "tt::ok")
		for _, m := range gotAll {
			if a, _ := m["attributes"].(map[string]any); a["iii.trigger"] == "http" {
				sentinel = true
			}
		}
		if !sentinel {
			select {
			case <-all.note:
			case <-ctx.Done():
				t.Fatalf("sentinel span not delivered: %v", gotAll)
			}
		}
	}
	// Deliveries are calls too, and so are the calls their handlers make:
	// none of their spans may fire the trigger again. Each delivery is its
	// own call to the worker, so they may arrive in any order.
	var delivered []string
	for _, m := range gotAll {
		a, _ := m["attributes"].(map[string]any)
		delivered = append(delivered, fmt.Sprintf("%v/%v", m["name"], a["iii.trigger"]))
	}
	slices.Sort(delivered)
	if want := "[tt::bad/cron tt::ok/cron tt::ok/http]"; fmt.Sprint(delivered) != want {
		t.Errorf("tt::all got spans %v; want %s (no deliveries of deliveries or of their calls)", delivered, want)
	}
	for _, m := range gotFailed {
		if m["status"] != "error" || m["name"] != "tt::bad" {
			t.Errorf("status: error trigger got %v", m)
		}
	}
	if a := gotFailed[0]["attributes"].(map[string]any); a["error.type"] != "E_BAD" || a["iii.trigger"] != "cron" {
		t.Errorf("failed span attributes %v; want error.type E_BAD, iii.trigger cron", a)
	}
}

func TestBaggageFunctions(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	const bg = "tenant=acme;prop=1,user=j%20doe, iii.function.id=x"
	var got struct {
		Value *string `json:"value"`
	}
	call(t, ctx, eng, engine.Request{FunctionID: "engine::baggage::get", Data: data(map[string]string{"key": "user"}), Baggage: bg}, &got)
	if got.Value == nil || *got.Value != "j doe" {
		t.Errorf("baggage::get user = %v, want j doe", got.Value)
	}
	got.Value = nil
	call(t, ctx, eng, engine.Request{FunctionID: "engine::baggage::get", Data: data(map[string]string{"key": "nope"}), Baggage: bg}, &got)
	if got.Value != nil {
		t.Errorf("baggage::get nope = %q, want null", *got.Value)
	}
	var all struct{ Baggage map[string]string }
	call(t, ctx, eng, engine.Request{FunctionID: "engine::baggage::get_all", Baggage: bg}, &all)
	if want := map[string]string{"tenant": "acme", "user": "j doe", "iii.function.id": "x"}; fmt.Sprint(all.Baggage) != fmt.Sprint(want) {
		t.Errorf("baggage::get_all = %v, want %v", all.Baggage, want)
	}
	var set struct{ Success bool }
	call(t, ctx, eng, engine.Request{FunctionID: "engine::baggage::set", Data: data(map[string]string{"key": "a", "value": "b"})}, &set)
	if !set.Success {
		t.Error("baggage::set: success false")
	}
}

package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/observability"
)

// captureEnv names a directory to save the telemetry frames the Node SDK
// sends (one file per frame, "<n>-<KIND>.json"), to refresh the decoder's
// test fixtures in engine/modules/observability/otlpjson/testdata.
const captureEnv = "COMPAT_CAPTURE_OTLP"

// tee saves every telemetry frame, then hands it on.
type tee struct {
	next engine.TelemetrySink
	dir  string
	n    atomic.Int64
}

func (c *tee) Telemetry(workerID, kind string, payload []byte) {
	name := fmt.Sprintf("%03d-%s.json", c.n.Add(1), kind)
	os.WriteFile(filepath.Join(c.dir, name), payload, 0o644)
	c.next.Telemetry(workerID, kind, payload)
}

// startObservabilityServer runs an engine with the observability module
// (Prometheus on a free port).
func startObservabilityServer(t *testing.T, ctx context.Context) *enginetest.Server {
	t.Helper()
	srv := startServer(t, ctx, "engine: {port: 0}\nmodules:\n  - class: iii-observability\n    config: {metrics_port: 0}\n")
	if dir := os.Getenv(captureEnv); dir != "" {
		m, _ := srv.Modules().Get(config.ModuleObservability)
		srv.Engine().SetTelemetrySink(&tee{next: m.(engine.TelemetrySink), dir: dir})
	}
	return srv
}

// invokeJSON calls a function in-process and decodes the result.
func invokeJSON(t *testing.T, ctx context.Context, eng *engine.Engine, fn string, in any, out any) {
	t.Helper()
	data, _ := json.Marshal(in)
	raw, err := eng.Invoke(ctx, engine.Request{FunctionID: fn, Data: data})
	if err != nil {
		t.Fatalf("%s %s: %v", fn, data, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%s result %s: %v", fn, raw, err)
	}
}

// storedSpan and storedLog are the fields of engine::traces::* and
// engine::logs::list records this test reads.
type storedSpan struct {
	TraceID      string         `json:"trace_id"`
	SpanID       string         `json:"span_id"`
	ParentSpanID string         `json:"parent_span_id"`
	Name         string         `json:"name"`
	ServiceName  string         `json:"service_name"`
	Worker       string         `json:"worker"`
	Source       string         `json:"source"`
	Status       string         `json:"status"`
	Attributes   map[string]any `json:"attributes"`
	Children     []storedSpan   `json:"children"`
}

type storedLog struct {
	SeverityNumber int            `json:"severity_number"`
	SeverityText   string         `json:"severity_text"`
	Body           string         `json:"body"`
	TraceID        string         `json:"trace_id"`
	SpanID         string         `json:"span_id"`
	ServiceName    string         `json:"service_name"`
	Source         string         `json:"source"`
	Attributes     map[string]any `json:"attributes"`
}

// TestNodeTelemetry: a Node iii-sdk worker with OpenTelemetry on (the
// SDK's default) sends its spans, logs and metrics over /otel; they land
// in the observability module's stores. The worker's "execute <fn>" span
// nests under the engine's span of the call, in the caller's trace.
func TestNodeTelemetry(t *testing.T) {
	t.Parallel()
	command(t, node)
	ctx := testContext(t)
	srv := startObservabilityServer(t, ctx)
	eng := srv.Engine()
	w := startWorker(t, node, srv.URL(), "nodeotel")
	w.ready(t, ctx)
	// The SDK reports its name with a void call of its own: wait for it, so
	// the engine span names the worker.
	waitUntil(t, ctx, "worker name "+w.name, func() (bool, string) {
		for _, wi := range eng.Snapshot().Workers {
			if wi.Name == w.name {
				return true, ""
			}
		}
		return false, "not yet"
	})

	const traceID, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	if _, err := eng.Invoke(ctx, engine.Request{FunctionID: w.fn("echo"), Data: json.RawMessage(`{"x":1}`),
		Traceparent: "00-" + traceID + "-" + parent + "-01"}); err != nil {
		t.Fatalf("invoke %s: %v", w.fn("echo"), err)
	}
	logged := w.do(t, ctx, map[string]any{"op": "log", "id": "l1", "level": "warn", "message": "hello from node",
		"data": map[string]any{"order": "o-1"}, "span": "compat-span"}, "logged")
	w.do(t, ctx, map[string]any{"op": "flush_otel", "id": "f1"}, "otel_flushed")

	t.Run("worker span nests under the engine span", func(t *testing.T) {
		var tree struct {
			Roots []storedSpan `json:"roots"`
		}
		waitUntil(t, ctx, "the worker's execute span in the trace", func() (bool, string) {
			invokeJSON(t, ctx, eng, "engine::traces::tree", map[string]string{"trace_id": traceID}, &tree)
			return len(tree.Roots) == 1 && len(tree.Roots[0].Children) == 1, fmt.Sprintf("%+v", tree.Roots)
		})
		root, child := tree.Roots[0], tree.Roots[0].Children[0]
		if root.Source != "engine" || root.Name != w.fn("echo") || root.ParentSpanID != parent || root.Worker != w.name {
			t.Errorf("engine span %+v; want %s served by %s under %s", root, w.fn("echo"), w.name, parent)
		}
		if child.Source != "worker" || child.Name != "execute "+w.fn("echo") || child.ParentSpanID != root.SpanID ||
			child.ServiceName != "iii-node" || child.Status != "ok" || child.Worker != w.name {
			t.Errorf("worker span %+v; want execute %s (service iii-node, worker %s, ok) under %s", child, w.fn("echo"), w.name, root.SpanID)
		}
		if got := child.Attributes["iii.function.id"]; got != w.fn("echo") {
			t.Errorf("worker span baggage attribute iii.function.id = %v, want %s", got, w.fn("echo"))
		}
	})
	t.Run("span sent from a worker's own code", func(t *testing.T) {
		var list struct {
			Spans []storedSpan `json:"spans"`
		}
		waitUntil(t, ctx, "compat-span", func() (bool, string) {
			invokeJSON(t, ctx, eng, "engine::traces::list", map[string]any{"name": "compat-span"}, &list)
			return len(list.Spans) == 1, fmt.Sprint(list.Spans)
		})
		if s := list.Spans[0]; s.TraceID != logged.str("trace_id") || s.SpanID != logged.str("span_id") || s.Source != "worker" {
			t.Errorf("compat-span %+v; want trace %s span %s from the worker", s, logged.str("trace_id"), logged.str("span_id"))
		}
	})
	t.Run("log record", func(t *testing.T) {
		var list struct {
			Logs []storedLog `json:"logs"`
		}
		waitUntil(t, ctx, "the worker's log record", func() (bool, string) {
			invokeJSON(t, ctx, eng, "engine::logs::list", map[string]any{"search": "hello from node"}, &list)
			return len(list.Logs) == 1, fmt.Sprint(list.Logs)
		})
		l := list.Logs[0]
		if l.SeverityNumber != 13 || l.Source != "otlp" || l.ServiceName != "iii-node" ||
			l.TraceID != logged.str("trace_id") || l.SpanID != logged.str("span_id") {
			t.Errorf("log %+v; want WARN (13) from otlp, service iii-node, trace %s span %s",
				l, logged.str("trace_id"), logged.str("span_id"))
		}
		if data, _ := l.Attributes["log.data"].(map[string]any); data["order"] != "o-1" {
			t.Errorf("log attributes %v; want log.data.order = o-1", l.Attributes)
		}
		invokeJSON(t, ctx, eng, "engine::logs::list", map[string]any{"trace_id": logged.str("trace_id"), "level": "warn"}, &list)
		if len(list.Logs) != 1 {
			t.Errorf("logs of trace %s at warn: %d, want 1", logged.str("trace_id"), len(list.Logs))
		}
	})
	t.Run("metrics", func(t *testing.T) {
		var out struct {
			Engine  map[string]any   `json:"engine"`
			Metrics []map[string]any `json:"metrics"`
		}
		waitUntil(t, ctx, "worker metric points", func() (bool, string) {
			invokeJSON(t, ctx, eng, "engine::metrics::list", map[string]any{"service_name": "iii-node"}, &out)
			return len(out.Metrics) > 0, fmt.Sprint(out.Engine)
		})
		if out.Engine["telemetry_frames_malformed"] != float64(0) {
			t.Errorf("malformed frames from the real SDK: %v", out.Engine)
		}
	})
}

// waitUntil polls cond every 20 ms until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("no %s: %v; last state: %s", what, ctx.Err(), state)
		}
	}
}

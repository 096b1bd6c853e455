package sdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/observability"
	"github.com/iii-workbench/iii/engine/testctx"
	"github.com/iii-workbench/iii/sdk"
)

// treeSpan is a node of engine::traces::tree.
type treeSpan struct {
	TraceID      string         `json:"trace_id"`
	SpanID       string         `json:"span_id"`
	ParentSpanID string         `json:"parent_span_id"`
	Name         string         `json:"name"`
	Kind         string         `json:"kind"`
	Source       string         `json:"source"`
	Worker       string         `json:"worker"`
	Status       string         `json:"status"`
	ServiceName  string         `json:"service_name"`
	Attributes   map[string]any `json:"attributes"`
	Children     []treeSpan     `json:"children"`
}

type traceTree struct {
	SpanCount int        `json:"span_count"`
	Roots     []treeSpan `json:"roots"`
}

// waitTree reads engine::traces::tree until the trace holds n spans.
func waitTree(ctx context.Context, t *testing.T, eng *engine.Engine, traceID string, n int) traceTree {
	t.Helper()
	var tree traceTree
	poll(ctx, t, fmt.Sprintf("%d spans in trace %s", n, traceID), func() bool {
		raw, err := eng.Invoke(ctx, engine.Request{FunctionID: "engine::traces::tree",
			Data: json.RawMessage(`{"trace_id":"` + traceID + `"}`)})
		if err != nil {
			t.Fatalf("engine::traces::tree: %v", err)
		}
		tree = traceTree{}
		if err := json.Unmarshal(raw, &tree); err != nil {
			t.Fatalf("engine::traces::tree result %s: %v", raw, err)
		}
		return tree.SpanCount >= n
	})
	return tree
}

// wantSpan is one link of an expected chain.
type wantSpan struct {
	name, source, kind, worker string
}

// checkPath asserts that tree is one chain of spans, root first, each the
// only child of the one before, named as want says.
func checkPath(t *testing.T, tree traceTree, rootParent string, want []wantSpan) {
	t.Helper()
	var got []string
	for _, w := range want {
		got = append(got, w.name)
	}
	if tree.SpanCount != len(want) || len(tree.Roots) != 1 {
		t.Fatalf("%d spans, %d roots; want one chain %q", tree.SpanCount, len(tree.Roots), got)
	}
	n := tree.Roots[0]
	if n.ParentSpanID != rootParent {
		t.Errorf("root %s: parent %q, want %q", n.Name, n.ParentSpanID, rootParent)
	}
	for i, w := range want {
		if n.Name != w.name || n.Source != w.source || n.Kind != w.kind || n.Worker != w.worker || n.Status != "ok" {
			t.Errorf("span %d: %s (%s %s, worker %q, %s); want %s (%s %s, worker %q, ok)",
				i, n.Name, n.Source, n.Kind, n.Worker, n.Status, w.name, w.source, w.kind, w.worker)
		}
		if i+1 == len(want) {
			if len(n.Children) != 0 {
				t.Errorf("last span %s: %d children, want none", n.Name, len(n.Children))
			}
			return
		}
		if len(n.Children) != 1 {
			t.Fatalf("span %s: %d children, want 1 (%s)", n.Name, len(n.Children), want[i+1].name)
		}
		c := n.Children[0]
		if c.ParentSpanID != n.SpanID || c.TraceID != n.TraceID {
			t.Errorf("%s: parent %s in trace %s, want %s in %s", c.Name, c.ParentSpanID, c.TraceID, n.SpanID, n.TraceID)
		}
		n = c
	}
}

// TestIntegrationTracing: a call chain engine → Go worker front → Go
// worker back → an in-process function is one trace in the engine's span
// store: each handler's execute span under the engine's span of its call,
// each call span under the handler that made it, each engine span under
// the call span. With telemetry off only the engine spans remain, still
// one chain.
func TestIntegrationTracing(t *testing.T) {
	ctx := testctx.New(t)
	srv := enginetest.StartModule(t, ctx, "", "OtelModule", "{metrics_port: 0}")
	eng := srv.Engine()
	connect := func(name string, opts ...sdk.Option) *sdk.Worker {
		w, err := sdk.Connect(ctx, srv.URL(), append([]sdk.Option{sdk.WithName(name)}, opts...)...)
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
	// chain registers <prefix>::front on one worker and <prefix>::back on
	// another; front calls back, back calls engine::functions::list.
	chain := func(prefix string, opts ...sdk.Option) (front, back *sdk.Worker) {
		front, back = connect(prefix+"-front", opts...), connect(prefix+"-back", opts...)
		err := back.RegisterFunction(prefix+"::back", func(ctx context.Context, _ json.RawMessage) (any, error) {
			_, err := back.Trigger(ctx, sdk.TriggerRequest{FunctionID: "engine::functions::list"})
			return "back", err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = front.RegisterFunction(prefix+"::front", func(ctx context.Context, _ json.RawMessage) (any, error) {
			return sdk.Call[string](ctx, front, prefix+"::back", nil)
		})
		if err != nil {
			t.Fatal(err)
		}
		poll(ctx, t, prefix+" functions registered", func() bool {
			return served(eng, prefix+"::front", front.ID()) && served(eng, prefix+"::back", back.ID())
		})
		return front, back
	}
	invoke := func(fn, traceID, parent string) {
		t.Helper()
		raw, err := eng.Invoke(ctx, engine.Request{FunctionID: fn, Data: json.RawMessage(`{}`),
			Traceparent: "00-" + traceID + "-" + parent + "-01"})
		if err != nil || string(raw) != `"back"` {
			t.Fatalf("invoke %s: %s %v, want \"back\"", fn, raw, err)
		}
	}

	t.Run("spans", func(t *testing.T) {
		front, back := chain("tr", sdk.WithTelemetry(true))
		const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		invoke("tr::front", traceID, parent)
		want := []wantSpan{
			{"tr::front", "engine", "SERVER", "tr-front"},
			{"execute tr::front", "worker", "SERVER", "tr-front"},
			{"call tr::back", "worker", "CLIENT", "tr-front"},
			{"tr::back", "engine", "SERVER", "tr-back"},
			{"execute tr::back", "worker", "SERVER", "tr-back"},
			{"call engine::functions::list", "worker", "CLIENT", "tr-back"},
			{"engine::functions::list", "engine", "SERVER", engine.BuiltinWorker},
		}
		tree := waitTree(ctx, t, eng, traceID, len(want))
		checkPath(t, tree, parent, want)
		exec := tree.Roots[0].Children[0]
		if exec.ServiceName != sdk.DefaultServiceName || exec.Attributes["iii.function.id"] != "tr::front" ||
			exec.Attributes["iii.invocation.id"] == nil {
			t.Errorf("execute span: service %s, attributes %v; want %s, iii.function.id and iii.invocation.id",
				exec.ServiceName, exec.Attributes, sdk.DefaultServiceName)
		}
		for _, w := range []*sdk.Worker{front, back} {
			poll(ctx, t, "spans counted as sent", func() bool { return w.TelemetryStats().SpansSent >= 2 })
			if st := w.TelemetryStats(); st.SpansDropped != 0 {
				t.Errorf("telemetry stats %+v: want nothing dropped", st)
			}
		}
	})

	t.Run("telemetry off", func(t *testing.T) {
		front, back := chain("off", sdk.WithTelemetry(false))
		const traceID, parent = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
		invoke("off::front", traceID, parent)
		want := []wantSpan{
			{"off::front", "engine", "SERVER", "off-front"},
			{"off::back", "engine", "SERVER", "off-back"},
			{"engine::functions::list", "engine", "SERVER", engine.BuiltinWorker},
		}
		tree := waitTree(ctx, t, eng, traceID, len(want))
		checkPath(t, tree, parent, want)
		for _, w := range []*sdk.Worker{front, back} {
			if st := w.TelemetryStats(); st != (sdk.TelemetryStats{}) {
				t.Errorf("telemetry off: stats %+v, want nothing sent or dropped", st)
			}
		}
	})
}

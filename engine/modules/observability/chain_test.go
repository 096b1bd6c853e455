package observability_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/sdk"
)

// hop is one function of a call chain: served by worker (a Go SDK worker
// the test starts; "" for an in-process function the engine or a module
// serves) and, unless it is the last hop, calling the next hop with its
// handler's context, so the trace context flows on.
type hop struct {
	fn     string
	worker string
}

// chainSpans is the expected engine-span path of a chain: every hop's
// span is the child of the previous hop's.
func startChain(t *testing.T, ctx context.Context, s *server, hops []hop) {
	t.Helper()
	var ids []string
	for i, h := range hops {
		if h.worker == "" {
			continue
		}
		w := connect(t, ctx, s.URL(), h.worker)
		next := ""
		if i+1 < len(hops) {
			next = hops[i+1].fn
		}
		err := w.RegisterFunction(h.fn, func(ctx context.Context, in json.RawMessage) (any, error) {
			if next == "" {
				return map[string]string{"at": h.fn}, nil
			}
			return sdk.Call[json.RawMessage](ctx, w, next, map[string]string{"from": h.fn})
		})
		if err != nil {
			t.Fatalf("register %s: %v", h.fn, err)
		}
		ids = append(ids, h.fn)
	}
	waitFunctions(t, ctx, s.Engine(), ids...)
}

// checkChain asserts that tree is exactly the chain: one root (the first
// hop) whose parent is rootParent, each next hop the only child of the
// previous one, with the right function names, worker names, caller
// workers, trigger kinds and nested timings.
func checkChain(t *testing.T, tree traceTree, hops []hop, firstTrigger, rootParent string) {
	t.Helper()
	if tree.SpanCount != len(hops) || len(tree.Roots) != 1 {
		t.Fatalf("trace %s: %d spans, %d roots; want %d spans in one chain", tree.TraceID, tree.SpanCount, len(tree.Roots), len(hops))
	}
	n := tree.Roots[0]
	if n.ParentSpanID != rootParent {
		t.Errorf("root %s parent_span_id = %q, want %q", n.Name, n.ParentSpanID, rootParent)
	}
	var parent *treeNode
	for i, h := range hops {
		if n.Name != h.fn || n.Attributes["function_id"] != h.fn {
			t.Errorf("hop %d: span %q (function_id %v), want %q", i, n.Name, n.Attributes["function_id"], h.fn)
		}
		if n.TraceID != tree.TraceID || n.Source != "engine" || n.Kind != "SERVER" || n.Status != "ok" {
			t.Errorf("hop %d %s: trace %s source %s kind %s status %s; want trace %s, engine SERVER ok",
				i, h.fn, n.TraceID, n.Source, n.Kind, n.Status, tree.TraceID)
		}
		wantWorker := h.worker
		if wantWorker == "" {
			wantWorker = engine.BuiltinWorker
		}
		if n.Worker != wantWorker {
			t.Errorf("hop %d %s: worker %q, want %q", i, h.fn, n.Worker, wantWorker)
		}
		wantTrigger, wantCaller := firstTrigger, ""
		if parent != nil {
			wantTrigger, wantCaller = "worker", hops[i-1].worker
			if n.ParentSpanID != parent.SpanID {
				t.Errorf("hop %d %s: parent_span_id %s, want %s (span of %s)", i, h.fn, n.ParentSpanID, parent.SpanID, parent.Name)
			}
			if n.StartTimeUnixNano < parent.StartTimeUnixNano || n.EndTimeUnixNano > parent.EndTimeUnixNano {
				t.Errorf("hop %d %s [%d, %d] not inside its parent %s [%d, %d]", i, h.fn,
					n.StartTimeUnixNano, n.EndTimeUnixNano, parent.Name, parent.StartTimeUnixNano, parent.EndTimeUnixNano)
			}
		}
		if got := n.Attributes["iii.trigger"]; got != wantTrigger {
			t.Errorf("hop %d %s: iii.trigger %v, want %s", i, h.fn, got, wantTrigger)
		}
		if got, _ := n.Attributes["iii.caller.worker"].(string); got != wantCaller {
			t.Errorf("hop %d %s: iii.caller.worker %q, want %q", i, h.fn, got, wantCaller)
		}
		if n.DurationMS <= 0 {
			t.Errorf("hop %d %s: duration_ms %v", i, h.fn, n.DurationMS)
		}
		if i+1 < len(hops) && len(n.Children) != 1 {
			t.Fatalf("hop %d %s: %d children, want 1", i, h.fn, len(n.Children))
		}
		if i+1 == len(hops) && len(n.Children) != 0 {
			t.Errorf("last hop %s: %d children, want none", h.fn, len(n.Children))
		}
		cur := n
		parent = &cur
		if len(n.Children) > 0 {
			n = n.Children[0]
		}
	}
}

// traceTreeOf waits until the trace holds want spans and returns its tree.
func traceTreeOf(t *testing.T, ctx context.Context, eng *engine.Engine, traceID string, want int) traceTree {
	t.Helper()
	var tree traceTree
	waitFor(t, ctx, "trace "+traceID, func() (bool, string) {
		tree = traceTree{}
		call(t, ctx, eng, engine.Request{FunctionID: "engine::traces::tree", Data: data(map[string]string{"trace_id": traceID})}, &tree)
		return tree.SpanCount >= want, strings.Repeat("span ", tree.SpanCount)
	})
	return tree
}

func TestCallChainIsOneTrace(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	hops := []hop{
		{fn: "chain::a", worker: "chain-a"},
		{fn: "chain::b", worker: "chain-b"},
		{fn: "engine::functions::list"},
	}
	startChain(t, ctx, s, hops)

	t.Run("caller traceparent", func(t *testing.T) {
		const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		call(t, ctx, eng, engine.Request{FunctionID: hops[0].fn, Data: data(map[string]int{"n": 1}),
			Traceparent: "00-" + traceID + "-" + parent + "-01"}, nil)
		tree := traceTreeOf(t, ctx, eng, traceID, len(hops))
		checkChain(t, tree, hops, "engine", parent)
	})
	t.Run("new trace", func(t *testing.T) {
		call(t, ctx, eng, engine.Request{FunctionID: hops[0].fn, Data: data(map[string]int{"n": 2})}, nil)
		var traceID string
		waitFor(t, ctx, "a new root span of "+hops[0].fn, func() (bool, string) {
			l := spans(t, ctx, eng, map[string]any{"function_id": hops[0].fn, "limit": 1})
			if len(l.Spans) == 1 && l.Spans[0].ParentSpanID == "" {
				traceID = l.Spans[0].TraceID
				return true, ""
			}
			return false, "no root span yet"
		})
		tree := traceTreeOf(t, ctx, eng, traceID, len(hops))
		checkChain(t, tree, hops, "engine", "")
	})
}

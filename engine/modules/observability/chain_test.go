package observability_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
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
		w := enginetest.Connect(t, ctx, s.URL(), h.worker)
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

// chainSpanCount is the number of spans a chain's trace holds: one engine
// span per hop, and for each Go SDK hop its worker span "execute <fn>"
// and, unless it is the last hop, its span "call <next>".
func chainSpanCount(hops []hop) int {
	n := 0
	for i, h := range hops {
		n++
		if h.worker != "" {
			n++
			if i+1 < len(hops) {
				n++
			}
		}
	}
	return n
}

// checkChain asserts that tree is exactly the chain: one root (the engine
// span of the first hop) whose parent is rootParent; under each hop served
// by a Go SDK worker, that worker's SERVER span "execute <fn>", and under
// that its CLIENT span "call <next fn>", the parent of the next hop's
// engine span. Every span has the right name, and engine spans the right
// function, worker, caller worker and trigger kind; timings nest.
func checkChain(t *testing.T, tree traceTree, hops []hop, firstTrigger, rootParent string) {
	t.Helper()
	if want := chainSpanCount(hops); tree.SpanCount != want || len(tree.Roots) != 1 {
		t.Fatalf("trace %s: %d spans, %d roots; want %d spans in one chain", tree.TraceID, tree.SpanCount, len(tree.Roots), want)
	}
	n := tree.Roots[0]
	if n.ParentSpanID != rootParent {
		t.Errorf("root %s parent_span_id = %q, want %q", n.Name, n.ParentSpanID, rootParent)
	}
	// child checks that n has exactly one child, under it in time, and
	// returns it.
	child := func(n treeNode, what string) treeNode {
		t.Helper()
		if len(n.Children) != 1 {
			t.Fatalf("%s %s: %d children, want 1 (%s)", n.Source, n.Name, len(n.Children), what)
		}
		c := n.Children[0]
		if c.ParentSpanID != n.SpanID || c.TraceID != tree.TraceID {
			t.Errorf("%s: trace %s parent %s, want trace %s parent %s (%s)", c.Name, c.TraceID, c.ParentSpanID, tree.TraceID, n.SpanID, n.Name)
		}
		if c.StartTimeUnixNano < n.StartTimeUnixNano || c.EndTimeUnixNano > n.EndTimeUnixNano {
			t.Errorf("%s [%d, %d] not inside its parent %s [%d, %d]", c.Name,
				c.StartTimeUnixNano, c.EndTimeUnixNano, n.Name, n.StartTimeUnixNano, n.EndTimeUnixNano)
		}
		return c
	}
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
		if i > 0 {
			wantTrigger, wantCaller = "worker", hops[i-1].worker
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
		if h.worker == "" {
			if i+1 < len(hops) {
				t.Fatalf("hop %d %s: an in-process hop cannot call the next one", i, h.fn)
			}
			if len(n.Children) != 0 {
				t.Errorf("last hop %s: %d children, want none", h.fn, len(n.Children))
			}
			break
		}
		exec := child(n, "the worker's execute span")
		if exec.Name != "execute "+h.fn || exec.Source != "worker" || exec.Kind != "SERVER" || exec.Status != "ok" ||
			exec.Worker != h.worker || exec.ServiceName != sdk.DefaultServiceName || exec.Attributes["iii.function.id"] != h.fn {
			t.Errorf("hop %d: worker span %s (source %s kind %s status %s worker %s service %s function %v); want execute %s, worker SERVER ok from %s, service %s",
				i, exec.Name, exec.Source, exec.Kind, exec.Status, exec.Worker, exec.ServiceName, exec.Attributes["iii.function.id"],
				h.fn, h.worker, sdk.DefaultServiceName)
		}
		if i+1 == len(hops) {
			if len(exec.Children) != 0 {
				t.Errorf("last hop %s: its execute span has %d children, want none", h.fn, len(exec.Children))
			}
			break
		}
		call := child(exec, "the worker's call span")
		if next := hops[i+1].fn; call.Name != "call "+next || call.Source != "worker" || call.Kind != "CLIENT" || call.Status != "ok" {
			t.Errorf("hop %d: span %s (source %s kind %s status %s); want call %s, worker CLIENT ok", i, call.Name, call.Source, call.Kind, call.Status, next)
		}
		n = child(call, "the next hop's engine span")
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
	ctx := enginetest.Context(t)
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
		tree := traceTreeOf(t, ctx, eng, traceID, chainSpanCount(hops))
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
		tree := traceTreeOf(t, ctx, eng, traceID, chainSpanCount(hops))
		checkChain(t, tree, hops, "engine", "")
	})
}

package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/observability"
	"github.com/iii-workbench/iii/engine/modules/state"
	"github.com/iii-workbench/iii/sdk"
)

// startChainServer runs an engine with the HTTP API, state and
// observability modules on free ports, and returns it with the API's base
// URL.
func startChainServer(t *testing.T, ctx context.Context) (*enginetest.Server, string) {
	t.Helper()
	srv := startServer(t, ctx, "engine: {port: 0}\nmodules:\n"+
		"  - class: RestApiModule\n    config: {host: 127.0.0.1, port: 0, default_timeout: 10000}\n"+
		"  - class: StateModule\n"+
		"  - class: OtelModule\n    config: {metrics_port: 0}\n")
	return srv, httpBase(t, srv)
}

// chainSpan is a node of engine::traces::tree.
type chainSpan struct {
	TraceID           string         `json:"trace_id"`
	SpanID            string         `json:"span_id"`
	ParentSpanID      string         `json:"parent_span_id"`
	Name              string         `json:"name"`
	Kind              string         `json:"kind"`
	ServiceName       string         `json:"service_name"`
	Worker            string         `json:"worker"`
	Source            string         `json:"source"`
	Status            string         `json:"status"`
	StartTimeUnixNano uint64         `json:"start_time_unix_nano"`
	EndTimeUnixNano   uint64         `json:"end_time_unix_nano"`
	Attributes        map[string]any `json:"attributes"`
	Children          []chainSpan    `json:"children"`
}

func (s chainSpan) String() string {
	var b strings.Builder
	var walk func(s chainSpan, depth int)
	walk = func(s chainSpan, depth int) {
		fmt.Fprintf(&b, "%s%s [%s %s %s worker=%q service=%q status=%s span=%s parent=%s]\n", strings.Repeat("  ", depth),
			s.Name, s.Source, s.Kind, s.TraceID, s.Worker, s.ServiceName, s.Status, s.SpanID, s.ParentSpanID)
		for _, c := range s.Children {
			walk(c, depth+1)
		}
	}
	walk(s, 0)
	return b.String()
}

// hopSpan is one expected span of the chain; check adds assertions of its
// own.
type hopSpan struct {
	name, source, kind, worker, service string
	attrs                               map[string]any
}

// TestTraceChain: a call chain HTTP → worker A (the published Node
// iii-sdk) → worker B (the Go SDK) → state::set is ONE trace, parented by
// the request's traceparent header, whose tree (read back through
// engine::traces::tree) links every hop to the one before:
//
//	chain::a                 engine span of the HTTP trigger (Node worker A)
//	  execute chain::a       A's span (Node SDK)
//	    chain::b             engine span of A's call (Go worker B)
//	      execute chain::b   B's handler span (Go SDK)
//	        call state::set  B's call span (Go SDK)
//	          state::set     engine span of the in-process state::set (iii-state)
func TestTraceChain(t *testing.T) {
	t.Parallel()
	command(t, node)
	ctx := testContext(t)
	srv, base := startChainServer(t, ctx)
	eng := srv.Engine()
	client := &http.Client{Transport: &http.Transport{}, Timeout: 15 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	// Worker B: Go SDK, default telemetry (spans to the engine).
	const goName, scope = "compat-go-b", "trace-chain"
	b, err := sdk.Connect(ctx, srv.URL(), sdk.WithName(goName), sdk.WithTelemetry(true))
	if err != nil {
		t.Fatalf("connect the Go worker: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(cctx); err != nil {
			t.Errorf("close the Go worker: %v", err)
		}
	})
	type request struct {
		Body struct {
			Tag string `json:"tag"`
		} `json:"body"`
	}
	err = b.RegisterFunction("chain::b", sdk.Typed(func(ctx context.Context, in request) (map[string]string, error) {
		if in.Body.Tag == "" {
			return nil, sdk.Errorf("bad_request", "no tag in %+v", in)
		}
		_, err := b.Trigger(ctx, sdk.TriggerRequest{FunctionID: "state::set",
			Payload: map[string]any{"scope": scope, "key": in.Body.Tag, "value": map[string]string{"by": "go"}}})
		if err != nil {
			return nil, err
		}
		return map[string]string{"stored": in.Body.Tag}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}

	// Worker A: Node SDK; chain::a forwards its input to chain::b from
	// inside its handler, and an HTTP route triggers it.
	a := startWorker(t, node, srv.URL(), "chain")
	a.ready(t, ctx)
	a.do(t, ctx, map[string]any{"op": "register_function", "ref": "a", "function_id": "chain::a", "call": "chain::b"}, "function_registered")
	a.do(t, ctx, map[string]any{"op": "bind", "ref": "route", "type_id": "http", "function_id": "chain::a",
		"config": map[string]any{"api_path": "chain/run", "http_method": "POST"}}, "bound")
	// Both names known to the engine (the Node SDK reports its name with a
	// void call of its own), so the engine spans name the workers.
	waitUntil(t, ctx, "both workers named and chain::b served", func() (bool, string) {
		snap := eng.Snapshot()
		names := map[string]bool{}
		for _, w := range snap.Workers {
			names[w.Name] = true
		}
		served := false
		for _, f := range snap.Functions {
			served = served || f.ID == "chain::b"
		}
		return names[a.name] && names[goName] && served, fmt.Sprintf("workers %v, chain::b served %v", names, served)
	})

	const traceID, parent = "6e0c63257de34c926f9efcd03919fb94", "2a3b4c5d6e7f8091"
	tag := uuid.NewString()
	status, body := httpDo(t, ctx, client, "POST", base+"/chain/run", fmt.Sprintf(`{"tag":%q}`, tag), map[string]string{
		"Content-Type": "application/json", "traceparent": "00-" + traceID + "-" + parent + "-01"})
	if status != http.StatusOK {
		t.Fatalf("POST /chain/run: %d %s", status, body)
	}
	assertJSON(t, "response", json.RawMessage(body), map[string]any{"stored": tag})
	var stored any
	invokeJSON(t, ctx, eng, "state::get", map[string]string{"scope": scope, "key": tag}, &stored)
	assertJSON(t, "state written by the Go worker", stored, map[string]any{"by": "go"})

	// Send what the workers still hold (both flush every 100 ms anyway).
	a.do(t, ctx, map[string]any{"op": "flush_otel", "id": "f1"}, "otel_flushed")
	if err := b.FlushTelemetry(ctx); err != nil {
		t.Fatal(err)
	}

	want := []hopSpan{
		{name: "chain::a", source: "engine", kind: "SERVER", worker: a.name,
			attrs: map[string]any{"function_id": "chain::a", "iii.trigger": "http"}},
		// The Node SDK makes its execute spans INTERNAL.
		{name: "execute chain::a", source: "worker", kind: "INTERNAL", worker: a.name, service: "iii-node",
			attrs: map[string]any{"iii.function.id": "chain::a"}},
		{name: "chain::b", source: "engine", kind: "SERVER", worker: goName,
			attrs: map[string]any{"function_id": "chain::b", "iii.trigger": "worker", "iii.caller.worker": a.name}},
		{name: "execute chain::b", source: "worker", kind: "SERVER", worker: goName, service: sdk.DefaultServiceName,
			attrs: map[string]any{"iii.function.id": "chain::b"}},
		{name: "call state::set", source: "worker", kind: "CLIENT", worker: goName, service: sdk.DefaultServiceName,
			attrs: map[string]any{"faas.invoked_name": "state::set"}},
		{name: "state::set", source: "engine", kind: "SERVER", worker: state.WorkerName,
			attrs: map[string]any{"function_id": "state::set", "iii.caller.worker": goName}},
	}
	var tree struct {
		SpanCount int         `json:"span_count"`
		Roots     []chainSpan `json:"roots"`
	}
	waitUntil(t, ctx, fmt.Sprintf("%d spans in trace %s", len(want), traceID), func() (bool, string) {
		invokeJSON(t, ctx, eng, "engine::traces::tree", map[string]string{"trace_id": traceID}, &tree)
		return tree.SpanCount >= len(want), fmt.Sprintf("%d spans:\n%v", tree.SpanCount, tree.Roots)
	})
	if tree.SpanCount != len(want) || len(tree.Roots) != 1 {
		t.Fatalf("trace %s: %d spans in %d roots, want %d in one chain:\n%v", traceID, tree.SpanCount, len(tree.Roots), len(want), tree.Roots)
	}
	root := tree.Roots[0]
	if root.ParentSpanID != parent {
		t.Errorf("root %s: parent %q, want the traceparent header's %s", root.Name, root.ParentSpanID, parent)
	}
	n := root
	for i, w := range want {
		if n.Name != w.name || n.Source != w.source || n.TraceID != traceID || n.Status != "ok" {
			t.Errorf("hop %d: %s (source %s, trace %s, status %s); want %s from %s in trace %s, ok",
				i, n.Name, n.Source, n.TraceID, n.Status, w.name, w.source, traceID)
		}
		if w.kind != "" && n.Kind != w.kind {
			t.Errorf("hop %d %s: kind %s, want %s", i, n.Name, n.Kind, w.kind)
		}
		if w.worker != "" && n.Worker != w.worker {
			t.Errorf("hop %d %s: worker %q, want %q", i, n.Name, n.Worker, w.worker)
		}
		if w.service != "" && n.ServiceName != w.service {
			t.Errorf("hop %d %s: service %q, want %q", i, n.Name, n.ServiceName, w.service)
		}
		for k, v := range w.attrs {
			if n.Attributes[k] != v {
				t.Errorf("hop %d %s: attribute %s = %v, want %v", i, n.Name, k, n.Attributes[k], v)
			}
		}
		if i+1 == len(want) {
			if len(n.Children) != 0 {
				t.Errorf("last hop %s: %d children, want none", n.Name, len(n.Children))
			}
			break
		}
		if len(n.Children) != 1 {
			t.Fatalf("hop %d %s: %d children, want only %s:\n%v", i, n.Name, len(n.Children), want[i+1].name, root)
		}
		c := n.Children[0]
		if c.ParentSpanID != n.SpanID {
			t.Errorf("hop %d %s: parent_span_id %s, want %s (%s)", i+1, c.Name, c.ParentSpanID, n.SpanID, n.Name)
		}
		n = c
	}
	if t.Failed() {
		t.Logf("trace %s:\n%v", traceID, root)
	}
}

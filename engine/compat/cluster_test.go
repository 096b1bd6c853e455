package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// TestClusterRealClients: three engines of one cluster on a real
// redis-server, a Node worker on the first, a Python worker on the second
// and another Node worker on the third. Every worker calls every other's
// functions (each call crosses engines), errors keep their code, message
// and stack trace, and void and enqueue calls reach the other engine.
func TestClusterRealClients(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	rs := storetest.StartServer(t)
	yaml := fmt.Sprintf(`engine: {port: 0}
redis: {url: %q}
cluster: {name: compat%s, heartbeat_ms: 100}
modules:
  - class: QueueModule
`, rs.URL(), strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
	type placed struct {
		srv *enginetest.Server
		w   *workerProc
		by  string
	}
	var ws []placed
	for i, l := range []lang{node, python, node} {
		srv := startServer(t, ctx, yaml)
		ws = append(ws, placed{srv: srv, w: startWorker(t, l, srv.URL(), fmt.Sprintf("%sc%d", l, i)), by: string(l)})
	}
	for _, p := range ws {
		p.w.ready(t, ctx)
	}
	// Each engine lists the others' functions before the calls start.
	for _, p := range ws {
		for _, q := range ws {
			waitListed(t, ctx, p.srv, q.w.fn("echo"))
		}
	}
	for i, caller := range ws {
		for j, target := range ws {
			if i == j {
				continue
			}
			name := fmt.Sprintf("%s_on_%d_calls_%s_on_%d", caller.w.lang, i, target.w.lang, j)
			t.Run(name+"/echo", func(t *testing.T) {
				tag := uuid.NewString()
				out := caller.w.call(t, ctx, target.w.fn("echo"), map[string]any{"tag": tag})
				if out.str("event") != "result" || out.obj("result")["tag"] != tag || out.obj("result")["by"] != target.by {
					t.Fatalf("got %v, want the echo of tag %s by %s", out, tag, target.by)
				}
			})
			t.Run(name+"/error", func(t *testing.T) {
				out := caller.w.call(t, ctx, target.w.fn("fail"), map[string]any{"tag": uuid.NewString()})
				if out.str("event") != "error" || out.str("code") != "invocation_failed" ||
					!strings.Contains(out.str("message"), "compat failure: boom") || !strings.Contains(out.str("stacktrace"), "boom") {
					t.Fatalf("got %v, want invocation_failed with the target's message and stack trace", out)
				}
			})
			t.Run(name+"/void", func(t *testing.T) {
				tag := uuid.NewString()
				out := caller.w.outcome(t, ctx, caller.w.startCall(t, target.w.fn("echo"), map[string]any{"tag": tag}, map[string]any{"void": true}))
				if out.str("event") != "sent" {
					t.Fatalf("void call: %v", out)
				}
				target.w.invoked(t, ctx, target.w.fn("echo"), func(d map[string]any) bool { return d["tag"] == tag })
			})
			t.Run(name+"/enqueue", func(t *testing.T) {
				tag := uuid.NewString()
				out := caller.w.outcome(t, ctx, caller.w.startCall(t, target.w.fn("echo"), map[string]any{"tag": tag}, map[string]any{"enqueue": "default"}))
				if receipt, _ := out.obj("result")["messageReceiptId"].(string); out.str("event") != "result" || receipt == "" {
					t.Fatalf("enqueue: %v, want a receipt", out)
				}
				target.w.invoked(t, ctx, target.w.fn("echo"), func(d map[string]any) bool { return d["tag"] == tag })
			})
		}
	}
}

// waitListed waits until srv's engine::functions::list has fn.
func waitListed(t *testing.T, ctx context.Context, srv *enginetest.Server, fn string) {
	t.Helper()
	for {
		res, err := srv.Engine().Invoke(ctx, engine.Request{FunctionID: "engine::functions::list", Data: json.RawMessage(`{}`)})
		if err == nil && strings.Contains(string(res), `"function_id":"`+fn+`"`) {
			return
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("%s never listed %s", srv.URL(), fn)
		}
	}
}

// TestClusterPython25Namespaces: three engines of one cluster on a real
// redis-server with Python iii-sdk 0.25 workers: one in the default
// namespace on the first engine, one in namespace orders on the second
// and one in namespace billing on the third, the last two both serving
// shared::get. A call names its namespace (the SDK fills in its
// worker's) and reaches that namespace's worker on the other engine,
// never the other namespace's.
func TestClusterPython25Namespaces(t *testing.T) {
	t.Parallel()
	command(t, python25)
	ctx := testContext(t)
	rs := storetest.StartServer(t)
	yaml := fmt.Sprintf("engine: {port: 0}\nredis: {url: %q}\ncluster: {name: ns%s, heartbeat_ms: 100}\n",
		rs.URL(), strings.ReplaceAll(uuid.NewString()[:8], "-", ""))
	srvs := []*enginetest.Server{startServer(t, ctx, yaml), startServer(t, ctx, yaml), startServer(t, ctx, yaml)}
	plain := startWorker(t, python25, srvs[0].URL(), "nc", "COMPAT_NAME=plain")
	orders := startWorker(t, python25, srvs[1].URL(), "no", "COMPAT_NAME=ordersvc", "COMPAT_NAMESPACE=orders", "COMPAT_FUNCTIONS=shared::get")
	billing := startWorker(t, python25, srvs[2].URL(), "nb", "COMPAT_NAME=billingsvc", "COMPAT_NAMESPACE=billing", "COMPAT_FUNCTIONS=shared::get")
	for _, w := range []*workerProc{plain, orders, billing} {
		w.ready(t, ctx)
	}
	// Every engine lists shared::get in both namespaces, each on its engine.
	for _, srv := range srvs {
		for {
			res, err := srv.Engine().Invoke(ctx, engine.Request{FunctionID: "engine::functions::list", Data: json.RawMessage(`{"prefix":"shared::"}`)})
			if err == nil && strings.Contains(string(res), `"namespace":"orders"`) && strings.Contains(string(res), `"namespace":"billing"`) {
				break
			}
			if !waitTick(ctx, 20*time.Millisecond) {
				t.Fatalf("%s never listed shared::get in both namespaces: %s, %v", srv.URL(), res, err)
			}
		}
	}

	t.Run("the namespace a call names picks the engine", func(t *testing.T) {
		for i := range 10 {
			for _, want := range []struct{ ns, by string }{{"orders", "ordersvc"}, {"billing", "billingsvc"}} {
				r := wantResult(t, fmt.Sprintf("shared::get in %s (%d)", want.ns, i), plain.call25(t, ctx, "shared::get", want.ns, i))
				if r["by"] != want.by {
					t.Fatalf("shared::get in %s served by %v, want %s", want.ns, r["by"], want.by)
				}
			}
		}
		wantError(t, "shared::get in default", plain.call25(t, ctx, "shared::get", "", nil),
			"function_not_found", "registered in namespace(s): billing, orders")
	})
	t.Run("a namespaced worker calls across engines", func(t *testing.T) {
		// Without a namespace the SDK names its worker's: orders has no nb::echo.
		wantError(t, "nb::echo from orders", orders.call25(t, ctx, "nb::echo", "", 1), "function_not_found", "namespace orders", "billing")
		r := wantResult(t, "nb::echo from orders naming billing", orders.call25(t, ctx, "nb::echo", "billing", 2))
		if c, _ := r["caller"].(map[string]any); r["by"] != "billingsvc" || c["worker_name"] != "ordersvc" {
			t.Errorf("nb::echo from orders: %v, want billingsvc's answer naming its caller ordersvc", r)
		}
		// And to the default namespace on the first engine.
		if r := wantResult(t, "nc::echo from billing naming default", billing.call25(t, ctx, "nc::echo", "default", 3)); r["by"] != "plain" {
			t.Errorf("nc::echo from billing: %v", r)
		}
	})
}

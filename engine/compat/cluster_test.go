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

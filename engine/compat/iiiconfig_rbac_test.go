package compat_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/iii-workbench/iii/engine/enginetest"
)

// TestIIIConfigListenersAndHTTPFunctions starts an engine from an
// iii-format config.yaml with two iii-worker-manager entries (the second
// with rbac) and iii-http-functions, and drives it with SDK workers.
func TestIIIConfigListenersAndHTTPFunctions(t *testing.T) {
	requireSDKs(t)
	ctx := testContext(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"via": "http"})
	}))
	defer up.Close()
	srv := enginetest.Start(t, ctx, `workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac:
        auth_function_id: admin::auth
        expose_functions:
          - match("admin::pub*")
          - metadata: {public: true}
  - name: iii-http-functions
    config:
      security: {require_https: false, block_private_ips: false}
`)
	addrs := srv.ListenerAddrs()
	if len(addrs) != 1 {
		t.Fatalf("extra listeners %v, want 1", addrs)
	}
	admin := startWorker(t, node, srv.URL(), "admin")
	admin.ready(t, ctx)
	admin.do(t, ctx, map[string]any{"op": "register_function", "ref": "auth", "function_id": "admin::auth",
		"result": map[string]any{"context": map[string]any{"who": "tenant"}}}, "function_registered")
	admin.do(t, ctx, map[string]any{"op": "register_function", "ref": "pub", "function_id": "admin::pub_x", "result": "ok"}, "function_registered")
	admin.do(t, ctx, map[string]any{"op": "register_http", "ref": "hf", "function_id": "admin::pub_http",
		"invocation": map[string]any{"url": up.URL}}, "function_registered")

	for _, l := range langs {
		c := startWorker(t, l, "ws://"+addrs[0], "t"+string(l), "COMPAT_READY=barrier")
		c.ready(t, ctx)
		if out := c.call(t, ctx, "admin::pub_x", nil); out.str("event") != "result" || out["result"] != "ok" {
			t.Errorf("%s: exposed function: %v", l, out)
		}
		if out := c.call(t, ctx, "admin::pub_http", nil); out.obj("result")["via"] != "http" {
			t.Errorf("%s: exposed HTTP-invoked function: %v", l, out)
		}
		if out := c.call(t, ctx, "admin::echo", nil); out.str("code") != "FORBIDDEN" || !strings.Contains(out.str("message"), "admin::echo") {
			t.Errorf("%s: unexposed function: %v", l, out)
		}
		// The first listener has no rbac: full rights.
		if out := admin.call(t, ctx, c.fn("echo"), map[string]any{"a": 1}); out.str("event") != "result" {
			t.Errorf("%s: admin calling %s: %v", l, c.fn("echo"), out)
		}
	}
}

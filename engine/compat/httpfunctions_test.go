package compat_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	_ "github.com/iii-workbench/iii/engine/modules/httpfunctions"
)

// TestHTTPInvokedFunctions registers HTTP-invoked functions through the
// Node and Python SDKs (registerFunction with an HttpInvocationConfig) and
// calls them: results, auth from the engine's environment, error mapping,
// timeouts, the URL policy of the default config, removal when the
// registering worker leaves.
func TestHTTPInvokedFunctions(t *testing.T) {
	requireSDKs(t)
	ctx := testContext(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			json.NewEncoder(w).Encode(map[string]any{"got": json.RawMessage(body), "method": r.Method,
				"authorization": r.Header.Get("Authorization"), "key": r.Header.Get("X-Key"),
				"path": r.Header.Get("x-iii-Function-Path")})
		case "/error":
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`{"error":{"code":"UPSTREAM_DOWN","message":"upstream is down"}}`))
		case "/text":
			w.Write([]byte("plain text"))
		case "/slow":
			<-r.Context().Done()
		}
	}))
	defer up.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "http://"))
	t.Setenv("COMPAT_HF_TOKEN", "tok-123")
	t.Setenv("COMPAT_HF_KEY", "key-456")

	open := startServer(t, ctx, `
engine: {host: 127.0.0.1, port: 0}
modules:
  - class: iii-http-functions
    config:
      security: {url_allowlist: ["127.0.0.1"], require_https: false, block_private_ips: false}
`)
	strict := startServer(t, ctx, "engine: {host: 127.0.0.1, port: 0}\nmodules:\n  - class: iii-http-functions\n")

	for _, l := range langs {
		w := startWorker(t, l, open.URL(), "h"+string(l))
		s := startWorker(t, l, strict.URL(), "s"+string(l))
		w.ready(t, ctx)
		s.ready(t, ctx)
		register := func(w *workerProc, name string, inv map[string]any) string {
			id := w.fn("http_" + name)
			w.do(t, ctx, map[string]any{"op": "register_http", "ref": id, "function_id": id, "invocation": inv,
				"description": "http " + name}, "function_registered")
			return id
		}
		echo := register(w, "echo", map[string]any{"url": up.URL + "/echo", "auth": map[string]any{"type": "bearer", "token_key": "COMPAT_HF_TOKEN"}})
		apiKey := register(w, "apikey", map[string]any{"url": up.URL + "/echo", "method": "PUT",
			"auth": map[string]any{"type": "api_key", "header": "X-Key", "value_key": "COMPAT_HF_KEY"}})
		failing := register(w, "error", map[string]any{"url": up.URL + "/error"})
		text := register(w, "text", map[string]any{"url": up.URL + "/text"})
		slow := register(w, "slow", map[string]any{"url": up.URL + "/slow", "timeout_ms": 300})
		noEnv := register(w, "noenv", map[string]any{"url": up.URL + "/echo", "auth": map[string]any{"type": "bearer", "token_key": "COMPAT_HF_UNSET"}})
		other := register(w, "other", map[string]any{"url": "http://localhost:" + port + "/echo"})

		out := w.call(t, ctx, echo, map[string]any{"n": 7})
		res := out.obj("result")
		if out.str("event") != "result" || res["authorization"] != "Bearer tok-123" || res["path"] != echo ||
			res["method"] != "POST" || res["got"].(map[string]any)["n"] != 7.0 {
			t.Errorf("%s: %s: %v", l, echo, out)
		}
		out = w.call(t, ctx, apiKey, map[string]any{})
		if res := out.obj("result"); res["key"] != "key-456" || res["method"] != "PUT" {
			t.Errorf("%s: %s: %v", l, apiKey, out)
		}
		for id, want := range map[string][2]string{
			failing: {"UPSTREAM_DOWN", "upstream is down"},
			text:    {"invalid_response", "not JSON"},
			slow:    {"http_request_failed", "300ms"},
			noEnv:   {"missing_env_var", "COMPAT_HF_UNSET"},
			other:   {"url_validation_failed", "url_allowlist"},
		} {
			start := time.Now()
			out := w.call(t, ctx, id, map[string]any{})
			if out.str("code") != want[0] || !strings.Contains(out.str("message"), want[1]) {
				t.Errorf("%s: %s: %v, want %s containing %q", l, id, out, want[0], want[1])
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s: %s took %v", l, id, d)
			}
		}

		// The default policy: https only, and never a private address,
		// whether named by IP or by a name that resolves to one.
		for name, url := range map[string]string{
			"plain":    up.URL + "/echo",
			"loopback": "https://127.0.0.1:" + port + "/echo",
			"resolved": "https://localhost:" + port + "/echo",
		} {
			id := register(s, name, map[string]any{"url": url})
			out := s.call(t, ctx, id, map[string]any{})
			if out.str("code") != "url_validation_failed" {
				t.Errorf("%s: default policy, %s: %v, want url_validation_failed", l, url, out)
			}
		}

		// They go with the worker that registered them.
		w.stop()
		waitUntil(t, ctx, "the HTTP functions removed", func() (bool, string) {
			for _, f := range open.Engine().Snapshot().Functions {
				if strings.HasPrefix(f.ID, w.prefix+"::") {
					return false, f.ID
				}
			}
			return true, ""
		})
	}
}

package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/enginetest"
	httpapi "github.com/iii-workbench/iii/engine/modules/http"
)

// startHTTPServer runs an engine with the HTTP API module on free ports
// and returns it with the API's base URL.
func startHTTPServer(t *testing.T, ctx context.Context) (*enginetest.Server, string) {
	t.Helper()
	srv := startServer(t, ctx, "engine: {port: 0}\nmodules:\n  - class: RestApiModule\n    config: {host: 127.0.0.1, port: 0, default_timeout: 5000}\n")
	return srv, httpBase(t, srv)
}

// httpBase is the base URL of the server's HTTP API module; the test fails
// when the module is not running.
func httpBase(t *testing.T, srv *enginetest.Server) string {
	t.Helper()
	m, ok := srv.Modules().Get("http")
	if !ok {
		t.Fatalf("http module not running: %v", srv.Modules().IDs())
	}
	return "http://" + m.(*httpapi.Module).Addr()
}

// httpDo sends one request and returns its status and body.
func httpDo(t *testing.T, ctx context.Context, client *http.Client, method, url, body string, headers map[string]string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// TestHTTPTrigger: each SDK binds its functions to http triggers; real HTTP
// requests reach them with the request object of spec §3.3, their results
// become the responses, a thrown error becomes a 500 envelope carrying the
// SDK's code, and the routes go when the worker does.
func TestHTTPTrigger(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	srv, base := startHTTPServer(t, ctx)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	ws := make(map[lang]*workerProc)
	for _, l := range langs {
		ws[l] = startWorker(t, l, srv.URL(), string(l))
	}
	for _, l := range langs {
		ws[l].ready(t, ctx)
	}
	for _, l := range langs {
		w := ws[l]
		t.Run(string(l), func(t *testing.T) {
			path := "compat/" + string(l) + "/:id"
			w.do(t, ctx, map[string]any{"op": "bind", "ref": "echo-route", "type_id": "http",
				"function_id": w.fn("echo"), "config": map[string]any{"api_path": path, "http_method": "post"},
				"metadata": map[string]any{"route": "echo"}}, "bound")
			w.do(t, ctx, map[string]any{"op": "bind", "ref": "fail-route", "type_id": "http",
				"function_id": w.fn("fail"), "config": map[string]any{"api_path": "/compat/" + string(l) + "/fail"}}, "bound")

			tag := uuid.NewString()
			body := fmt.Sprintf(`{"tag":%q,"n":[1,2]}`, tag)
			status, got := httpDo(t, ctx, client, "POST", base+"/compat/"+string(l)+"/42?page=2&q=x", body,
				map[string]string{"Content-Type": "application/json", "X-Compat": "yes"})
			// echo returns the request object (plus "by"): its headers and
			// body keys make it a response object whose body is ours.
			if status != 200 {
				t.Fatalf("POST through %s echo: %d %s", l, status, got)
			}
			assertJSON(t, "response body", json.RawMessage(got), json.RawMessage(body))

			inv := w.invoked(t, ctx, w.fn("echo"), func(d map[string]any) bool {
				b, _ := d["body"].(map[string]any)
				return b != nil && b["tag"] == tag
			})
			data := inv.obj("data")
			for k, want := range map[string]any{
				"path_params":  map[string]any{"id": "42"},
				"query_params": map[string]any{"page": "2", "q": "x"},
				"path":         "compat/" + string(l) + "/:id",
				"method":       "POST",
				"trigger":      map[string]any{"type": "http", "path": "compat/" + string(l) + "/:id", "method": "POST"},
			} {
				assertJSON(t, "request."+k+" seen by the "+string(l)+" handler", data[k], want)
			}
			if h, _ := data["headers"].(map[string]any); h["x-compat"] != "yes" || h["content-type"] != "application/json" {
				t.Errorf("request.headers seen by the %s handler: %v", l, h)
			}
			assertJSON(t, "trigger metadata seen by the handler", inv["metadata"], map[string]any{"route": "echo"})

			status, got = httpDo(t, ctx, client, "GET", base+"/compat/"+string(l)+"/fail", "", nil)
			var env struct {
				Error struct {
					Code, Message string
					ErrorID       string `json:"error_id"`
				} `json:"error"`
			}
			if err := json.Unmarshal(got, &env); err != nil || status != 500 ||
				env.Error.Code != "invocation_failed" || !strings.Contains(env.Error.Message, "compat failure: boom") || env.Error.ErrorID == "" {
				t.Errorf("GET through %s fail: %d %s, want a 500 envelope with invocation_failed", l, status, got)
			}
		})
	}

	// A worker's routes go with it.
	ws[node].kill(t, ctx)
	for {
		status, _ := httpDo(t, ctx, client, "POST", base+"/compat/node/1", "{}", map[string]string{"Content-Type": "application/json"})
		if status == 404 {
			break
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("node's route still answers %d after the worker was killed", status)
		}
	}
	if status, got := httpDo(t, ctx, client, "POST", base+"/compat/python/1", "{}", map[string]string{"Content-Type": "application/json"}); status != 200 {
		t.Errorf("python's route after node left: %d %s", status, got)
	}
}

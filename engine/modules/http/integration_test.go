package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/enginetest"
	httpapi "github.com/iii-workbench/iii/engine/modules/http"
	"github.com/iii-workbench/iii/sdk"
)

// fixture is an engine running the HTTP module, with an HTTP client.
type fixture struct {
	srv     *enginetest.Server
	mod     *httpapi.Module
	base    string // http://host:port of the HTTP API
	client  *http.Client
	logs    *enginetest.Logs // engine log
	started time.Time
}

// startServer starts an engine with RestApiModule and the given module
// config lines (YAML flow mapping entries, e.g. "default_timeout: 300").
func startServer(t testing.TB, ctx context.Context, moduleConfig string) *fixture {
	t.Helper()
	yaml := "engine: {port: 0}\nmodules:\n  - class: RestApiModule\n    config: {host: 127.0.0.1, port: 0"
	if moduleConfig != "" {
		yaml += ", " + moduleConfig
	}
	yaml += "}\n"
	srv := enginetest.Start(t, ctx, yaml)
	logs := srv.Logs
	m, ok := srv.Modules().Get("http")
	if !ok {
		t.Fatalf("module http not started; modules %v", srv.Modules().IDs())
	}
	f := &fixture{srv: srv, mod: m.(*httpapi.Module), logs: logs, started: time.Now(),
		client: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}}
	f.base = "http://" + f.mod.Addr()
	// Runs before enginetest stops the engine (cleanups run in reverse).
	t.Cleanup(f.client.CloseIdleConnections)
	return f
}

// connect connects a Go SDK worker whose log goes to the returned buffer.
// Cleanup closes it (before the server stops: cleanups run in reverse).
func (f *fixture) connect(t *testing.T, ctx context.Context, name string) (*sdk.Worker, *enginetest.Logs) {
	t.Helper()
	logs := &enginetest.Logs{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := sdk.Connect(ctx, f.srv.URL(), sdk.WithName(name), sdk.WithLogger(log))
	if err != nil {
		t.Fatalf("sdk.Connect: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.Close(cctx)
		if t.Failed() {
			t.Logf("worker %s log:\n%s", name, logs.String())
		}
	})
	return w, logs
}

// reply is an HTTP response as the tests look at it.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %v %s", r.status, r.header, r.body) }

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return v
}

// do sends one request; headers are "Name: value" strings.
func (f *fixture) do(t *testing.T, ctx context.Context, method, path string, body io.Reader, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, f.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// waitStatus polls method path until its status is want.
func (f *fixture) waitStatus(t *testing.T, ctx context.Context, method, path string, want int, headers ...string) reply {
	t.Helper()
	for {
		r := f.do(t, ctx, method, path, nil, headers...)
		if r.status == want {
			return r
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s %s: status %d (%s), still not %d: %v", method, path, r.status, r.body, want, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitLog polls a log buffer until it contains all of parts.
func waitLog(t *testing.T, ctx context.Context, logs *enginetest.Logs, parts ...string) string {
	t.Helper()
	for {
		s := logs.String()
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(s, p)
		}
		if ok {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("log never contained %q:\n%s", parts, s)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func route(w *sdk.Worker, t *testing.T, fn, method, path string, extra map[string]any) {
	t.Helper()
	cfg := map[string]any{"api_path": path, "http_method": method}
	for k, v := range extra {
		cfg[k] = v
	}
	if _, err := w.RegisterTrigger(sdk.Trigger{Type: "http", FunctionID: fn, Config: cfg}); err != nil {
		t.Fatalf("register trigger %s %s: %v", method, path, err)
	}
}

func assertEnvelope(t *testing.T, r reply, status int, code string, withID bool) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d (%s), want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("envelope content-type %q", ct)
	}
	env, _ := r.json(t)["error"].(map[string]any)
	if env == nil || env["code"] != code || env["message"] == "" {
		t.Fatalf("envelope %s, want error.code %q and a message", r.body, code)
	}
	id, _ := env["error_id"].(string)
	if withID {
		if _, err := hex.DecodeString(id); err != nil || id == "" {
			t.Errorf("error_id %q is not hex", id)
		}
	} else if _, ok := env["error_id"]; ok {
		t.Errorf("error_id on a %d: %s", status, r.body)
	}
	return env
}

func TestRequestsAndResponses(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "")
	w, _ := f.connect(t, ctx, "http-test")
	var (
		mu       sync.Mutex
		lastMeta json.RawMessage
		lastTP   string
	)
	must(t, w.RegisterFunction("t::echo", func(ctx context.Context, in json.RawMessage) (any, error) {
		mu.Lock()
		lastMeta, lastTP = sdk.Metadata(ctx), sdk.Traceparent(ctx)
		mu.Unlock()
		return map[string]any{"body": in}, nil
	}))
	// t::respond answers with the "response" of the JSON request body.
	must(t, w.RegisterFunction("t::respond", func(ctx context.Context, in json.RawMessage) (any, error) {
		var req struct {
			Body struct {
				Response json.RawMessage `json:"response"`
			} `json:"body"`
		}
		if err := json.Unmarshal(in, &req); err != nil {
			return nil, err
		}
		return req.Body.Response, nil
	}))
	if _, err := w.RegisterTrigger(sdk.Trigger{Type: "http", FunctionID: "t::echo",
		Config: map[string]any{"api_path": "/users/:id"}, Metadata: map[string]any{"team": "a"}}); err != nil {
		t.Fatal(err)
	}
	route(w, t, "t::echo", "post", "items", nil)
	route(w, t, "t::respond", "POST", "/respond", nil)
	f.waitStatus(t, ctx, "GET", "/users/1", 200)

	t.Run("GET path params and query", func(t *testing.T) {
		tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		r := f.do(t, ctx, "GET", "/users/42?page=1&page=2&q=a%20b", nil, "X-Multi: one", "X-Multi: two", "Traceparent: "+tp)
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %s", r)
		}
		got := r.json(t)
		want := map[string]any{
			"query_params": map[string]any{"page": "2", "q": "a b"},
			"path_params":  map[string]any{"id": "42"},
			"path":         "users/:id",
			"method":       "GET",
			"body":         nil,
			"trigger":      map[string]any{"type": "http", "path": "users/:id", "method": "GET"},
		}
		for k, v := range want {
			if !jsonEqual(got[k], v) {
				t.Errorf("request.%s = %v, want %v", k, got[k], v)
			}
		}
		hdr, _ := got["headers"].(map[string]any)
		if hdr["x-multi"] != "two" || hdr["traceparent"] != tp || hdr["host"] != f.mod.Addr() {
			t.Errorf("request.headers = %v, want lowercase names, last value, host", hdr)
		}
		mu.Lock()
		defer mu.Unlock()
		// The engine may add a span of its own: the trace id must carry over.
		if string(lastMeta) != `{"team":"a"}` || !strings.HasPrefix(lastTP, tp[:36]) {
			t.Errorf("function saw metadata %s and traceparent %q, want {\"team\":\"a\"} and trace %s", lastMeta, lastTP, tp[3:35])
		}
	})

	t.Run("POST JSON body", func(t *testing.T) {
		r := f.do(t, ctx, "POST", "/items/", strings.NewReader(`{"name":"x","n":[1,2]}`), "Content-Type: application/json; charset=utf-8")
		got := r.json(t)
		if r.status != 200 || !jsonEqual(got["body"], map[string]any{"name": "x", "n": []any{1, 2}}) || got["method"] != "POST" {
			t.Errorf("got %s", r)
		}
		r = f.do(t, ctx, "POST", "/items", strings.NewReader(`{"name":`), "Content-Type: application/json")
		if got := r.json(t); got["body"] != nil {
			t.Errorf("invalid JSON body reached the function as %v, want null", got["body"])
		}
		r = f.do(t, ctx, "POST", "/items", strings.NewReader(`{"name":"x"}`), "Content-Type: text/plain")
		if got := r.json(t); got["body"] != nil {
			t.Errorf("text/plain body reached the function as %v, want null", got["body"])
		}
	})

	t.Run("HEAD uses the GET route", func(t *testing.T) {
		r := f.do(t, ctx, "HEAD", "/users/42", nil)
		if r.status != 200 || len(r.body) != 0 {
			t.Errorf("HEAD: %s", r)
		}
	})

	t.Run("CORS preflight", func(t *testing.T) {
		r := f.do(t, ctx, "OPTIONS", "/users/42", nil, "Origin: https://app.example", "Access-Control-Request-Method: GET")
		if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("preflight: %s", r)
		}
		r = f.do(t, ctx, "GET", "/users/42", nil, "Origin: https://app.example")
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("simple CORS request: %s", r)
		}
	})

	cases := []struct {
		name     string
		response string
		status   int
		headers  map[string]string
		body     string
	}{
		{"defaults", `{}`, 200, map[string]string{"Content-Type": "application/json"}, `{}`},
		{"status and headers object", `{"status_code":201,"headers":{"X-Foo":"bar"},"body":{"ok":true}}`,
			201, map[string]string{"X-Foo": "bar", "Content-Type": "application/json"}, `{"ok":true}`},
		{"headers array", `{"status_code":202,"headers":["X-A: 1","X-B: two"],"body":[1]}`,
			202, map[string]string{"X-A": "1", "X-B": "two"}, `[1]`},
		{"raw string body", `{"headers":{"content-type":"text/plain; charset=utf-8"},"body":"hello\nworld"}`,
			200, map[string]string{"Content-Type": "text/plain; charset=utf-8"}, "hello\nworld"},
		{"non-JSON type, object body", `{"headers":{"content-type":"text/plain"},"body":{"a":1}}`,
			200, map[string]string{"Content-Type": "text/plain"}, `{"a":1}`},
		{"null body", `{"status_code":204,"body":null}`, 204, map[string]string{"Content-Type": ""}, ``},
		{"status only", `{"status_code":418}`, 418, nil, `{}`},
		{"plain object is the body", `{"id":1}`, 200, map[string]string{"Content-Type": "application/json"}, `{"id":1}`},
		{"string result", `"ok"`, 200, nil, `"ok"`},
		{"null result", `null`, 200, nil, `{}`},
	}
	for _, tc := range cases {
		t.Run("response "+tc.name, func(t *testing.T) {
			r := f.do(t, ctx, "POST", "/respond", strings.NewReader(`{"response":`+tc.response+`}`), "Content-Type: application/json")
			if r.status != tc.status || string(r.body) != tc.body {
				t.Errorf("function returned %s: got %d %q, want %d %q", tc.response, r.status, r.body, tc.status, tc.body)
			}
			for k, v := range tc.headers {
				if got := r.header.Get(k); got != v {
					t.Errorf("function returned %s: header %s = %q, want %q", tc.response, k, got, v)
				}
			}
		})
	}

	t.Run("invalid response", func(t *testing.T) {
		r := f.do(t, ctx, "POST", "/respond", strings.NewReader(`{"response":{"status_code":"x"}}`), "Content-Type: application/json")
		assertEnvelope(t, r, 500, "INTERNAL_ERROR", true)
	})

	t.Run("unknown route", func(t *testing.T) {
		for _, p := range [][2]string{{"GET", "/nope"}, {"DELETE", "/users/1"}, {"GET", "/users"}, {"GET", "/users/1/x"}} {
			r := f.do(t, ctx, p[0], p[1], nil)
			env := assertEnvelope(t, r, 404, "NOT_FOUND", false)
			if !strings.Contains(env["message"].(string), p[1]) {
				t.Errorf("404 message %q does not name %s", env["message"], p[1])
			}
		}
	})
}

func TestErrorsAndLimits(t *testing.T) {
	ctx := enginetest.Context(t)
	t.Setenv("HTTPAPI_TEST_TOKEN", "tok-123")
	t.Setenv("HTTPAPI_TEST_KEY", "key-456")
	f := startServer(t, ctx, "default_timeout: 300, body_limit: 1024, stream_body_limit: 4096")
	w, wlog := f.connect(t, ctx, "http-errors")
	var calls atomic.Int64
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the worker closes
	must(t, w.RegisterFunction("t::ok", func(ctx context.Context, in json.RawMessage) (any, error) {
		calls.Add(1)
		return map[string]any{"body": map[string]any{"ok": true}}, nil
	}))
	must(t, w.RegisterFunction("t::fail", func(ctx context.Context, in json.RawMessage) (any, error) {
		return nil, sdk.Errorf("E_BROKEN", "the thing broke")
	}))
	must(t, w.RegisterFunction("t::slow", func(ctx context.Context, in json.RawMessage) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}))
	route(w, t, "t::ok", "GET", "ok", nil)
	route(w, t, "t::fail", "GET", "fail", nil)
	route(w, t, "t::slow", "GET", "slow", nil)
	route(w, t, "t::ok", "POST", "upload", nil)
	route(w, t, "t::ghost", "GET", "ghost", nil)
	route(w, t, "t::ok", "GET", "bearer", map[string]any{"auth": map[string]any{"type": "bearer", "token_key": "HTTPAPI_TEST_TOKEN"}})
	route(w, t, "t::ok", "GET", "apikey", map[string]any{"auth": map[string]any{"type": "api_key", "header": "X-Api-Key", "value_key": "HTTPAPI_TEST_KEY"}})
	f.waitStatus(t, ctx, "GET", "/ok", 200)
	f.waitStatus(t, ctx, "GET", "/apikey", 401)

	t.Run("function error is a 500 envelope", func(t *testing.T) {
		env := assertEnvelope(t, f.do(t, ctx, "GET", "/fail", nil), 500, "E_BROKEN", true)
		if env["message"] != "the thing broke" {
			t.Errorf("message %q", env["message"])
		}
		waitLog(t, ctx, f.logs, "error_id="+env["error_id"].(string))
	})

	t.Run("timeout is a 504", func(t *testing.T) {
		start := time.Now()
		assertEnvelope(t, f.do(t, ctx, "GET", "/slow", nil), 504, "TIMEOUT", true)
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("504 after %v, want about default_timeout (300ms)", d)
		}
	})

	t.Run("missing function is a 503", func(t *testing.T) {
		r := f.do(t, ctx, "GET", "/ghost", nil)
		assertEnvelope(t, r, 503, "function_not_found", true)
	})

	t.Run("body limit", func(t *testing.T) {
		// body_limit bounds a JSON body (read whole); stream_body_limit
		// one streamed to the function (any other content type).
		before := calls.Load()
		jsonBody := func(n int) io.Reader { return strings.NewReader(`"` + strings.Repeat("x", n-2) + `"`) }
		jsonType := "Content-Type: application/json"
		r := f.do(t, ctx, "POST", "/upload", jsonBody(1024), jsonType)
		if r.status != 200 {
			t.Fatalf("JSON body at the limit: %s", r)
		}
		assertEnvelope(t, f.do(t, ctx, "POST", "/upload", jsonBody(1025), jsonType), 413, "PAYLOAD_TOO_LARGE", false)
		// Chunked: no Content-Length, so the limit is found while reading.
		chunked := io.MultiReader(jsonBody(600), jsonBody(600))
		assertEnvelope(t, f.do(t, ctx, "POST", "/upload", chunked, jsonType), 413, "PAYLOAD_TOO_LARGE", false)
		r = f.do(t, ctx, "POST", "/upload", bytes.NewReader(make([]byte, 4096)), "Content-Type: application/octet-stream")
		if r.status != 200 {
			t.Fatalf("streamed body at the limit: %s", r)
		}
		r = f.do(t, ctx, "POST", "/upload", bytes.NewReader(make([]byte, 4097)), "Content-Type: application/octet-stream")
		assertEnvelope(t, r, 413, "PAYLOAD_TOO_LARGE", false)
		if !strings.Contains(string(r.body), "stream_body_limit") {
			t.Errorf("413 for a streamed body does not name stream_body_limit: %s", r)
		}
		if got := calls.Load() - before; got != 2 {
			t.Errorf("function called %d times, want 2 (only the requests within the limits)", got)
		}
	})

	t.Run("huge Content-Length is refused before the body", func(t *testing.T) {
		before := calls.Load()
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.mod.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		start := time.Now()
		// 1 GiB announced, 10 bytes sent: the answer must not wait for the rest.
		fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n0123456789", 1<<30)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no response to a 1 GiB Content-Length within 2s: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 || time.Since(start) > time.Second {
			t.Errorf("got %d after %v, want 413 at once", resp.StatusCode, time.Since(start))
		}
		if calls.Load() != before {
			t.Error("the function was called for a refused body")
		}
	})

	t.Run("auth", func(t *testing.T) {
		before := calls.Load()
		cases := []struct {
			path   string
			header []string
			status int
		}{
			{"/bearer", nil, 401},
			{"/bearer", []string{"Authorization: Bearer wrong"}, 401},
			{"/bearer", []string{"Authorization: Basic tok-123"}, 401},
			{"/bearer", []string{"X-Api-Key: tok-123"}, 401},
			{"/bearer", []string{"Authorization: Bearer tok-123"}, 200},
			{"/apikey", nil, 401},
			{"/apikey", []string{"X-Api-Key: tok-123"}, 401},
			{"/apikey", []string{"Authorization: Bearer key-456"}, 401},
			{"/apikey", []string{"x-api-key: key-456"}, 200},
		}
		allowed := int64(0)
		for _, tc := range cases {
			r := f.do(t, ctx, "GET", tc.path, nil, tc.header...)
			if tc.status == 401 {
				assertEnvelope(t, r, 401, "UNAUTHORIZED", false)
				if tc.path == "/bearer" && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without a Bearer challenge: %v", r.header)
				}
			} else {
				allowed++
				if r.status != tc.status {
					t.Errorf("GET %s with %v: %s, want %d", tc.path, tc.header, r, tc.status)
				}
			}
		}
		if got := calls.Load() - before; got != allowed {
			t.Errorf("function called %d times, want %d (only authorised requests)", got, allowed)
		}
	})

	t.Run("auth with an unset variable is refused", func(t *testing.T) {
		route(w, t, "t::ok", "GET", "noenv", map[string]any{"auth": map[string]any{"type": "bearer", "token_key": "HTTPAPI_TEST_UNSET"}})
		waitLog(t, ctx, wlog, "trigger registration failed", "trigger_registration_failed", "HTTPAPI_TEST_UNSET")
		assertEnvelope(t, f.do(t, ctx, "GET", "/noenv", nil), 404, "NOT_FOUND", false)
	})
}

func TestConflictsAndDisconnect(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "")
	a, _ := f.connect(t, ctx, "http-a")
	b, blog := f.connect(t, ctx, "http-b")
	for _, w := range []*sdk.Worker{a, b} {
		name := "a"
		if w == b {
			name = "b"
		}
		must(t, w.RegisterFunction("t::"+name, func(ctx context.Context, in json.RawMessage) (any, error) {
			return name, nil
		}))
	}
	route(a, t, "t::a", "GET", "things/:id", nil)
	f.waitStatus(t, ctx, "GET", "/things/1", 200)

	// b's route has a's shape: refused, and a keeps serving.
	route(b, t, "t::b", "get", "/things/:name/", nil)
	log := waitLog(t, ctx, blog, "trigger registration failed", "trigger_registration_failed")
	if !strings.Contains(log, "GET /things/:id") || !strings.Contains(log, "t::a") {
		t.Errorf("the rejection does not name the conflicting route and function:\n%s", log)
	}
	// A literal route, and the same shape with another method, are fine.
	route(b, t, "t::b", "GET", "things/special", nil)
	route(b, t, "t::b", "DELETE", "things/:id", nil)
	f.waitStatus(t, ctx, "GET", "/things/special", 200)
	if r := f.do(t, ctx, "GET", "/things/1", nil); string(r.body) != `"a"` {
		t.Errorf("GET /things/1 = %s, want a's answer", r)
	}
	if r := f.waitStatus(t, ctx, "DELETE", "/things/1", 200); string(r.body) != `"b"` {
		t.Errorf("DELETE /things/1 = %s, want b's answer", r)
	}

	// When a disconnects its routes go; b's stay.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.Close(cctx); err != nil {
		t.Fatal(err)
	}
	f.waitStatus(t, ctx, "GET", "/things/1", 404)
	if r := f.do(t, ctx, "GET", "/things/special", nil); r.status != 200 {
		t.Errorf("b's route after a left: %s", r)
	}
	// The shape is free now.
	route(b, t, "t::b", "GET", "things/:x", nil)
	if r := f.waitStatus(t, ctx, "GET", "/things/2", 200); string(r.body) != `"b"` {
		t.Errorf("GET /things/2 = %s, want b's answer", r)
	}
}

// TestReloadWithChangedRoute: the new version of a worker binds its
// function to a route of the same shape but another config (here a renamed
// parameter). The old version's route is in the way, so the new one is
// refused and parked; when the old worker goes, the new route is served.
func TestReloadWithChangedRoute(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "")
	oldW, _ := f.connect(t, ctx, "http-old")
	newW, newLog := f.connect(t, ctx, "http-new")
	for _, w := range []*sdk.Worker{oldW, newW} {
		must(t, w.RegisterFunction("t::item", func(ctx context.Context, in json.RawMessage) (any, error) {
			var req struct {
				PathParams map[string]string `json:"path_params"`
			}
			if err := json.Unmarshal(in, &req); err != nil {
				return nil, err
			}
			return req.PathParams, nil
		}))
	}
	route(oldW, t, "t::item", "GET", "items/:id", nil)
	f.waitStatus(t, ctx, "GET", "/items/1", 200)
	route(newW, t, "t::item", "GET", "items/:item", nil)
	waitLog(t, ctx, newLog, "trigger registration failed", "trigger_registration_failed", "parked")
	if r := f.do(t, ctx, "GET", "/items/1", nil); string(r.body) != `{"id":"1"}` {
		t.Errorf("GET /items/1 while both are connected = %s, want the old route's {\"id\":\"1\"}", r)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := oldW.Close(cctx); err != nil {
		t.Fatal(err)
	}
	for {
		r := f.do(t, ctx, "GET", "/items/7", nil)
		if r.status == 200 && string(r.body) == `{"item":"7"}` {
			break
		}
		// Between the old route's removal and the new one's install (one
		// step of the engine, not atomic in the route table) a request may
		// see 404.
		select {
		case <-ctx.Done():
			t.Fatalf("the new route was never served; last answer %s", r)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestMiddlewareAndCondition(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "middleware: [{function_id: 't::global', phase: preHandler, priority: 1}], cors: {allowed_origins: ['https://ok.example']}")
	w, _ := f.connect(t, ctx, "http-mw")
	var handled atomic.Int64
	must(t, w.RegisterFunction("t::h", func(ctx context.Context, in json.RawMessage) (any, error) {
		handled.Add(1)
		return "handled", nil
	}))
	type mwIn struct {
		Phase   string `json:"phase"`
		Request struct {
			Headers     map[string]string `json:"headers"`
			QueryParams map[string]string `json:"query_params"`
		} `json:"request"`
	}
	must(t, w.RegisterFunction("t::global", sdk.Typed(func(ctx context.Context, in mwIn) (any, error) {
		if in.Phase != "preHandler" {
			return nil, fmt.Errorf("phase %q", in.Phase)
		}
		if in.Request.Headers["x-block"] != "" {
			return map[string]any{"action": "respond", "response": map[string]any{"status_code": 403, "body": map[string]any{"blocked": true}}}, nil
		}
		return map[string]any{"action": "continue"}, nil
	})))
	must(t, w.RegisterFunction("t::route_mw", sdk.Typed(func(ctx context.Context, in mwIn) (any, error) {
		if in.Request.QueryParams["fail"] != "" {
			return nil, sdk.Errorf("MW_FAILED", "route middleware failed")
		}
		return map[string]any{"action": "continue"}, nil
	})))
	must(t, w.RegisterFunction("t::cond", sdk.Typed(func(ctx context.Context, in struct {
		QueryParams map[string]string `json:"query_params"`
	}) (bool, error) {
		return in.QueryParams["skip"] == "", nil
	})))
	route(w, t, "t::h", "GET", "guarded", map[string]any{"middleware_function_ids": []string{"t::route_mw"}, "condition_function_id": "t::cond"})
	f.waitStatus(t, ctx, "GET", "/guarded", 200)

	before := handled.Load()
	r := f.do(t, ctx, "GET", "/guarded", nil, "X-Block: 1")
	if r.status != 403 || string(r.body) != `{"blocked":true}` {
		t.Errorf("global middleware respond: %s", r)
	}
	assertEnvelope(t, f.do(t, ctx, "GET", "/guarded?fail=1", nil), 500, "MW_FAILED", true)
	r = f.do(t, ctx, "GET", "/guarded?skip=1", nil)
	assertEnvelope(t, r, 422, "CONDITION_NOT_MET", false)
	if r.json(t)["skipped"] != true {
		t.Errorf("422 without skipped: true: %s", r.body)
	}
	if got := handled.Load() - before; got != 0 {
		t.Errorf("handler ran %d times for requests middleware or condition stopped", got)
	}

	// Configured CORS: only the listed origin.
	r = f.do(t, ctx, "OPTIONS", "/guarded", nil, "Origin: https://ok.example", "Access-Control-Request-Method: GET")
	if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://ok.example" {
		t.Errorf("preflight from a listed origin: %s", r)
	}
	r = f.do(t, ctx, "GET", "/guarded", nil, "Origin: https://evil.example")
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("request from an unlisted origin: %s", r)
	}
}

func TestStopWithRequestInFlight(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "")
	w, _ := f.connect(t, ctx, "http-stop")
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the worker closes
	must(t, w.RegisterFunction("t::hang", func(ctx context.Context, in json.RawMessage) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}))
	must(t, w.RegisterFunction("t::ok", func(ctx context.Context, in json.RawMessage) (any, error) { return "ok", nil }))
	route(w, t, "t::hang", "GET", "hang", nil)
	// The engine handles a worker's frames in order: once /ping answers,
	// /hang is registered too.
	route(w, t, "t::ok", "GET", "ping", nil)
	f.waitStatus(t, ctx, "GET", "/ping", 200)
	done := make(chan error, 1)
	// Exits when the request ends (the module's Stop cuts it).
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", f.base+"/hang", nil)
		resp, err := f.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("request never reached the function")
	}
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.mod.Stop(sctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("Stop with a request in flight = %v after %v, want a deadline error soon after 200ms", err, time.Since(start))
	}
	<-done
	if err := f.mod.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	cases := []struct{ config, err string }{
		{"port: 70000", "port 70000"},
		{"default_timeout: 0", "default_timeout"},
		{"body_limit: -1", "body_limit"},
		{"concurrency_request_limit: 0", "concurrency_request_limit"},
		{"cors: {allowed_methods: ['GE T']}", "cors.allowed_methods[0]"},
		{"middleware: [{phase: preHandler}]", "middleware[0].function_id"},
		{"middleware: [{function_id: x, phase: postHandler}]", "postHandler"},
		{"bogus: 1", "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.config, func(t *testing.T) {
			ctx := enginetest.Context(t)
			entry := tc.config
			if !strings.HasPrefix(entry, "port:") {
				entry = "port: 0, " + entry
			}
			yaml := "engine: {port: 0}\nmodules:\n  - class: iii-http\n    config: {" + entry + "}\n"
			err := enginetest.TryStart(ctx, yaml)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("config {%s}: error %v, want one containing %q", tc.config, err, tc.err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	var xv, yv any
	json.Unmarshal(x, &xv)
	json.Unmarshal(y, &yv)
	x, _ = json.Marshal(xv)
	y, _ = json.Marshal(yv)
	return bytes.Equal(x, y)
}

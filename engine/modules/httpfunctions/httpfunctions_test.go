package httpfunctions_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/modules/httpfunctions"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const permissive = `
engine: {host: 127.0.0.1, port: 0}
modules:
  - class: iii-http-functions
    config:
      security: {require_https: false, block_private_ips: false}
`

// register sends a registerfunction with an invocation block and waits
// (a ping round trip) until the engine has processed it.
func register(w *enginetest.Worker, id string, inv map[string]any) {
	w.Send(map[string]any{"type": "registerfunction", "id": id, "invocation": inv})
	w.Quiet()
}

// call invokes id and returns the invocationresult.
func call(w *enginetest.Worker, id string, data any) map[string]any {
	return w.Call(id, data, uuid.NewString())
}

func errOf(m map[string]any) (code, msg string) {
	e, _ := m["error"].(map[string]any)
	code, _ = e["code"].(string)
	msg, _ = e["message"].(string)
	return
}

// upstream is the HTTP endpoint the functions call.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, r)
		u.body = append(u.body, string(b))
		u.mu.Unlock()
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "got": json.RawMessage(b)})
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/invalid":
			w.Write([]byte("not-json"))
		case "/error":
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`{"error":{"code":"UPSTREAM_ERROR","message":"upstream failed"}}`))
		case "/plain-error":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/redirect":
			http.Redirect(w, r, "/echo", http.StatusFound)
		case "/slow":
			<-r.Context().Done()
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last(t *testing.T) (*http.Request, string) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("upstream got no request")
	}
	return u.reqs[len(u.reqs)-1], u.body[len(u.body)-1]
}

func TestHTTPFunctions(t *testing.T) {
	ctx := enginetest.Context(t)
	up := newUpstream(t)
	srv := enginetest.Start(t, ctx, permissive)
	w := enginetest.Dial(t, srv.URL())
	t.Setenv("HF_TEST_TOKEN", "tok-1")
	t.Setenv("HF_TEST_KEY", "key-1")
	t.Setenv("HF_TEST_SECRET", "sec-1")
	fns := map[string]map[string]any{
		"hf::echo":     {"url": up.URL + "/echo", "headers": map[string]string{"x-custom": "v"}},
		"hf::get":      {"url": up.URL + "/echo", "method": "GET"},
		"hf::empty":    {"url": up.URL + "/empty"},
		"hf::invalid":  {"url": up.URL + "/invalid"},
		"hf::error":    {"url": up.URL + "/error"},
		"hf::plain":    {"url": up.URL + "/plain-error"},
		"hf::redirect": {"url": up.URL + "/redirect"},
		"hf::slow":     {"url": up.URL + "/slow", "timeout_ms": 200},
		"hf::bearer":   {"url": up.URL + "/echo", "auth": map[string]any{"type": "bearer", "token_key": "HF_TEST_TOKEN"}},
		"hf::apikey":   {"url": up.URL + "/echo", "auth": map[string]any{"type": "api_key", "header": "X-Key", "value_key": "HF_TEST_KEY"}},
		"hf::hmac":     {"url": up.URL + "/echo", "auth": map[string]any{"type": "hmac", "secret_key": "HF_TEST_SECRET"}},
		"hf::noenv":    {"url": up.URL + "/echo", "auth": map[string]any{"type": "bearer", "token_key": "HF_TEST_UNSET_VARIABLE"}},
		"hf::badauth":  {"url": up.URL + "/echo", "auth": map[string]any{"type": "basic"}},
	}
	for id, inv := range fns {
		register(w, id, inv)
	}

	res := call(w, "hf::echo", map[string]any{"n": 1})
	r, body := up.last(t)
	if got, _ := res["result"].(map[string]any); got["method"] != "POST" || got["got"].(map[string]any)["n"] != 1.0 {
		t.Errorf("echo result %v", res)
	}
	if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("x-iii-Function-Path") != "hf::echo" ||
		r.Header.Get("x-iii-Invocation-ID") == "" || r.Header.Get("x-iii-Timestamp") == "" || r.Header.Get("x-custom") != "v" ||
		r.Header.Get("traceparent") == "" {
		t.Errorf("request headers %v", r.Header)
	}
	if !strings.Contains(body, `"n":1`) {
		t.Errorf("request body %s", body)
	}
	if res := call(w, "hf::get", nil); res["result"].(map[string]any)["method"] != "GET" {
		t.Errorf("GET: %v", res)
	}
	if res := call(w, "hf::empty", nil); res["result"] != nil || res["error"] != nil {
		t.Errorf("empty 204: %v", res)
	}
	if res := call(w, "hf::redirect", nil); res["error"] != nil {
		t.Errorf("redirect (not followed, no result): %v", res)
	}
	for id, want := range map[string][2]string{
		"hf::invalid": {"invalid_response", "not JSON"},
		"hf::error":   {"UPSTREAM_ERROR", "upstream failed"},
		"hf::plain":   {"http_error", "HTTP 500"},
		"hf::slow":    {"http_request_failed", "within 200ms"},
		"hf::noenv":   {"missing_env_var", "HF_TEST_UNSET_VARIABLE"},
		"hf::badauth": {"function_not_found", "invocation.auth"},
	} {
		start := time.Now()
		code, msg := errOf(call(w, id, map[string]any{}))
		if code != want[0] || !strings.Contains(msg, want[1]) {
			t.Errorf("%s: error %s %q, want %s containing %q", id, code, msg, want[0], want[1])
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s took %v", id, d)
		}
	}

	call(w, "hf::bearer", map[string]any{})
	if r, _ := up.last(t); r.Header.Get("Authorization") != "Bearer tok-1" {
		t.Errorf("bearer: Authorization %q", r.Header.Get("Authorization"))
	}
	call(w, "hf::apikey", map[string]any{})
	if r, _ := up.last(t); r.Header.Get("X-Key") != "key-1" {
		t.Errorf("api_key: X-Key %q", r.Header.Get("X-Key"))
	}
	call(w, "hf::hmac", map[string]any{"a": "b"})
	r, body = up.last(t)
	if sig := r.Header.Get("x-iii-Signature"); sig == "" || sig != httpfunctions.Sign([]byte(body), "sec-1", r.Header.Get("x-iii-Timestamp")) {
		t.Errorf("hmac: signature %q over %s", sig, body)
	}

	// unregisterfunction removes one.
	w.Send(map[string]any{"type": "unregisterfunction", "id": "hf::get"})
	if code, _ := errOf(call(w, "hf::get", nil)); code != "function_not_found" {
		t.Errorf("hf::get after unregisterfunction: %s", code)
	}
	delete(fns, "hf::get")

	// The functions are listed as the worker's, and go when it does.
	info := srv.Engine().Snapshot()
	found := false
	for _, f := range info.Functions {
		if f.ID == "hf::echo" {
			found = len(f.WorkerIDs) == 1
		}
	}
	if !found {
		t.Fatalf("hf::echo not listed with its worker: %+v", info.Functions)
	}
	w.Conn.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for left := len(fns); left > 0; {
		left = 0
		for _, f := range srv.Engine().Snapshot().Functions {
			if strings.HasPrefix(f.ID, "hf::") {
				left++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d HTTP functions left after their worker disconnected", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestURLPolicy(t *testing.T) {
	ctx := enginetest.Context(t)
	up := newUpstream(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "http://"))
	for _, c := range []struct {
		name, security, url, want string
	}{
		{"https required by default", "", up.URL + "/echo", "HTTPS is required"},
		{"loopback address", "{require_https: false}", up.URL + "/echo", "private"},
		{"name resolving to loopback", "{require_https: false}", "http://localhost:" + port + "/echo", "private"},
		{"not in allowlist", "{require_https: false, block_private_ips: false, url_allowlist: ['*.example.com']}", up.URL + "/echo", "url_allowlist"},
	} {
		t.Run(c.name, func(t *testing.T) {
			yaml := "engine: {host: 127.0.0.1, port: 0}\nmodules:\n  - class: HttpFunctionsModule\n"
			if c.security != "" {
				yaml += "    config: {security: " + c.security + "}\n"
			}
			srv := enginetest.Start(t, ctx, yaml)
			w := enginetest.Dial(t, srv.URL())
			register(w, "hf::x", map[string]any{"url": c.url})
			code, msg := errOf(call(w, "hf::x", map[string]any{}))
			if code != "url_validation_failed" || !strings.Contains(msg, c.want) {
				t.Errorf("error %s %q, want url_validation_failed containing %q", code, msg, c.want)
			}
		})
	}
	if up.reqs != nil {
		t.Errorf("a refused URL was requested: %v", up.reqs[0].URL)
	}
}

func TestWithoutModuleIgnored(t *testing.T) {
	ctx := enginetest.Context(t)
	srv := enginetest.Start(t, ctx, "engine: {host: 127.0.0.1, port: 0}\nmodules: []\n")
	w := enginetest.Dial(t, srv.URL())
	register(w, "hf::x", map[string]any{"url": "https://example.com/"})
	code, msg := errOf(call(w, "hf::x", map[string]any{}))
	if code != "function_not_found" || !strings.Contains(msg, "iii-http-functions module is not loaded") {
		t.Errorf("error %s %q", code, msg)
	}
}

func TestNonPublic(t *testing.T) {
	for ip, want := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true, "169.254.169.254": true,
		"0.0.0.0": true, "255.255.255.255": true, "100.64.0.1": true, "::1": true, "fc00::1": true, "fe80::1": true,
		"::ffff:127.0.0.1": true, "::ffff:169.254.169.254": true, "192.0.2.1": true,
		"8.8.8.8": false, "1.1.1.1": false, "2606:4700::1111": false,
	} {
		if got := httpfunctions.NonPublic(netip.MustParseAddr(ip)); got != want {
			t.Errorf("NonPublic(%s) = %v, want %v", ip, got, want)
		}
	}
}

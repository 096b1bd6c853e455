package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMapResponse(t *testing.T) {
	cases := []struct {
		name    string
		result  string
		status  int
		headers map[string][]string // exact header set
		body    string
		err     string
	}{
		{"no result", ``, 200, map[string][]string{"Content-Type": {jsonType}}, `{}`, ""},
		{"null result", `null`, 200, map[string][]string{"Content-Type": {jsonType}}, `{}`, ""},
		{"defaults", `{"status_code":201}`, 201, map[string][]string{"Content-Type": {jsonType}}, `{}`, ""},
		{"json body", `{"body":{"ok":true}}`, 200, map[string][]string{"Content-Type": {jsonType}}, `{"ok":true}`, ""},
		{"headers object", `{"status_code":202,"headers":{"X-Foo":"bar","x-num":5,"x-multi":["a","b"],"x-null":null},"body":[1,2]}`,
			202, map[string][]string{"Content-Type": {jsonType}, "X-Foo": {"bar"}, "X-Num": {"5"}, "X-Multi": {"a", "b"}}, `[1,2]`, ""},
		{"headers array", `{"headers":["X-A: 1","x-b:two words ","X-A: 2"],"body":"s"}`,
			200, map[string][]string{"Content-Type": {jsonType}, "X-A": {"1", "2"}, "X-B": {"two words"}}, `"s"`, ""},
		{"string body with content-type is raw", `{"headers":{"Content-Type":"text/plain"},"body":"hi\nthere"}`,
			200, map[string][]string{"Content-Type": {"text/plain"}}, "hi\nthere", ""},
		{"string body with json content-type is raw too", `{"headers":{"content-type":"application/json"},"body":"{\"a\":1}"}`,
			200, map[string][]string{"Content-Type": {jsonType}}, `{"a":1}`, ""},
		{"object body with non-json content-type is json text", `{"headers":["Content-Type: text/plain"],"body":{"a":1}}`,
			200, map[string][]string{"Content-Type": {"text/plain"}}, `{"a":1}`, ""},
		{"null body is empty", `{"status_code":204,"body":null}`, 204, map[string][]string{}, ``, ""},
		{"null body with content-type", `{"headers":{"content-type":"text/html"},"body":null}`, 200, map[string][]string{"Content-Type": {"text/html"}}, ``, ""},
		{"string body without content-type is json", `{"body":"hello"}`, 200, map[string][]string{"Content-Type": {jsonType}}, `"hello"`, ""},
		{"managed headers dropped", `{"headers":{"Content-Length":"99","Connection":"close","Transfer-Encoding":"chunked","X-Ok":"1"},"body":{}}`,
			200, map[string][]string{"Content-Type": {jsonType}, "X-Ok": {"1"}}, `{}`, ""},
		{"integral float status", `{"status_code":404.0}`, 404, map[string][]string{"Content-Type": {jsonType}}, `{}`, ""},
		{"null status", `{"status_code":null,"body":1}`, 200, map[string][]string{"Content-Type": {jsonType}}, `1`, ""},
		// Not a response object: the result is the body (see mapResponse).
		{"plain object", `{"id":7,"name":"x"}`, 200, map[string][]string{"Content-Type": {jsonType}}, `{"id":7,"name":"x"}`, ""},
		{"array", ` [1,"a"]`, 200, map[string][]string{"Content-Type": {jsonType}}, `[1,"a"]`, ""},
		{"string", `"ok"`, 200, map[string][]string{"Content-Type": {jsonType}}, `"ok"`, ""},
		{"number", `42`, 200, map[string][]string{"Content-Type": {jsonType}}, `42`, ""},
		{"bool", `false`, 200, map[string][]string{"Content-Type": {jsonType}}, `false`, ""},
		// Errors.
		{"status string", `{"status_code":"201"}`, 0, nil, "", `status_code "201"`},
		{"status fraction", `{"status_code":201.5}`, 0, nil, "", "status_code 201.5"},
		{"status 1xx", `{"status_code":101}`, 0, nil, "", "status_code 101"},
		{"status 600", `{"status_code":600}`, 0, nil, "", "status_code 600"},
		{"header line without colon", `{"headers":["X-A 1"]}`, 0, nil, "", `headers[0] "X-A 1"`},
		{"header array of numbers", `{"headers":[1]}`, 0, nil, "", "headers must be"},
		{"headers string", `{"headers":"X-A: 1"}`, 0, nil, "", "headers must be"},
		{"bad header name", `{"headers":{"X A":"1"}}`, 0, nil, "", `header name "X A"`},
		{"header value newline", `{"headers":{"X-A":"1\r\nSet-Cookie: x"}}`, 0, nil, "", "control character"},
		{"header value object", `{"headers":{"X-A":{"b":1}}}`, 0, nil, "", `header "X-A"`},
		{"invalid json", `{"status_code":`, 0, nil, "", "not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := mapResponse(json.RawMessage(tc.result))
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrHTTPResponse) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("mapResponse(%s) error = %v, want ErrHTTPResponse containing %q", tc.result, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("mapResponse(%s): %v", tc.result, err)
			}
			if resp.status != tc.status || string(resp.body) != tc.body {
				t.Errorf("mapResponse(%s) = %d %q, want %d %q", tc.result, resp.status, resp.body, tc.status, tc.body)
			}
			if len(resp.header) != len(tc.headers) {
				t.Errorf("mapResponse(%s) headers %v, want %v", tc.result, resp.header, tc.headers)
			}
			for k, want := range tc.headers {
				if got := resp.header[k]; strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("mapResponse(%s) header %s = %q, want %q", tc.result, k, got, want)
				}
			}
		})
	}
}

func TestErrorResponse(t *testing.T) {
	for _, tc := range []struct {
		status int
		withID bool
	}{{404, false}, {401, false}, {500, true}, {504, true}} {
		resp, id := errorResponse(tc.status, "CODE", "msg")
		var env struct {
			Error map[string]string `json:"error"`
		}
		if err := json.Unmarshal(resp.body, &env); err != nil {
			t.Fatalf("status %d: body %s: %v", tc.status, resp.body, err)
		}
		if env.Error["code"] != "CODE" || env.Error["message"] != "msg" || resp.header.Get("Content-Type") != jsonType {
			t.Errorf("status %d: envelope %s", tc.status, resp.body)
		}
		if got := env.Error["error_id"]; (got != "") != tc.withID || got != id || (tc.withID && len(id) != 16) {
			t.Errorf("status %d: error_id %q (returned %q), want present=%v, 16 hex", tc.status, got, id, tc.withID)
		}
	}
}

func TestRequestObject(t *testing.T) {
	rt := mustRoute(t, "t", "POST", "/users/:id")
	cases := []struct {
		name, contentType, body, wantBody string
	}{
		{"json", "application/json", `{"name":"x"}`, `{"name":"x"}`},
		{"json with charset", "application/json; charset=utf-8", `[1]`, `[1]`},
		{"invalid json", "application/json", `{"name":`, `null`},
		{"not json", "text/plain", `{"name":"x"}`, `null`},
		{"no content type", "", `{"a":1}`, `null`},
		{"empty", "application/json", ``, `null`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://example.com/users/42?page=1&page=2&q=a%20b", strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			r.Header.Add("X-Multi", "one")
			r.Header.Add("X-Multi", "two")
			segs, _ := splitPath(r.URL.EscapedPath())
			got, err := json.Marshal(newRequestObject(r, rt, segs, []byte(tc.body)))
			if err != nil {
				t.Fatal(err)
			}
			ct := ""
			if tc.contentType != "" {
				ct = `"content-type":` + string(mustJSON(t, tc.contentType)) + `,`
			}
			want := `{"query_params":{"page":"2","q":"a b"},"path_params":{"id":"42"},` +
				`"headers":{` + ct + `"host":"example.com","x-multi":"two"},"path":"users/:id","method":"POST",` +
				`"body":` + tc.wantBody + `,"trigger":{"type":"http","path":"users/:id","method":"POST"}}`
			if string(got) != want {
				t.Errorf("request object\n got  %s\n want %s", got, want)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAuthenticator(t *testing.T) {
	env := map[string]string{"TOKEN": "s3cret", "EMPTY": ""}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := []struct {
		name    string
		auth    authConfig
		err     string
		headers map[string]string
		allow   bool
	}{
		{"bearer ok", authConfig{Type: "bearer", TokenKey: "TOKEN"}, "", map[string]string{"Authorization": "Bearer s3cret"}, true},
		{"bearer scheme any case", authConfig{Type: "Bearer", TokenKey: "TOKEN"}, "", map[string]string{"Authorization": "bearer s3cret"}, true},
		{"bearer wrong", authConfig{Type: "bearer", TokenKey: "TOKEN"}, "", map[string]string{"Authorization": "Bearer s3cre"}, false},
		{"bearer missing", authConfig{Type: "bearer", TokenKey: "TOKEN"}, "", nil, false},
		{"bearer basic scheme", authConfig{Type: "bearer", TokenKey: "TOKEN"}, "", map[string]string{"Authorization": "Basic s3cret"}, false},
		{"api key ok", authConfig{Type: "api_key", Header: "x-api-key", ValueKey: "TOKEN"}, "", map[string]string{"X-Api-Key": "s3cret"}, true},
		{"api key wrong header", authConfig{Type: "api_key", Header: "X-Key", ValueKey: "TOKEN"}, "", map[string]string{"Authorization": "s3cret"}, false},
		{"api key wrong value", authConfig{Type: "api_key", Header: "X-Key", ValueKey: "TOKEN"}, "", map[string]string{"X-Key": "S3CRET"}, false},
		{"unset env", authConfig{Type: "bearer", TokenKey: "NOPE"}, "environment variable NOPE, which is not set", nil, false},
		{"empty env", authConfig{Type: "api_key", Header: "X-Key", ValueKey: "EMPTY"}, "EMPTY, which is empty", nil, false},
		{"no token_key", authConfig{Type: "bearer"}, "needs auth.token_key", nil, false},
		{"no header", authConfig{Type: "api_key", ValueKey: "TOKEN"}, "needs auth.header", nil, false},
		{"bad header", authConfig{Type: "api_key", Header: "X Key", ValueKey: "TOKEN"}, "not a valid header name", nil, false},
		{"hmac", authConfig{Type: "hmac"}, `auth.type "hmac" is not bearer or api_key`, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := newAuthenticator(tc.auth, getenv)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("newAuthenticator(%+v) error = %v, want %q", tc.auth, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			for k, v := range tc.headers {
				h.Set(k, v)
			}
			if got := a.allow(h); got != tc.allow {
				t.Errorf("allow(%v) = %v, want %v", tc.headers, got, tc.allow)
			}
		})
	}
}

func TestCORS(t *testing.T) {
	cases := []struct {
		name    string
		cfg     *CORS
		method  string
		headers map[string]string
		handled bool
		want    map[string]string // "" = header absent
	}{
		{"permissive simple", nil, "GET", map[string]string{"Origin": "https://a.example"}, false,
			map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "*"}},
		{"permissive preflight", nil, "OPTIONS", map[string]string{"Origin": "https://a.example",
			"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-a, content-type"}, true,
			map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "x-a, content-type",
				"Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS"}},
		{"no origin", nil, "GET", nil, false, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"plain OPTIONS is routed", nil, "OPTIONS", map[string]string{"Origin": "https://a.example"}, false,
			map[string]string{"Access-Control-Allow-Origin": "*"}},
		{"listed origin", &CORS{AllowedOrigins: []string{"https://a.example/"}, AllowedMethods: []string{"get", "post"}}, "OPTIONS",
			map[string]string{"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}, true,
			map[string]string{"Access-Control-Allow-Origin": "https://a.example", "Access-Control-Allow-Methods": "GET, POST",
				"Vary": "Origin", "Access-Control-Expose-Headers": ""}},
		{"unlisted origin", &CORS{AllowedOrigins: []string{"https://a.example"}}, "OPTIONS",
			map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, true,
			map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": ""}},
		{"unlisted origin simple", &CORS{AllowedOrigins: []string{"https://a.example"}}, "GET",
			map[string]string{"Origin": "https://evil.example"}, false,
			map[string]string{"Access-Control-Allow-Origin": ""}},
		{"wildcard origin", &CORS{AllowedOrigins: []string{"*"}}, "GET",
			map[string]string{"Origin": "https://b.example"}, false,
			map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newCORSPolicy(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(tc.method, "/x", nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			if got := p.apply(w, r); got != tc.handled {
				t.Fatalf("apply handled = %v, want %v", got, tc.handled)
			}
			if tc.handled && w.Code != http.StatusNoContent {
				t.Errorf("preflight status %d, want 204", w.Code)
			}
			for k, want := range tc.want {
				if got := w.Header().Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
	if _, err := newCORSPolicy(&CORS{AllowedMethods: []string{"GE T"}}); err == nil {
		t.Error("a bad method in cors.allowed_methods was accepted")
	}
}

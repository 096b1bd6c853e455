package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
)

func noEnv(string) (string, bool) { return "", false }

func mustRoute(t *testing.T, id, method, path string) *route {
	t.Helper()
	cfg, _ := json.Marshal(map[string]string{"api_path": path, "http_method": method})
	r, err := parseRoute(id, "fn::"+id, "default", cfg, nil, noEnv)
	if err != nil {
		t.Fatalf("parseRoute(%s %s): %v", method, path, err)
	}
	return r
}

func TestParseRoute(t *testing.T) {
	cases := []struct {
		config      string
		wantMethod  string
		wantPattern string
		err         string
	}{
		{`{"api_path":"users/:id"}`, "GET", "users/:id", ""},
		{`{"api_path":"/users/:id/","http_method":"post"}`, "POST", "users/:id", ""},
		{`{"api_path":"/","http_method":"Delete"}`, "DELETE", "", ""},
		{`{"api_path":"a/{id}/b","http_method":"OPTIONS"}`, "OPTIONS", "a/{id}/b", ""},
		{`{"api_path":"x","http_method":"head","extra":1}`, "HEAD", "x", ""},
		{`{"api_path":"x","http_method":"patch"}`, "PATCH", "x", ""},
		{`{"api_path":"x","http_method":"put"}`, "PUT", "x", ""},
		{`{}`, "", "", "api_path is required"},
		{`null`, "", "", "api_path is required"},
		{``, "", "", "api_path is required"},
		{`{"api_path":""}`, "", "", "api_path is required"},
		{`{"api_path":"x","http_method":"TRACE"}`, "", "", `http_method "TRACE" is not one of GET POST PUT DELETE PATCH HEAD OPTIONS`},
		{`{"api_path":"a//b"}`, "", "", "empty segment"},
		{`{"api_path":"a/:/b"}`, "", "", "parameter without a name"},
		{`{"api_path":"a/{}/b"}`, "", "", "parameter without a name"},
		{`{"api_path":"a/:id/:id"}`, "", "", `names parameter "id" twice`},
		{`{"api_path":7}`, "", "", "invalid config"},
		{`["x"]`, "", "", "invalid config"},
		{`{"api_path":"x","middleware_function_ids":["a",""]}`, "", "", "middleware_function_ids[1] is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.config, func(t *testing.T) {
			r, err := parseRoute("t1", "fn", "default", json.RawMessage(tc.config), nil, noEnv)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrHTTPConfig) {
					t.Fatalf("parseRoute(%s) error = %v, want ErrHTTPConfig containing %q", tc.config, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRoute(%s): %v", tc.config, err)
			}
			if r.method != tc.wantMethod || r.pattern != tc.wantPattern {
				t.Errorf("parseRoute(%s) = %s %q, want %s %q", tc.config, r.method, r.pattern, tc.wantMethod, tc.wantPattern)
			}
		})
	}
}

func TestRouteConflicts(t *testing.T) {
	cases := []struct {
		name     string
		existing [][2]string // method, path
		add      [2]string
		conflict bool
	}{
		{"same path", [][2]string{{"GET", "users/:id"}}, [2]string{"GET", "/users/:id"}, true},
		{"param names ignored", [][2]string{{"GET", "users/:id"}}, [2]string{"get", "users/:name"}, true},
		{"brace and colon params", [][2]string{{"GET", "users/{id}/posts"}}, [2]string{"GET", "users/:uid/posts/"}, true},
		{"other method", [][2]string{{"GET", "users/:id"}}, [2]string{"POST", "users/:id"}, false},
		{"literal vs param", [][2]string{{"GET", "users/:id"}}, [2]string{"GET", "users/me"}, false},
		{"longer path", [][2]string{{"GET", "users/:id"}}, [2]string{"GET", "users/:id/posts"}, false},
		{"root twice", [][2]string{{"GET", "/"}}, [2]string{"GET", "///"}, true},
		{"different literal", [][2]string{{"GET", "a/b"}}, [2]string{"GET", "a/c"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable()
			for i, e := range tc.existing {
				if err := tb.add(mustRoute(t, fmt.Sprint("old", i), e[0], e[1])); err != nil {
					t.Fatalf("add %v: %v", e, err)
				}
			}
			err := tb.add(mustRoute(t, "new", tc.add[0], tc.add[1]))
			if got := err != nil; got != tc.conflict {
				t.Fatalf("add %v over %v: error %v, want conflict=%v", tc.add, tc.existing, err, tc.conflict)
			}
			if err != nil {
				if !errors.Is(err, ErrHTTPRouteConflict) || !strings.Contains(err.Error(), "trigger old0") ||
					!strings.Contains(err.Error(), "fn::old0") || !strings.HasPrefix(err.Error(), "Route '") ||
					!strings.Contains(err.Error(), "' conflicts with already-registered route '") {
					t.Errorf("conflict error %q should wrap ErrHTTPRouteConflict, use iii's wording (Route '...' conflicts with already-registered route '...') and name trigger old0 and fn::old0", err)
				}
				if tb.len() != len(tc.existing) {
					t.Errorf("after a refused add, %d routes, want %d", tb.len(), len(tc.existing))
				}
			}
		})
	}
}

func TestRouteReplaceAndRemove(t *testing.T) {
	tb := newTable()
	if err := tb.add(mustRoute(t, "a", "GET", "users/:id")); err != nil {
		t.Fatal(err)
	}
	// Same trigger id: replaced, no conflict with itself.
	if err := tb.add(mustRoute(t, "a", "GET", "users/:name")); err != nil {
		t.Fatalf("re-register same id: %v", err)
	}
	if r := tb.match("GET", []string{"users", "7"}); r == nil || r.pattern != "users/:name" {
		t.Fatalf("after replace, match = %v, want users/:name", r)
	}
	// Moving the id to another path frees the old one.
	if err := tb.add(mustRoute(t, "a", "GET", "people/:id")); err != nil {
		t.Fatal(err)
	}
	if r := tb.match("GET", []string{"users", "7"}); r != nil {
		t.Errorf("old path still matches %v after the id moved", r)
	}
	if err := tb.add(mustRoute(t, "b", "GET", "users/:id")); err != nil {
		t.Errorf("old shape should be free: %v", err)
	}
	if !tb.remove("a") || tb.remove("a") {
		t.Error("remove a: want true then false")
	}
	if !tb.remove("b") {
		t.Error("remove b: want true")
	}
	if !tb.root.empty() || tb.len() != 0 {
		t.Errorf("table not empty after removing everything: %+v", tb.root)
	}
}

func TestRouteMatch(t *testing.T) {
	tb := newTable()
	for _, r := range [][3]string{
		{"users", "GET", "users/:id"},
		{"me", "GET", "users/me"},
		{"mepost", "POST", "users/me"},
		{"posts", "GET", "users/:uid/posts/:pid"},
		{"root", "GET", "/"},
		{"files", "GET", "files/:name"},
		{"opts", "OPTIONS", "users/:id"},
	} {
		if err := tb.add(mustRoute(t, r[0], r[1], r[2])); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		method, path string
		want         string // trigger id, "" for none
		params       map[string]string
	}{
		{"GET", "/users/42", "users", map[string]string{"id": "42"}},
		{"GET", "/users/42/", "users", map[string]string{"id": "42"}},
		{"GET", "/users/me", "me", map[string]string{}},
		{"POST", "/users/7", "", nil},
		{"POST", "/users/me", "mepost", map[string]string{}},
		{"HEAD", "/users/me", "me", map[string]string{}},
		{"OPTIONS", "/users/1", "opts", map[string]string{"id": "1"}},
		{"GET", "/users/me/posts/9", "posts", map[string]string{"uid": "me", "pid": "9"}},
		{"GET", "/", "root", map[string]string{}},
		{"GET", "", "root", map[string]string{}},
		{"GET", "/users", "", nil},
		{"GET", "/users//", "", nil},
		{"GET", "/nope", "", nil},
		{"GET", "/files/a%2Fb%20c", "files", map[string]string{"name": "a/b c"}},
		{"GET", "/files/%zz", "", nil},
		{"DELETE", "/users/1", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			segs, ok := splitPath(tc.path)
			var r *route
			if ok {
				r = tb.match(tc.method, segs)
			}
			got := ""
			if r != nil {
				got = r.triggerID
			}
			if got != tc.want {
				t.Fatalf("match(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
			}
			if r != nil {
				if p := r.pathParams(segs); !maps.Equal(p, tc.params) {
					t.Errorf("params of %s %s = %v, want %v", tc.method, tc.path, p, tc.params)
				}
			}
		})
	}
}

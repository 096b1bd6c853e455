package engine_test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"

	_ "github.com/iii-workbench/iii/engine/modules/observability" // an iii config.yaml starts it
)

// hostIn dials a worker of a 0.25 SDK that registers fns (with metadata,
// when given) and declares namespace ns ("" for none).
func hostIn(t *testing.T, url, name, ns string, fns map[string]any) *enginetest.Worker {
	t.Helper()
	w := enginetest.Dial(t, url)
	for id, meta := range fns {
		m := map[string]any{"type": "registerfunction", "id": id}
		if meta != nil {
			m["metadata"] = meta
		}
		w.Send(m)
	}
	data := map[string]any{"name": name, "runtime": "python", "features": []string{"large-messages.v1"}}
	if ns != "" {
		data["namespace"] = ns
	}
	w.Declare(data)
	return w
}

// TestRBACExposureByNamespace: an RBAC listener from an iii config.yaml
// whose expose_functions rules name namespaces, and auth results with
// namespace grants. A rule, a grant or an allowed_functions entry exposes
// a function in its namespace only (allowed_functions and a rule without
// a namespace: the default one); forbidden_functions holds everywhere.
func TestRBACExposureByNamespace(t *testing.T) {
	ctx := enginetest.ContextWithin(t, 30*time.Second)
	srv := enginetest.Start(t, ctx, `workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac:
        auth_function_id: test::auth
        on_trigger_registration_function_id: test::trigger-hook
        expose_functions:
          - match("pub::*")
          - match("engine::register_trigger")
          - match: "pub::*"
            namespace: orders
          - metadata: {public: true}
            namespace: billing
`)
	eng := srv.Engine()
	if err := eng.RegisterFunction("test", engine.Function{ID: "test::auth", Handler: func(_ context.Context, call *engine.Call) (json.RawMessage, error) {
		var in struct {
			Query map[string][]string `json:"query_params"`
		}
		json.Unmarshal(call.Data, &in)
		if slices.Contains(in.Query["role"], "scoped") {
			return json.RawMessage(`{"namespaces":{"orders":["svc::*","match(\"state::ge*\")"],"analytics":[]},
				"allowed_functions":["state::get"],"forbidden_functions":["pub::x"]}`), nil
		}
		return json.RawMessage(`{"allowed_functions":["state::get"]}`), nil
	}}); err != nil {
		t.Fatal(err)
	}
	hookNS := make(chan any, 16)
	if err := eng.RegisterFunction("test", engine.Function{ID: "test::trigger-hook", Handler: func(_ context.Context, call *engine.Call) (json.RawMessage, error) {
		var in map[string]any
		json.Unmarshal(call.Data, &in)
		hookNS <- in["namespace"]
		return json.RawMessage(`{}`), nil
	}}); err != nil {
		t.Fatal(err)
	}
	// The hosts connect to the listener without RBAC.
	public := map[string]any{"public": true}
	hd := hostIn(t, srv.URL(), "hd", "", map[string]any{"pub::x": nil, "state::get": nil, "meta::f": public})
	ho := hostIn(t, srv.URL(), "ho", "orders", map[string]any{"pub::x": nil, "state::get": nil, "svc::a": nil})
	hb := hostIn(t, srv.URL(), "hb", "billing", map[string]any{"pub::x": nil, "meta::f": public})
	rbacURL := "ws://" + srv.ListenerAddrs()[0]
	plain := enginetest.Dial(t, rbacURL)
	scoped := enginetest.Dial(t, rbacURL+"/?"+url.Values{"role": {"scoped"}}.Encode())

	for _, tc := range []struct {
		who    string
		caller *enginetest.Worker
		fn, ns string
		host   *enginetest.Worker // nil: refused with FORBIDDEN
		says   string             // in the refusal
	}{
		{"plain", plain, "pub::x", "", hd, ""},
		{"plain", plain, "pub::x", "default", hd, ""},
		{"plain", plain, "pub::x", "orders", ho, ""},
		// The default rule does not reach billing, nor does billing's
		// metadata rule match a function without that metadata.
		{"plain", plain, "pub::x", "billing", nil, "not allowed in namespace 'billing' (add to rbac.expose_functions with namespace: billing)"},
		// billing's metadata rule, on billing's function's metadata.
		{"plain", plain, "meta::f", "billing", hb, ""},
		{"plain", plain, "meta::f", "", nil, "not allowed (add to rbac.expose_functions)"},
		// allowed_functions answers in default only.
		{"plain", plain, "state::get", "", hd, ""},
		{"plain", plain, "state::get", "orders", nil, "namespace 'orders'"},
		{"plain", plain, "svc::a", "orders", nil, "namespace 'orders'"},
		// A grant for orders answers there, by pattern, bare or match("...").
		{"scoped", scoped, "svc::a", "orders", ho, ""},
		{"scoped", scoped, "state::get", "orders", ho, ""},
		{"scoped", scoped, "state::get", "", hd, ""},
		{"scoped", scoped, "svc::a", "billing", nil, "namespace 'billing'"},
		// forbidden_functions wins over the rule that exposes pub::x in orders.
		{"scoped", scoped, "pub::x", "orders", nil, "remove from rbac.forbidden_functions"},
		{"scoped", scoped, "pub::x", "", nil, "remove from rbac.forbidden_functions"},
	} {
		id := uuid.NewString()
		m := map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": tc.fn, "data": "hi"}
		if tc.ns != "" {
			m["namespace"] = tc.ns
		}
		tc.caller.Send(m)
		if tc.host != nil {
			if inv := tc.host.ServeOnce("ok", nil); inv["function_id"] != tc.fn {
				t.Errorf("%s calls %s in %q: host got %v", tc.who, tc.fn, tc.ns, inv)
			}
		}
		res := tc.caller.Expect("invocationresult")
		msg := errMessage(res)
		switch {
		case res["invocation_id"] != id:
			t.Fatalf("%s calls %s in %q: result %v of another call", tc.who, tc.fn, tc.ns, res)
		case tc.host != nil && res["result"] != "ok":
			t.Errorf("%s calls %s in %q: %v, want it served", tc.who, tc.fn, tc.ns, res)
		case tc.host == nil && (enginetest.ErrCode(res) != "FORBIDDEN" || !strings.Contains(msg, tc.says)):
			t.Errorf("%s calls %s in %q: %v, want FORBIDDEN saying %q", tc.who, tc.fn, tc.ns, res, tc.says)
		}
	}
	// Nothing reached a host it should not have.
	hd.Quiet()
	ho.Quiet()
	hb.Quiet()

	t.Run("infrastructure functions answer in every namespace", func(t *testing.T) {
		for _, ns := range []string{"", "orders", "elsewhere"} {
			m := map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "engine::baggage::get_all", "data": map[string]any{}}
			if ns != "" {
				m["namespace"] = ns
			}
			plain.Send(m)
			if res := plain.Expect("invocationresult"); res["error"] != nil {
				t.Errorf("engine::baggage::get_all in %q: %v", ns, res)
			}
		}
	})

	t.Run("a scoped session declares only its namespaces", func(t *testing.T) {
		declare := func(ns string) map[string]any {
			scoped.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "engine::workers::register",
				"data": map[string]any{"name": "s", "namespace": ns, "features": []string{"large-messages.v1"}}})
			return scoped.Expect("invocationresult")
		}
		res := declare("billing")
		msg := errMessage(res)
		if enginetest.ErrCode(res) != "FORBIDDEN" || msg != "namespace 'billing' not allowed for this session (permitted: analytics, orders)" {
			t.Errorf("declaring billing: %v", res)
		}
		if res := declare("analytics"); res["error"] != nil {
			t.Errorf("declaring analytics: %v", res)
		}
		for _, w := range eng.Snapshot().Workers {
			if w.ID == scoped.ID && w.Namespace != "analytics" {
				t.Errorf("the scoped worker lives in %q, want analytics", w.Namespace)
			}
		}
		// An unscoped session declares any namespace.
		other := enginetest.Dial(t, rbacURL)
		other.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "engine::workers::register",
			"data": map[string]any{"name": "o", "namespace": "anywhere"}})
		if res := other.Expect("invocationresult"); res["error"] != nil {
			t.Errorf("an unscoped session declaring a namespace: %v", res)
		}
	})

	t.Run("a trigger reaches only what a call may", func(t *testing.T) {
		plain.Register("mine::f")
		bind := func(id, fn, ns string) {
			m := map[string]any{"type": "registertrigger", "id": id, "trigger_type": "tt", "function_id": fn, "config": map[string]any{}}
			if ns != "" {
				m["namespace"] = ns
			}
			plain.Send(m)
		}
		// Refused: svc::a is not exposed in orders to this session.
		bind("t-svc", "svc::a", "orders")
		res := plain.Expect("triggerregistrationresult")
		if enginetest.ErrCode(res) != "trigger_registration_failed" ||
			errMessage(res) != "function 'svc::a' not allowed in namespace 'orders' (add to rbac.expose_functions with namespace: orders)" {
			t.Errorf("a binding to svc::a in orders: %v", res)
		}
		// Accepted (parked: nothing provides tt): exposed in orders, and the worker's own.
		bind("t-pub", "pub::x", "orders")
		bind("t-mine", "mine::f", "")
		plain.Quiet()
		got := map[string]string{}
		for _, tr := range eng.Snapshot().Triggers {
			got[tr.Namespace+"/"+tr.FunctionID] = tr.Type
		}
		if got["orders/pub::x"] != "tt" || got["default/mine::f"] != "tt" || got["orders/svc::a"] != "" {
			t.Errorf("bindings %v, want orders/pub::x and default/mine::f only", got)
		}
		// The hook saw each target's namespace (the refused one included:
		// the hook runs first).
		for _, want := range []string{"orders", "orders", "default"} {
			if ns := <-hookNS; ns != want {
				t.Errorf("trigger hook got namespace %v, want %s", ns, want)
			}
		}
		// engine::register_trigger applies the same rule.
		for _, tc := range []struct{ fn, ns, code string }{{"svc::a", "orders", "FORBIDDEN"}, {"pub::x", "orders", ""}} {
			res := plain.Call("engine::register_trigger", map[string]any{"trigger_type": "tt", "function_id": tc.fn,
				"namespace": tc.ns, "config": map[string]any{"n": 2}}, uuid.NewString())
			if enginetest.ErrCode(res) != tc.code || tc.code != "" && !strings.Contains(errMessage(res), "not allowed in namespace 'orders'") {
				t.Errorf("engine::register_trigger of %s in %s: %v, want code %q", tc.fn, tc.ns, res, tc.code)
			}
		}
	})
}

// errMessage is the error message of a result frame ("" when it has none).
func errMessage(frame map[string]any) string {
	e, _ := frame["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
)

// declared dials a worker of a 0.25 SDK: it replays its registrations,
// then declares its name, namespace ("" for none) and features.
func declared(t *testing.T, url, name, ns string, fns ...string) *rawWorker {
	t.Helper()
	w := dial(t, url)
	for _, fn := range fns {
		w.send(map[string]any{"type": "registerfunction", "id": fn})
	}
	// Not observe.v1: these tests do not read the observe frames (observe_test.go does).
	data := map[string]any{"name": name, "runtime": "python", "features": []string{"large-messages.v1"}}
	if ns != "" {
		data["namespace"] = ns
	}
	w.declare(data)
	return w
}

func (w *rawWorker) callNS(fn, ns string, data any) map[string]any {
	w.t.Helper()
	m := map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": fn, "data": data}
	if ns != "" {
		m["namespace"] = ns
	}
	w.send(m)
	return w.expect("invocationresult")
}

func TestNamespaces(t *testing.T) {
	te := startEngine(t, engine.Options{})
	orders := declared(t, te.url, "state", "orders", "state::get")
	billing := declared(t, te.url, "state", "billing", "state::get")
	plain := dial(t, te.url) // a 0.22 SDK: no declaration, default namespace
	plain.register("state::get")
	caller := dial(t, te.url)

	t.Run("calls resolve in the namespace they name", func(t *testing.T) {
		for _, tc := range []struct {
			ns   string
			host *rawWorker
		}{{"orders", orders}, {"billing", billing}, {"", plain}, {"default", plain}} {
			done := make(chan map[string]any, 1)
			go func() { done <- caller.callNS("state::get", tc.ns, tc.ns) }()
			inv := tc.host.serveOnce("from "+tc.ns, nil)
			res := <-done
			if res["result"] != "from "+tc.ns || inv["data"] != tc.ns {
				t.Errorf("namespace %q: got %v (the host saw %v)", tc.ns, res, inv)
			}
			if tc.host != plain && inv["namespace"] != tc.ns {
				t.Errorf("namespace %q: the 0.25 host was not told the namespace: %v", tc.ns, inv)
			}
			if tc.host == plain && inv["namespace"] != nil {
				t.Errorf("a 0.22 host got a namespace field: %v", inv)
			}
		}
		orders.quiet()
		billing.quiet()
		plain.quiet()
	})

	t.Run("a miss names the namespaces where the id is", func(t *testing.T) {
		res := caller.callNS("state::get", "analytics", nil)
		msg, _ := res["error"].(map[string]any)["message"].(string)
		if errCode(res) != "function_not_found" || !strings.Contains(msg, "namespace analytics") || !strings.Contains(msg, "billing, default, orders") {
			t.Errorf("miss in analytics: %v", res["error"])
		}
		res = caller.callNS("orders::only", "", nil)
		if msg, _ := res["error"].(map[string]any)["message"].(string); msg != "Function orders::only not found" {
			t.Errorf("miss in default: %v, want the message of before namespaces", res["error"])
		}
	})

	t.Run("engine functions answer from every namespace; listings show namespaces", func(t *testing.T) {
		res := result(t, caller.callNS("engine::functions::list", "orders", map[string]any{}))
		var got []string
		for _, f := range res["functions"].([]any) {
			m := f.(map[string]any)
			if m["function_id"] == "state::get" {
				got = append(got, m["namespace"].(string))
			}
		}
		if strings.Join(got, ",") != "billing,default,orders" {
			t.Errorf("state::get listed in namespaces %v, want billing, default, orders", got)
		}
		workers := result(t, caller.callNS("engine::workers::list", "", map[string]any{}))["workers"].([]any)
		byID := map[string]map[string]any{}
		for _, w := range workers {
			m := w.(map[string]any)
			byID[m["id"].(string)] = m
		}
		if byID[orders.id]["namespace"] != "orders" || byID[plain.id]["namespace"] != "default" {
			t.Errorf("workers list namespaces: orders %v, plain %v", byID[orders.id], byID[plain.id])
		}
	})

	t.Run("info resolves default first, strictly with a namespace, else reports ambiguity", func(t *testing.T) {
		info := result(t, caller.callNS("engine::functions::info", "", map[string]any{"function_id": "state::get"}))
		if info["namespace"] != "default" {
			t.Errorf("functions::info without namespace: %v, want the default entry", info)
		}
		info = result(t, caller.callNS("engine::functions::info", "", map[string]any{"function_id": "state::get", "namespace": "orders"}))
		if info["namespace"] != "orders" || info["worker_name"] != "state" {
			t.Errorf("functions::info in orders: %v", info)
		}
		res := caller.callNS("engine::workers::info", "", map[string]any{"name": "state"})
		if errCode(res) != "INVALID_ARGUMENTS" || !strings.Contains(res["error"].(map[string]any)["message"].(string), "billing, orders") {
			t.Errorf("workers::info of a name in two namespaces: %v, want an ambiguity naming them", res["error"])
		}
		w := result(t, caller.callNS("engine::workers::info", "", map[string]any{"name": "state", "namespace": "billing"}))
		if w["worker"].(map[string]any)["id"] != billing.id || len(w["functions"].([]any)) != 1 {
			t.Errorf("workers::info in billing: %v", w)
		}
	})

	t.Run("triggers fire in their namespace", func(t *testing.T) {
		orders.send(map[string]any{"type": "registertrigger", "id": "tr-ns", "trigger_type": engine.TriggerWorkersAvailable,
			"function_id": "state::get", "config": map[string]any{}, "namespace": "orders"})
		orders.quiet()
		dial(t, te.url) // fires engine::workers-available
		inv := orders.expect("invokefunction")
		if inv["function_id"] != "state::get" || inv["namespace"] != "orders" {
			t.Errorf("trigger call %v", inv)
		}
		plain.quiet() // the default namespace's state::get was not called
		trs := result(t, caller.callNS("engine::registered-triggers::list", "", map[string]any{"include_internal": true}))["registered_triggers"].([]any)
		for _, tr := range trs {
			if m := tr.(map[string]any); m["id"] == "tr-ns" && (m["function_id"] != "state::get" || m["namespace"] != "orders") {
				t.Errorf("listed trigger %v", m)
			}
		}
	})
}

func TestRegistrationRejected(t *testing.T) {
	t.Run("function conflict: refused for the newcomer only, the owner keeps serving", func(t *testing.T) {
		te := startEngine(t, engine.Options{})
		a := declared(t, te.url, "a", "orders", "orders::create")
		// b replays its registration before declaring, as the SDKs do: the
		// conflict is found when its declaration arrives.
		b := dial(t, te.url)
		b.send(map[string]any{"type": "registerfunction", "id": "orders::create"})
		b.send(map[string]any{"type": "registerfunction", "id": "orders::cancel"})
		b.send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
			"data": map[string]any{"name": "b", "namespace": "orders", "features": []string{"large-messages.v1"}}})
		rej := b.expect("registrationrejected")
		if rej["code"] != "FUNCTION_NAMESPACE_CONFLICT" || rej["namespace"] != "orders" || rej["function_id"] != "orders::create" || rej["owner_worker_id"] != a.id {
			t.Errorf("rejection %v", rej)
		}
		b.quiet() // still connected
		// A registration after the declaration is refused at once.
		c := declared(t, te.url, "c", "orders")
		c.send(map[string]any{"type": "registerfunction", "id": "orders::cancel"})
		if rej := c.expect("registrationrejected"); rej["function_id"] != "orders::cancel" || rej["owner_worker_id"] != b.id {
			t.Errorf("rejection after declaring: %v", rej)
		}
		caller := dial(t, te.url)
		for range 3 {
			done := make(chan map[string]any, 1)
			go func() { done <- caller.callNS("orders::create", "orders", 1) }()
			a.serveOnce("a", nil)
			if res := <-done; res["result"] != "a" {
				t.Fatalf("call went elsewhere: %v", res)
			}
		}
		b.quiet()
		// The same id in another namespace is no conflict.
		declared(t, te.url, "a", "billing", "orders::create").quiet()
	})

	t.Run("worker name conflict: refused and closed", func(t *testing.T) {
		te := startEngine(t, engine.Options{})
		a := declared(t, te.url, "state", "orders", "state::get")
		b := dial(t, te.url)
		b.send(map[string]any{"type": "registerfunction", "id": "state::put"})
		b.send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
			"data": map[string]any{"name": "state", "namespace": "orders", "features": []string{"large-messages.v1"}}})
		rej := b.expect("registrationrejected")
		if rej["code"] != "WORKER_NAMESPACE_CONFLICT" || rej["worker_name"] != "state" || rej["owner_worker_id"] != a.id || rej["namespace"] != "orders" {
			t.Errorf("rejection %v", rej)
		}
		if code := b.closed(5 * time.Second); code != websocket.StatusPolicyViolation {
			t.Errorf("close code %v, want 1008", code)
		}
		if res := dial(t, te.url).callNS("state::put", "orders", nil); errCode(res) != "function_not_found" {
			t.Errorf("the refused worker's function is served: %v", res)
		}
		declared(t, te.url, "state", "", "state::get").quiet() // another namespace: fine
	})

	t.Run("0.22 workers, a retiring owner and shared functions keep spreading", func(t *testing.T) {
		te := startEngine(t, engine.Options{})
		old1, old2 := dial(t, te.url), dial(t, te.url)
		old1.register("x::y")
		old2.register("x::y")
		old1.quiet()
		old2.quiet()

		a := declared(t, te.url, "api", "", "api::go")
		if err := te.SetRetiring(a.id, true); err != nil {
			t.Fatal(err)
		}
		b := declared(t, te.url, "api", "", "api::go") // a reload: no conflict
		b.quiet()
		a.quiet()
		if n := len(functionWorkers(te.Engine, "api::go")); n != 2 {
			t.Errorf("api::go served by %d workers during the reload, want 2", n)
		}

		te2 := startEngine(t, engine.Options{SharedFunctions: true})
		declared(t, te2.url, "r1", "", "shared::fn").quiet()
		declared(t, te2.url, "r2", "", "shared::fn").quiet()
		if n := len(functionWorkers(te2.Engine, "shared::fn")); n != 2 {
			t.Errorf("shared::fn served by %d workers with SharedFunctions, want 2", n)
		}
	})
}

func functionWorkers(e *engine.Engine, id string) []string {
	for _, f := range e.Snapshot().Functions {
		if f.ID == id {
			return f.WorkerIDs
		}
	}
	return nil
}

func TestCallerStamped(t *testing.T) {
	te := startEngine(t, engine.Options{})
	host := declared(t, te.url, "host", "", "who::called")
	oldHost := dial(t, te.url)
	oldHost.register("old::host")
	caller := declared(t, te.url, "the-caller", "")

	caller.send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "who::called", "data": nil,
		"caller": map[string]any{"function_id": "outer::fn", "invocation_id": "inv-1", "worker_id": "forged",
			"parent": map[string]any{"function_id": "outermost::fn", "parent": map[string]any{"function_id": "too-deep"}}}})
	inv := host.serveOnce(nil, nil)
	c, _ := inv["caller"].(map[string]any)
	p, _ := c["parent"].(map[string]any)
	if c["worker_id"] != caller.id || c["worker_name"] != "the-caller" || c["function_id"] != "outer::fn" || c["invocation_id"] != "inv-1" ||
		p["function_id"] != "outermost::fn" || p["parent"] != nil {
		t.Errorf("caller seen by the handler: %v", inv["caller"])
	}
	caller.expect("invocationresult")

	// A 0.22 SDK's frame is as before: no caller.
	caller.send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "old::host", "data": nil})
	if inv := oldHost.serveOnce(nil, nil); inv["caller"] != nil {
		t.Errorf("a 0.22 worker got a caller: %v", inv)
	}
	caller.expect("invocationresult")
}

package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// declared dials a worker of a 0.25 SDK: it replays its registrations,
// then declares its name, namespace ("" for none) and features.
func declared(t *testing.T, url, name, ns string, fns ...string) *enginetest.Worker {
	t.Helper()
	w := enginetest.Dial(t, url)
	for _, fn := range fns {
		w.Send(map[string]any{"type": "registerfunction", "id": fn})
	}
	// Not observe.v1: these tests do not read the observe frames (observe_test.go does).
	data := map[string]any{"name": name, "runtime": "python", "features": []string{"large-messages.v1"}}
	if ns != "" {
		data["namespace"] = ns
	}
	w.Declare(data)
	return w
}

func callNS(w *enginetest.Worker, fn, ns string, data any) map[string]any {
	w.T().Helper()
	m := map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": fn, "data": data}
	if ns != "" {
		m["namespace"] = ns
	}
	w.Send(m)
	return w.Expect("invocationresult")
}

func TestNamespaces(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	orders := declared(t, te.URL, "state", "orders", "state::get")
	billing := declared(t, te.URL, "state", "billing", "state::get")
	plain := enginetest.Dial(t, te.URL) // a 0.22 SDK: no declaration, default namespace
	plain.Register("state::get")
	caller := enginetest.Dial(t, te.URL)

	t.Run("calls resolve in the namespace they name", func(t *testing.T) {
		for _, tc := range []struct {
			ns   string
			host *enginetest.Worker
		}{{"orders", orders}, {"billing", billing}, {"", plain}, {"default", plain}} {
			done := make(chan map[string]any, 1)
			go func() { done <- callNS(caller, "state::get", tc.ns, tc.ns) }()
			inv := tc.host.ServeOnce("from "+tc.ns, nil)
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
		orders.Quiet()
		billing.Quiet()
		plain.Quiet()
	})

	t.Run("a miss names the namespaces where the id is", func(t *testing.T) {
		res := callNS(caller, "state::get", "analytics", nil)
		msg, _ := res["error"].(map[string]any)["message"].(string)
		if enginetest.ErrCode(res) != "function_not_found" || !strings.Contains(msg, "namespace analytics") || !strings.Contains(msg, "billing, default, orders") {
			t.Errorf("miss in analytics: %v", res["error"])
		}
		res = callNS(caller, "orders::only", "", nil)
		if msg, _ := res["error"].(map[string]any)["message"].(string); msg != "Function orders::only not found" {
			t.Errorf("miss in default: %v, want the message of before namespaces", res["error"])
		}
	})

	t.Run("engine functions answer from every namespace; listings show namespaces", func(t *testing.T) {
		res := result(t, callNS(caller, "engine::functions::list", "orders", map[string]any{}))
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
		workers := result(t, callNS(caller, "engine::workers::list", "", map[string]any{}))["workers"].([]any)
		byID := map[string]map[string]any{}
		for _, w := range workers {
			m := w.(map[string]any)
			byID[m["id"].(string)] = m
		}
		if byID[orders.ID]["namespace"] != "orders" || byID[plain.ID]["namespace"] != "default" {
			t.Errorf("workers list namespaces: orders %v, plain %v", byID[orders.ID], byID[plain.ID])
		}
	})

	t.Run("info resolves default first, strictly with a namespace, else reports ambiguity", func(t *testing.T) {
		info := result(t, callNS(caller, "engine::functions::info", "", map[string]any{"function_id": "state::get"}))
		if info["namespace"] != "default" {
			t.Errorf("functions::info without namespace: %v, want the default entry", info)
		}
		info = result(t, callNS(caller, "engine::functions::info", "", map[string]any{"function_id": "state::get", "namespace": "orders"}))
		if info["namespace"] != "orders" || info["worker_name"] != "state" {
			t.Errorf("functions::info in orders: %v", info)
		}
		res := callNS(caller, "engine::workers::info", "", map[string]any{"name": "state"})
		if enginetest.ErrCode(res) != "INVALID_ARGUMENTS" || !strings.Contains(res["error"].(map[string]any)["message"].(string), "billing, orders") {
			t.Errorf("workers::info of a name in two namespaces: %v, want an ambiguity naming them", res["error"])
		}
		w := result(t, callNS(caller, "engine::workers::info", "", map[string]any{"name": "state", "namespace": "billing"}))
		if w["worker"].(map[string]any)["id"] != billing.ID || len(w["functions"].([]any)) != 1 {
			t.Errorf("workers::info in billing: %v", w)
		}
	})

	t.Run("triggers fire in their namespace", func(t *testing.T) {
		orders.Send(map[string]any{"type": "registertrigger", "id": "tr-ns", "trigger_type": engine.TriggerWorkersAvailable,
			"function_id": "state::get", "config": map[string]any{}, "namespace": "orders"})
		orders.Quiet()
		enginetest.Dial(t, te.URL) // fires engine::workers-available
		inv := orders.Expect("invokefunction")
		if inv["function_id"] != "state::get" || inv["namespace"] != "orders" {
			t.Errorf("trigger call %v", inv)
		}
		plain.Quiet() // the default namespace's state::get was not called
		trs := result(t, callNS(caller, "engine::registered-triggers::list", "", map[string]any{"include_internal": true}))["registered_triggers"].([]any)
		for _, tr := range trs {
			if m := tr.(map[string]any); m["id"] == "tr-ns" && (m["function_id"] != "state::get" || m["namespace"] != "orders") {
				t.Errorf("listed trigger %v", m)
			}
		}
	})
}

func TestRegistrationRejected(t *testing.T) {
	t.Run("function conflict: refused for the newcomer only, the owner keeps serving", func(t *testing.T) {
		te := enginetest.New(t, engine.Options{})
		a := declared(t, te.URL, "a", "orders", "orders::create")
		// b replays its registration before declaring, as the SDKs do: the
		// conflict is found when its declaration arrives.
		b := enginetest.Dial(t, te.URL)
		b.Send(map[string]any{"type": "registerfunction", "id": "orders::create"})
		b.Send(map[string]any{"type": "registerfunction", "id": "orders::cancel"})
		b.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
			"data": map[string]any{"name": "b", "namespace": "orders", "features": []string{"large-messages.v1"}}})
		rej := b.Expect("registrationrejected")
		if rej["code"] != "FUNCTION_NAMESPACE_CONFLICT" || rej["namespace"] != "orders" || rej["function_id"] != "orders::create" || rej["owner_worker_id"] != a.ID {
			t.Errorf("rejection %v", rej)
		}
		b.Quiet() // still connected
		// A registration after the declaration is refused at once.
		c := declared(t, te.URL, "c", "orders")
		c.Send(map[string]any{"type": "registerfunction", "id": "orders::cancel"})
		if rej := c.Expect("registrationrejected"); rej["function_id"] != "orders::cancel" || rej["owner_worker_id"] != b.ID {
			t.Errorf("rejection after declaring: %v", rej)
		}
		caller := enginetest.Dial(t, te.URL)
		for range 3 {
			done := make(chan map[string]any, 1)
			go func() { done <- callNS(caller, "orders::create", "orders", 1) }()
			a.ServeOnce("a", nil)
			if res := <-done; res["result"] != "a" {
				t.Fatalf("call went elsewhere: %v", res)
			}
		}
		b.Quiet()
		// The same id in another namespace is no conflict.
		declared(t, te.URL, "a", "billing", "orders::create").Quiet()
	})

	t.Run("worker name conflict: refused and closed", func(t *testing.T) {
		te := enginetest.New(t, engine.Options{})
		a := declared(t, te.URL, "state", "orders", "state::get")
		b := enginetest.Dial(t, te.URL)
		b.Send(map[string]any{"type": "registerfunction", "id": "state::put"})
		b.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
			"data": map[string]any{"name": "state", "namespace": "orders", "features": []string{"large-messages.v1"}}})
		rej := b.Expect("registrationrejected")
		if rej["code"] != "WORKER_NAMESPACE_CONFLICT" || rej["worker_name"] != "state" || rej["owner_worker_id"] != a.ID || rej["namespace"] != "orders" {
			t.Errorf("rejection %v", rej)
		}
		if code := b.Closed(5 * time.Second); code != websocket.StatusPolicyViolation {
			t.Errorf("close code %v, want 1008", code)
		}
		if res := callNS(enginetest.Dial(t, te.URL), "state::put", "orders", nil); enginetest.ErrCode(res) != "function_not_found" {
			t.Errorf("the refused worker's function is served: %v", res)
		}
		declared(t, te.URL, "state", "", "state::get").Quiet() // another namespace: fine
	})

	t.Run("0.22 workers, a retiring owner and shared functions keep spreading", func(t *testing.T) {
		te := enginetest.New(t, engine.Options{})
		old1, old2 := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
		old1.Register("x::y")
		old2.Register("x::y")
		old1.Quiet()
		old2.Quiet()

		a := declared(t, te.URL, "api", "", "api::go")
		if err := te.SetRetiring(a.ID, true); err != nil {
			t.Fatal(err)
		}
		b := declared(t, te.URL, "api", "", "api::go") // a reload: no conflict
		b.Quiet()
		a.Quiet()
		if n := len(functionWorkers(te.Engine, "api::go")); n != 2 {
			t.Errorf("api::go served by %d workers during the reload, want 2", n)
		}

		te2 := enginetest.New(t, engine.Options{SharedFunctions: true})
		declared(t, te2.URL, "r1", "", "shared::fn").Quiet()
		declared(t, te2.URL, "r2", "", "shared::fn").Quiet()
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
	te := enginetest.New(t, engine.Options{})
	host := declared(t, te.URL, "host", "", "who::called")
	oldHost := enginetest.Dial(t, te.URL)
	oldHost.Register("old::host")
	caller := declared(t, te.URL, "the-caller", "")

	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "who::called", "data": nil,
		"caller": map[string]any{"function_id": "outer::fn", "invocation_id": "inv-1", "worker_id": "forged",
			"parent": map[string]any{"function_id": "outermost::fn", "parent": map[string]any{"function_id": "too-deep"}}}})
	inv := host.ServeOnce(nil, nil)
	c, _ := inv["caller"].(map[string]any)
	p, _ := c["parent"].(map[string]any)
	if c["worker_id"] != caller.ID || c["worker_name"] != "the-caller" || c["function_id"] != "outer::fn" || c["invocation_id"] != "inv-1" ||
		p["function_id"] != "outermost::fn" || p["parent"] != nil {
		t.Errorf("caller seen by the handler: %v", inv["caller"])
	}
	caller.Expect("invocationresult")

	// A 0.22 SDK's frame is as before: no caller.
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "old::host", "data": nil})
	if inv := oldHost.ServeOnce(nil, nil); inv["caller"] != nil {
		t.Errorf("a 0.22 worker got a caller: %v", inv)
	}
	caller.Expect("invocationresult")
}

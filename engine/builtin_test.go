package engine_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

func result(t *testing.T, res map[string]any) map[string]any {
	t.Helper()
	if res["error"] != nil {
		t.Fatalf("call failed: %v", res["error"])
	}
	m, ok := res["result"].(map[string]any)
	if !ok {
		t.Fatalf("result is not an object: %v", res)
	}
	return m
}

func ids(list any, key string) []string {
	var out []string
	for _, x := range list.([]any) {
		out = append(out, x.(map[string]any)[key].(string))
	}
	return out
}

func TestIntrospectionFunctions(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	w := enginetest.Dial(t, te.URL)
	w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
		"data": map[string]any{"runtime": "node", "version": "0.22.1", "name": "orders\u202e-svc\x07", "pid": 4242, "os": "linux"}})
	w.Send(map[string]any{"type": "registerfunction", "id": "orders::create", "description": "Create an order",
		"request_format": map[string]any{"type": "object"}})
	w.Send(map[string]any{"type": "registerfunction", "id": "orders::secret", "metadata": map[string]any{"internal": true}})
	w.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "Webhooks"})
	w.Send(map[string]any{"type": "registertrigger", "id": "tr-1", "trigger_type": "webhook", "function_id": "orders::create",
		"config": map[string]any{"path": strings.Repeat("/long", 30)}})
	w.Expect("registertrigger") // delivered to itself as the provider
	w.Quiet()
	caller := enginetest.Dial(t, te.URL)

	t.Run("functions list hides internal", func(t *testing.T) {
		got := ids(result(t, caller.Call("engine::functions::list", map[string]any{}, uuid.NewString()))["functions"], "function_id")
		if strings.Join(got, ",") != "orders::create" {
			t.Errorf("functions %v, want only orders::create", got)
		}
		all := ids(result(t, caller.Call("engine::functions::list", map[string]any{"include_internal": true}, uuid.NewString()))["functions"], "function_id")
		if len(all) < 10 || !contains(all, "engine::functions::list") || !contains(all, "orders::secret") {
			t.Errorf("include_internal: %v", all)
		}
	})
	t.Run("functions info", func(t *testing.T) {
		info := result(t, caller.Call("engine::functions::info", map[string]any{"function_id": "orders::create"}, uuid.NewString()))
		if info["worker_name"] != "orders-svc" || info["description"] != "Create an order" || info["request_schema"] == nil {
			t.Errorf("info %v", info)
		}
		if trs := info["registered_triggers"].([]any); len(trs) != 1 {
			t.Errorf("registered_triggers %v", trs)
		}
		batch := result(t, caller.Call("engine::functions::info", map[string]any{"function_ids": []string{"orders::create", "no::pe"}}, uuid.NewString()))
		fns := batch["functions"].([]any)
		if len(fns) != 2 || fns[1].(map[string]any)["error"] != "not_found" {
			t.Errorf("batch %v", batch)
		}
		if res := caller.Call("engine::functions::info", map[string]any{"function_id": "a", "function_ids": []string{"b"}}, uuid.NewString()); enginetest.ErrCode(res) != "INVALID_ARGUMENTS" {
			t.Errorf("both ids: %v", res)
		}
		if res := caller.Call("engine::functions::info", map[string]any{"function_id": "no::pe"}, uuid.NewString()); enginetest.ErrCode(res) != "NOT_FOUND" {
			t.Errorf("missing: %v", res)
		}
	})
	t.Run("workers list and info", func(t *testing.T) {
		list := result(t, caller.Call("engine::workers::list", map[string]any{"runtime": "node"}, uuid.NewString()))["workers"].([]any)
		if len(list) != 1 {
			t.Fatalf("workers %v", list)
		}
		wk := list[0].(map[string]any)
		if wk["id"] != w.ID || wk["name"] != "orders-svc" || wk["function_count"] != float64(2) || wk["pid"] != float64(4242) {
			t.Errorf("worker %v", wk)
		}
		for _, k := range []string{"description", "isolation"} {
			if v, ok := wk[k]; !ok || v != nil {
				t.Errorf("%s = %v (present %v), want null", k, v, ok)
			}
		}
		all := result(t, caller.Call("engine::workers::list", nil, uuid.NewString()))["workers"].([]any)
		if !contains(ids(all, "name"), engine.BuiltinWorker) {
			t.Errorf("in-process worker not listed: %v", ids(all, "name"))
		}
		info := result(t, caller.Call("engine::workers::info", map[string]any{"name": "orders-svc"}, uuid.NewString()))
		if got := ids(info["functions"], "function_id"); len(got) != 2 {
			t.Errorf("worker functions %v", got)
		}
		if got := ids(info["trigger_types"], "id"); strings.Join(got, ",") != "webhook" {
			t.Errorf("worker trigger types %v", got)
		}
	})
	t.Run("trigger types and bindings", func(t *testing.T) {
		types := ids(result(t, caller.Call("engine::triggers::list", map[string]any{}, uuid.NewString()))["triggers"], "id")
		if strings.Join(types, ",") != "webhook" {
			t.Errorf("trigger types %v", types)
		}
		withInternal := ids(result(t, caller.Call("engine::triggers::list", map[string]any{"include_internal": true}, uuid.NewString()))["triggers"], "id")
		if !contains(withInternal, engine.TriggerWorkersAvailable) {
			t.Errorf("internal types %v", withInternal)
		}
		info := result(t, caller.Call("engine::triggers::info", map[string]any{"id": "webhook"}, uuid.NewString()))
		if info["instance_count"] != float64(1) {
			t.Errorf("trigger info %v", info)
		}
		regs := result(t, caller.Call("engine::registered-triggers::list", map[string]any{"trigger_type": "webhook"}, uuid.NewString()))["registered_triggers"].([]any)
		if len(regs) != 1 {
			t.Fatalf("registered %v", regs)
		}
		r := regs[0].(map[string]any)
		if s := r["config_summary"].(string); len([]rune(s)) != 81 || !strings.HasSuffix(s, "…") {
			t.Errorf("config_summary %q", s)
		}
		one := result(t, caller.Call("engine::registered-triggers::info", map[string]any{"id": "tr-1"}, uuid.NewString()))
		if one["function"] == nil || one["trigger"] == nil {
			t.Errorf("registered trigger info %v", one)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

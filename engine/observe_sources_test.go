package engine_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// engine::on-observers-changed reports every state change of an observer
// ({observer_id, function_id, target, state, reason?, ...}); the
// configuration::on-updated source is observable (active) and silent
// while no configuration changes.
func TestObserveEngineSources(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	w := obsDial(t, te.URL, "observe.v1")
	w.Register("watch::changes")
	w.Register("watch::config")

	r := w.observe(map[string]any{"source": map[string]any{"function_id": engine.SourceObserversChanged, "deliver": "input",
		"filters": map[string]any{"input.function_id": map[string]any{"$eq": "app::thing"}}},
		"target": map[string]any{"function_id": "watch::changes"}})
	if r["state"] != "active" {
		t.Fatalf("observing %s: %v, want active", engine.SourceObserversChanged, r)
	}
	if r := w.observe(map[string]any{"source": map[string]any{"function_id": engine.SourceConfigurationUpdated},
		"target": map[string]any{"function_id": "watch::config"}}); r["state"] != "active" {
		t.Errorf("observing %s: %v, want active", engine.SourceConfigurationUpdated, r)
	}

	other := obsDial(t, te.URL, "observe.v1")
	other.Register("app::sink")
	id := other.observe(map[string]any{"source": map[string]any{"function_id": "app::thing"},
		"target": map[string]any{"function_id": "app::sink"}})["id"]
	next := func(state, reason string) {
		t.Helper()
		act := w.invoked("watch::changes")
		in, _ := act["data"].(map[string]any)
		if in["observer_id"] != id || in["function_id"] != "app::thing" || in["target"] != "app::sink" ||
			in["state"] != state || reasonCode(in) != reason || in["namespace"] != "default" {
			t.Errorf("on-observers-changed: %v, want %s %s of observer %s", in, state, reason, id)
		}
		w.answer(act, nil)
	}
	next("pending", "")
	host := enginetest.Dial(t, te.URL)
	host.Register("app::thing")
	next("active", "")
	other.Send(map[string]any{"type": "unobserve", "id": id})
	next("disposed", "UNOBSERVED")
	w.none("invokefunction") // the filter kept out the observers of other functions, and the config source is silent
}

// configuration::on-updated fires on configuration::register (registered,
// then updated when registered again) and configuration::set, with iii's
// configuration event; a value its schema refuses changes nothing and
// fires nothing.
func TestConfigurationOnUpdatedFires(t *testing.T) {
	t.Setenv("III_TEST_CFG_PORT", "4242")
	te := enginetest.New(t, engine.Options{})
	w := obsDial(t, te.URL, "observe.v1")
	w.Register("watch::config")
	r := w.observe(map[string]any{"source": map[string]any{"function_id": engine.SourceConfigurationUpdated, "deliver": "input",
		"filters": map[string]any{"input.id": map[string]any{"$eq": "app-cfg"}}},
		"target": map[string]any{"function_id": "watch::config"}})
	if r["state"] != "active" {
		t.Fatalf("observing %s: %v, want active", engine.SourceConfigurationUpdated, r)
	}
	call := func(fn string, data map[string]any) map[string]any {
		t.Helper()
		id := uuid.NewString()
		w.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": fn, "data": data})
		return w.want("invocationresult", func(m map[string]any) bool { return m["invocation_id"] == id })
	}
	schema := map[string]any{"type": "object", "required": []string{"port"}, "properties": map[string]any{"port": map[string]any{"type": "integer"}, "host": map[string]any{"type": "string"}}}
	next := func(eventType, oldValue, newValue string) {
		t.Helper()
		act := w.invoked("watch::config")
		in, _ := act["data"].(map[string]any)
		if in["type"] != "configuration" || in["event_type"] != eventType || in["id"] != "app-cfg" || in["name"] != "App" ||
			asJSON(in["schema"]) != asJSON(schema) || asJSON(in["old_value"]) != oldValue || asJSON(in["new_value"]) != newValue ||
			asJSON(in["metadata"]) != `{"team":"core"}` {
			t.Errorf("on-updated: %v, want %s %s -> %s", asJSON(in), eventType, oldValue, newValue)
		}
		w.answer(act, nil)
	}

	reg := map[string]any{"id": "app-cfg", "name": "App", "description": "the app", "schema": schema,
		"initial_value": map[string]any{"port": 1}, "metadata": map[string]any{"team": "core"}}
	if res := call("configuration::register", reg); res["error"] != nil {
		t.Fatalf("register: %v", res)
	}
	next("configuration:registered", "null", `{"port":1}`)

	res := call("configuration::set", map[string]any{"id": "app-cfg", "value": map[string]any{"port": 2, "host": "${III_TEST_CFG_HOST:localhost}"}})
	if out, _ := res["result"].(map[string]any); asJSON(out["old_value"]) != `{"port":1}` || asJSON(out["new_value"]) != `{"host":"${III_TEST_CFG_HOST:localhost}","port":2}` {
		t.Errorf("set: %v, want {old_value, new_value} as stored", res)
	}
	next("configuration:updated", `{"port":1}`, `{"host":"localhost","port":2}`) // placeholders expanded

	if res := call("configuration::set", map[string]any{"id": "app-cfg", "value": map[string]any{"port": "x"}}); enginetest.ErrCode(res) != "SCHEMA_INVALID" {
		t.Errorf("set of a value the schema refuses: %v, want SCHEMA_INVALID", res)
	}
	if res := call("configuration::set", map[string]any{"id": "nope", "value": 1}); enginetest.ErrCode(res) != "NOT_REGISTERED" {
		t.Errorf("set of an unregistered id: %v, want NOT_REGISTERED", res)
	}
	if res := call("configuration::register", map[string]any{"id": "Bad Id", "schema": schema}); enginetest.ErrCode(res) != "INVALID_ID" {
		t.Errorf("register of a bad id: %v, want INVALID_ID", res)
	}
	delete(reg, "initial_value")
	reg["description"] = "the app, again"
	call("configuration::register", reg) // keeps the value
	act := w.invoked("watch::config")
	if in, _ := act["data"].(map[string]any); in["event_type"] != "configuration:updated" || in["description"] != "the app, again" ||
		asJSON(in["old_value"]) != asJSON(in["new_value"]) {
		t.Errorf("registered again: %v, want updated with the value kept", asJSON(in))
	}
	w.answer(act, nil)

	res = call("configuration::get", map[string]any{"id": "app-cfg"})
	if out, _ := res["result"].(map[string]any); asJSON(out["value"]) != `{"host":"localhost","port":2}` {
		t.Errorf("get: %v, want the value expanded", res)
	}
	res = call("configuration::list", nil)
	if out, _ := res["result"].(map[string]any); !strings.Contains(asJSON(out["configurations"]), `"id":"app-cfg"`) || strings.Contains(asJSON(out), `"value"`) {
		t.Errorf("list: %v, want app-cfg without its value", res)
	}
	// Another id does not pass the filter.
	call("configuration::register", map[string]any{"id": "other", "schema": map[string]any{}})
	w.none("invokefunction")
}

package engine_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// Python's legacy shim: a function registered with
// observe.legacy_trigger_type stands in for that trigger type, and a
// registertrigger of the type becomes an observer of it.
func TestLegacyTriggerShim(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := obsDial(t, te.URL, "observe.v1")
	host.Send(map[string]any{"type": "registerfunction", "id": "hooks::webhook", "observe": map[string]any{
		"delivery": "owner", "legacy_trigger_type": "webhook",
		"args_format": map[string]any{"type": "object", "required": []string{"url"}, "properties": map[string]any{"url": map[string]any{"type": "string"}}}}})
	host.want("functionregistered", nil)
	app := enginetest.Dial(t, te.URL) // a 0.22 worker using the old trigger API
	app.Register("app::on-hook")

	app.Send(map[string]any{"type": "registertrigger", "id": "tr-1", "trigger_type": "webhook", "function_id": "app::on-hook",
		"config": map[string]any{"url": "/x"}, "metadata": map[string]any{"team": "a"}})
	added := host.want("observeradded", nil)
	view, _ := added["observer"].(map[string]any)
	legacy, _ := view["legacy"].(map[string]any)
	if added["function_id"] != "hooks::webhook" || view["id"] != "tr-1" || view["target"] != "app::on-hook" ||
		asJSON(view["args"]) != `{"url":"/x"}` || legacy["trigger_type"] != "webhook" || asJSON(legacy["config"]) != `{"url":"/x"}` {
		t.Fatalf("observeradded %v", added)
	}
	host.Send(map[string]any{"type": "observerack", "function_id": "hooks::webhook", "id": "tr-1", "revision": added["revision"]})

	t.Run("the host delivers through the observer", func(t *testing.T) {
		host.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "app::on-hook",
			"data": map[string]any{"event": 1}, "activation": map[string]any{"observer_id": "tr-1"}})
		inv := app.Expect("invokefunction")
		if inv["function_id"] != "app::on-hook" || asJSON(inv["data"]) != `{"event":1}` || asJSON(inv["metadata"]) != `{"team":"a"}` {
			t.Errorf("the trigger's function got %v", inv)
		}
		app.Send(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": inv["function_id"], "result": "ok"})
		if r := host.want("invocationresult", nil); r["result"] != "ok" {
			t.Errorf("call through the observer: %v", r)
		}
		var listed *engine.ObserverInfo
		for _, o := range te.Observers() {
			if o.ID == "tr-1" {
				listed = &o
			}
		}
		if listed == nil || listed.Legacy == nil || listed.Legacy.TriggerType != "webhook" || listed.Fires != 1 {
			t.Errorf("listed observer %+v", listed)
		}
	})

	t.Run("config the function's args_format refuses", func(t *testing.T) {
		app.Send(map[string]any{"type": "registertrigger", "id": "tr-bad", "trigger_type": "webhook", "function_id": "app::on-hook",
			"config": map[string]any{"path": "/x"}})
		r := app.Expect("triggerregistrationresult")
		if r["id"] != "tr-bad" || enginetest.ErrCode(r) != "INVALID_ARGS" {
			t.Errorf("refused legacy trigger: %v", r)
		}
	})

	t.Run("unregistertrigger removes the observer", func(t *testing.T) {
		app.Send(map[string]any{"type": "unregistertrigger", "id": "tr-1", "trigger_type": "webhook"})
		if r := host.want("observerremoved", nil); r["id"] != "tr-1" {
			t.Errorf("observerremoved %v", r)
		}
	})

	t.Run("a trigger type provider wins over the shim", func(t *testing.T) {
		prov := enginetest.Dial(t, te.URL)
		prov.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "real"})
		prov.Quiet()
		app.Send(map[string]any{"type": "registertrigger", "id": "tr-2", "trigger_type": "webhook", "function_id": "app::on-hook",
			"config": map[string]any{"url": "/y"}})
		if m := prov.Expect("registertrigger"); m["id"] != "tr-2" {
			t.Errorf("provider got %v", m)
		}
		host.none("observeradded")
	})
}

// A host's rejection of a legacy observer reaches the trigger's worker as
// a failed trigger registration.
func TestLegacyTriggerRejectedByHost(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := obsDial(t, te.URL, "observe.v1")
	host.Send(map[string]any{"type": "registerfunction", "id": "hooks::cron", "observe": map[string]any{"delivery": "owner", "legacy_trigger_type": "old-cron"}})
	host.want("functionregistered", nil)
	app := enginetest.Dial(t, te.URL)
	app.Register("app::tick")
	app.Send(map[string]any{"type": "registertrigger", "id": "tr-r", "trigger_type": "old-cron", "function_id": "app::tick", "config": map[string]any{"expression": "nope"}})
	added := host.want("observeradded", nil)
	host.Send(map[string]any{"type": "observerack", "function_id": "hooks::cron", "id": "tr-r", "revision": added["revision"],
		"error": map[string]any{"code": "INVALID_ARGS", "message": "bad expression nope"}})
	r := app.Expect("triggerregistrationresult")
	if r["id"] != "tr-r" || enginetest.ErrCode(r) != "INVALID_ARGS" || r["trigger_type"] != "old-cron" {
		t.Errorf("the trigger's worker heard %v", r)
	}
}

// A trigger registered before the function standing in for its type is
// parked, and becomes that function's observer when it registers.
func TestLegacyTriggerBeforeItsFunction(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	app := enginetest.Dial(t, te.URL)
	app.Register("app::on-hook")
	app.Send(map[string]any{"type": "registertrigger", "id": "tr-early", "trigger_type": "webhook", "function_id": "app::on-hook",
		"config": map[string]any{"url": "/early"}})
	app.Quiet()
	if tr, ok := triggerInfo(te, "tr-early"); !ok || tr.Active {
		t.Fatalf("before the function: %+v (found %v), want a parked binding", tr, ok)
	}
	host := obsDial(t, te.URL, "observe.v1")
	host.Send(map[string]any{"type": "registerfunction", "id": "hooks::webhook", "observe": map[string]any{"delivery": "owner", "legacy_trigger_type": "webhook"}})
	added := host.want("observeradded", nil)
	view, _ := added["observer"].(map[string]any)
	if view["id"] != "tr-early" || view["target"] != "app::on-hook" || asJSON(view["legacy"]) != `{"config":{"url":"/early"},"trigger_type":"webhook"}` {
		t.Errorf("observeradded %v", added)
	}
	if _, ok := triggerInfo(te, "tr-early"); ok {
		t.Errorf("the binding is still listed beside its observer")
	}
	app.Quiet() // the trigger's worker hears nothing of it
}

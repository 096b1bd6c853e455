package engine_test

import (
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// engine::on-observers-changed reports every state change of an observer
// ({observer_id, function_id, target, state, reason?, ...}); the
// configuration::on-updated source is observable (active) and silent.
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

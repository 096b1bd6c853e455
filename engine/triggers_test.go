package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
)

func TestTriggerParkedUntilTypeAppears(t *testing.T) {
	te := startEngine(t, engine.Options{})
	owner := dial(t, te.url)
	owner.register("hook::handle")
	owner.send(map[string]any{"type": "registertrigger", "id": "t1", "trigger_type": "webhook",
		"function_id": "hook::handle", "config": map[string]any{"path": "/a"}, "metadata": map[string]any{"k": "v"}})
	owner.quiet() // parked: no error, no reply

	provider := dial(t, te.url)
	provider.send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "Webhooks"})
	got := provider.expect("registertrigger")
	if got["id"] != "t1" || got["trigger_type"] != "webhook" || got["function_id"] != "hook::handle" {
		t.Fatalf("provider got %v", got)
	}
	if cfg := got["config"].(map[string]any); cfg["path"] != "/a" {
		t.Errorf("config %v", cfg)
	}

	// Binding registered while the type exists goes straight to the provider.
	owner.send(map[string]any{"type": "registertrigger", "id": "t2", "trigger_type": "webhook", "function_id": "hook::handle", "config": map[string]any{}})
	if got := provider.expect("registertrigger"); got["id"] != "t2" {
		t.Fatalf("provider got %v, want t2", got)
	}

	// Owner removes t2: the provider is told.
	owner.send(map[string]any{"type": "unregistertrigger", "id": "t2"})
	if got := provider.expect("unregistertrigger"); got["id"] != "t2" || got["trigger_type"] != "webhook" {
		t.Fatalf("provider got %v, want unregistertrigger t2", got)
	}

	// The provider goes away: t1 is parked; a new provider gets it again.
	provider.ws.CloseNow()
	waitFor(t, "type dropped", func() bool { return !hasType(te.Engine, "webhook") })
	if parked := findTrigger(te.Engine, "t1"); parked == nil || parked.Active {
		t.Fatalf("t1 after provider left: %+v, want parked", parked)
	}
	p2 := dial(t, te.url)
	p2.send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "Webhooks v2"})
	if got := p2.expect("registertrigger"); got["id"] != "t1" {
		t.Fatalf("new provider got %v, want t1", got)
	}

	// The owner leaves: its binding is removed and the provider told.
	owner.ws.CloseNow()
	if got := p2.expect("unregistertrigger"); got["id"] != "t1" {
		t.Fatalf("provider got %v, want unregistertrigger t1", got)
	}
}

func TestProviderReRegistrationRedelivers(t *testing.T) {
	te := startEngine(t, engine.Options{})
	p := dial(t, te.url)
	p.send(map[string]any{"type": "registertriggertype", "id": "tick", "description": "ticks"})
	owner := dial(t, te.url)
	owner.send(map[string]any{"type": "registertrigger", "id": "b1", "trigger_type": "tick", "function_id": "f", "config": 1})
	p.expect("registertrigger")
	p.send(map[string]any{"type": "registertriggertype", "id": "tick", "description": "ticks again"})
	if got := p.expect("registertrigger"); got["id"] != "b1" {
		t.Fatalf("re-registration: got %v, want b1 re-delivered", got)
	}
}

func TestProviderRejectionReachesOwner(t *testing.T) {
	te := startEngine(t, engine.Options{})
	p := dial(t, te.url)
	p.send(map[string]any{"type": "registertriggertype", "id": "strict", "description": "picky"})
	owner := dial(t, te.url)
	owner.send(map[string]any{"type": "registertrigger", "id": "bad", "trigger_type": "strict", "function_id": "f", "config": map[string]any{}})
	got := p.expect("registertrigger")
	p.send(map[string]any{"type": "triggerregistrationresult", "id": got["id"], "trigger_type": "strict", "function_id": "f",
		"error": map[string]any{"code": "trigger_registration_failed", "message": "config.path is required"}})
	res := owner.expect("triggerregistrationresult")
	if res["id"] != "bad" || errCode(res) != "trigger_registration_failed" {
		t.Fatalf("owner got %v", res)
	}
	// A result from a worker that is not the provider is ignored.
	other := dial(t, te.url)
	other.send(map[string]any{"type": "triggerregistrationresult", "id": "bad", "trigger_type": "strict", "function_id": "f",
		"error": map[string]any{"code": "x", "message": "spoof"}})
	other.quiet()
	owner.quiet()
}

// recorder is an in-process trigger provider that can refuse bindings.
type recorder struct {
	mu     sync.Mutex
	active map[string]engine.Trigger
}

func (r *recorder) RegisterTrigger(_ context.Context, t engine.Trigger) error {
	var cfg struct {
		Path string `json:"path"`
	}
	if json.Unmarshal(t.Config, &cfg) != nil || cfg.Path == "" {
		return errors.New("config.path is required")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.active[t.ID] = t
	return nil
}

func (r *recorder) UnregisterTrigger(_ context.Context, t engine.Trigger) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.active, t.ID)
	return nil
}

func (r *recorder) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.active[id]
	return ok
}

func TestInProcessTriggerProvider(t *testing.T) {
	te := startEngine(t, engine.Options{})
	rec := &recorder{active: map[string]engine.Trigger{}}
	if err := te.RegisterTriggerType("test-module", engine.TriggerType{ID: "route", Description: "routes", Provider: rec}); err != nil {
		t.Fatal(err)
	}
	if err := te.RegisterTriggerType("other", engine.TriggerType{ID: "route", Provider: rec}); err == nil {
		t.Error("second provider for a built-in type was accepted")
	}
	w := dial(t, te.url)
	w.send(map[string]any{"type": "registertrigger", "id": "ok", "trigger_type": "route", "function_id": "f", "config": map[string]any{"path": "/x"}})
	w.send(map[string]any{"type": "registertrigger", "id": "nopath", "trigger_type": "route", "function_id": "f", "config": map[string]any{}})
	res := w.expect("triggerregistrationresult")
	if res["id"] != "nopath" || errCode(res) != "trigger_registration_failed" {
		t.Fatalf("got %v", res)
	}
	if msg := res["error"].(map[string]any)["message"]; msg != "config.path is required" {
		t.Errorf("message %v", msg)
	}
	if !rec.has("ok") || findTrigger(te.Engine, "nopath") != nil {
		t.Fatalf("provider state wrong: ok=%v nopath stored=%v", rec.has("ok"), findTrigger(te.Engine, "nopath") != nil)
	}
	// A worker may not take over a built-in trigger type.
	w.send(map[string]any{"type": "registertriggertype", "id": "route", "description": "hijack"})
	w.quiet()
	if tt := findType(te.Engine, "route"); tt == nil || tt.Worker != "test-module" {
		t.Fatalf("route provider now %+v", tt)
	}
	w.ws.CloseNow()
	waitFor(t, "binding removed with its owner", func() bool { return !rec.has("ok") })
}

func TestOwnerlessTriggerViaEngineFunction(t *testing.T) {
	te := startEngine(t, engine.Options{})
	p := dial(t, te.url)
	p.send(map[string]any{"type": "registertriggertype", "id": "ext", "description": "external"})
	p.quiet()
	caller := dial(t, te.url)
	id := uuid.NewString()
	caller.send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "engine::register_trigger",
		"data": map[string]any{"trigger_type": "ext", "function_id": "f", "config": map[string]any{"a": 1}}})
	got := p.expect("registertrigger")
	p.send(map[string]any{"type": "triggerregistrationresult", "id": got["id"], "trigger_type": "ext", "function_id": "f"})
	res := caller.expect("invocationresult")
	tid, _ := res["result"].(map[string]any)["id"].(string)
	if tid != got["id"] {
		t.Fatalf("register_trigger returned %v, provider saw %v", res, got["id"])
	}
	// Ownerless: survives the caller's disconnect.
	caller.ws.CloseNow()
	other := dial(t, te.url)
	res = other.call("engine::unregister_trigger", map[string]any{"id": tid}, uuid.NewString())
	if res["result"].(map[string]any)["removed"] != true {
		t.Fatalf("unregister_trigger: %v", res)
	}
	p.expect("unregistertrigger")

	// A provider error turns into a failed call.
	other.send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "engine::register_trigger",
		"data": map[string]any{"trigger_type": "ext", "function_id": "f"}})
	got = p.expect("registertrigger")
	p.send(map[string]any{"type": "triggerregistrationresult", "id": got["id"], "trigger_type": "ext", "function_id": "f",
		"error": map[string]any{"code": "trigger_registration_failed", "message": "nope"}})
	if res := other.expect("invocationresult"); errCode(res) != "trigger_registration_failed" {
		t.Fatalf("got %v", res)
	}
}

func TestWorkersAvailableTrigger(t *testing.T) {
	te := startEngine(t, engine.Options{})
	watcher := dial(t, te.url)
	watcher.register("watch::workers")
	watcher.send(map[string]any{"type": "registertrigger", "id": uuid.NewString(), "trigger_type": engine.TriggerWorkersAvailable,
		"function_id": "watch::workers", "config": map[string]any{}})
	watcher.quiet()
	w := dial(t, te.url)
	inv := watcher.serveOnce(nil, nil)
	data := inv["data"].(map[string]any)
	if data["event"] != "worker_connected" || data["worker_id"] != w.id {
		t.Fatalf("got %v", data)
	}
	w.send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register",
		"data": map[string]any{"runtime": "node", "name": "api", "version": "0.22.1", "pid": 42}, "action": map[string]any{"type": "void"}})
	inv = watcher.serveOnce(nil, nil)
	if inv["data"].(map[string]any)["event"] != "worker_metadata_updated" {
		t.Fatalf("got %v", inv["data"])
	}
	w.ws.CloseNow()
	inv = watcher.serveOnce(nil, nil)
	if inv["data"].(map[string]any)["event"] != "worker_disconnected" {
		t.Fatalf("got %v", inv["data"])
	}
}

func TestFunctionsAvailableTrigger(t *testing.T) {
	te := startEngine(t, engine.Options{})
	watcher := dial(t, te.url)
	watcher.register("watch::fns")
	watcher.send(map[string]any{"type": "registertrigger", "id": uuid.NewString(), "trigger_type": engine.TriggerFunctionsAvailable,
		"function_id": "watch::fns", "config": map[string]any{}})
	watcher.quiet()
	w := dial(t, te.url)
	for _, f := range []string{"a::one", "a::two", "a::three"} {
		w.send(map[string]any{"type": "registerfunction", "id": f})
	}
	// One burst of registrations fires (at least) one event listing them.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		inv := watcher.serveOnce(nil, nil)
		data := inv["data"].(map[string]any)
		if data["event"] != "functions_changed" {
			t.Fatalf("got %v", data)
		}
		ids := map[string]bool{}
		for _, f := range data["functions"].([]any) {
			ids[f.(map[string]any)["function_id"].(string)] = true
		}
		if ids["a::one"] && ids["a::two"] && ids["a::three"] {
			return
		}
	}
	t.Fatal("no functions_changed event listed all three functions")
}

func hasType(e *engine.Engine, id string) bool { return findType(e, id) != nil }

func findType(e *engine.Engine, id string) *engine.TriggerTypeInfo {
	for _, tt := range e.Snapshot().TriggerTypes {
		if tt.ID == id {
			return &tt
		}
	}
	return nil
}

func findTrigger(e *engine.Engine, id string) *engine.TriggerInfo {
	for _, t := range e.Snapshot().Triggers {
		if t.ID == id {
			return &t
		}
	}
	return nil
}

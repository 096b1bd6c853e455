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
	"github.com/iii-workbench/iii/engine/enginetest"
)

func TestTriggerParkedUntilTypeAppears(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	owner := enginetest.Dial(t, te.URL)
	owner.Register("hook::handle")
	owner.Send(map[string]any{"type": "registertrigger", "id": "t1", "trigger_type": "webhook",
		"function_id": "hook::handle", "config": map[string]any{"path": "/a"}, "metadata": map[string]any{"k": "v"}})
	owner.Quiet() // parked: no error, no reply

	provider := enginetest.Dial(t, te.URL)
	provider.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "Webhooks"})
	got := provider.Expect("registertrigger")
	if got["id"] != "t1" || got["trigger_type"] != "webhook" || got["function_id"] != "hook::handle" {
		t.Fatalf("provider got %v", got)
	}
	if cfg := got["config"].(map[string]any); cfg["path"] != "/a" {
		t.Errorf("config %v", cfg)
	}

	// Binding registered while the type exists goes straight to the provider.
	owner.Send(map[string]any{"type": "registertrigger", "id": "t2", "trigger_type": "webhook", "function_id": "hook::handle", "config": map[string]any{}})
	if got := provider.Expect("registertrigger"); got["id"] != "t2" {
		t.Fatalf("provider got %v, want t2", got)
	}

	// Owner removes t2: the provider is told.
	owner.Send(map[string]any{"type": "unregistertrigger", "id": "t2"})
	if got := provider.Expect("unregistertrigger"); got["id"] != "t2" || got["trigger_type"] != "webhook" {
		t.Fatalf("provider got %v, want unregistertrigger t2", got)
	}

	// The provider goes away: t1 is parked; a new provider gets it again.
	provider.Conn.CloseNow()
	enginetest.WaitFor(t, "type dropped", func() bool { return !hasType(te.Engine, "webhook") })
	if parked := findTrigger(te.Engine, "t1"); parked == nil || parked.Active {
		t.Fatalf("t1 after provider left: %+v, want parked", parked)
	}
	p2 := enginetest.Dial(t, te.URL)
	p2.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "Webhooks v2"})
	if got := p2.Expect("registertrigger"); got["id"] != "t1" {
		t.Fatalf("new provider got %v, want t1", got)
	}

	// The owner leaves: its binding is removed and the provider told.
	owner.Conn.CloseNow()
	if got := p2.Expect("unregistertrigger"); got["id"] != "t1" {
		t.Fatalf("provider got %v, want unregistertrigger t1", got)
	}
}

func TestProviderReRegistrationRedelivers(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	p := enginetest.Dial(t, te.URL)
	p.Send(map[string]any{"type": "registertriggertype", "id": "tick", "description": "ticks"})
	owner := enginetest.Dial(t, te.URL)
	owner.Send(map[string]any{"type": "registertrigger", "id": "b1", "trigger_type": "tick", "function_id": "f", "config": 1})
	p.Expect("registertrigger")
	p.Send(map[string]any{"type": "registertriggertype", "id": "tick", "description": "ticks again"})
	if got := p.Expect("registertrigger"); got["id"] != "b1" {
		t.Fatalf("re-registration: got %v, want b1 re-delivered", got)
	}
}

func TestProviderRejectionReachesOwner(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	p := enginetest.Dial(t, te.URL)
	p.Send(map[string]any{"type": "registertriggertype", "id": "strict", "description": "picky"})
	owner := enginetest.Dial(t, te.URL)
	owner.Send(map[string]any{"type": "registertrigger", "id": "bad", "trigger_type": "strict", "function_id": "f", "config": map[string]any{}})
	got := p.Expect("registertrigger")
	p.Send(map[string]any{"type": "triggerregistrationresult", "id": got["id"], "trigger_type": "strict", "function_id": "f",
		"error": map[string]any{"code": "trigger_registration_failed", "message": "config.path is required"}})
	res := owner.Expect("triggerregistrationresult")
	if res["id"] != "bad" || enginetest.ErrCode(res) != "trigger_registration_failed" {
		t.Fatalf("owner got %v", res)
	}
	// A result from a worker that is not the provider is ignored.
	other := enginetest.Dial(t, te.URL)
	other.Send(map[string]any{"type": "triggerregistrationresult", "id": "bad", "trigger_type": "strict", "function_id": "f",
		"error": map[string]any{"code": "x", "message": "spoof"}})
	other.Quiet()
	owner.Quiet()
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
	te := enginetest.New(t, engine.Options{})
	rec := &recorder{active: map[string]engine.Trigger{}}
	if err := te.RegisterTriggerType("test-module", engine.TriggerType{ID: "route", Description: "routes", Provider: rec}); err != nil {
		t.Fatal(err)
	}
	if err := te.RegisterTriggerType("other", engine.TriggerType{ID: "route", Provider: rec}); err == nil {
		t.Error("second provider for a built-in type was accepted")
	}
	w := enginetest.Dial(t, te.URL)
	w.Send(map[string]any{"type": "registertrigger", "id": "ok", "trigger_type": "route", "function_id": "f", "config": map[string]any{"path": "/x"}})
	w.Send(map[string]any{"type": "registertrigger", "id": "nopath", "trigger_type": "route", "function_id": "f", "config": map[string]any{}})
	res := w.Expect("triggerregistrationresult")
	if res["id"] != "nopath" || enginetest.ErrCode(res) != "trigger_registration_failed" {
		t.Fatalf("got %v", res)
	}
	if msg := res["error"].(map[string]any)["message"]; msg != "config.path is required" {
		t.Errorf("message %v", msg)
	}
	if !rec.has("ok") || findTrigger(te.Engine, "nopath") != nil {
		t.Fatalf("provider state wrong: ok=%v nopath stored=%v", rec.has("ok"), findTrigger(te.Engine, "nopath") != nil)
	}
	// A worker may not take over a built-in trigger type.
	w.Send(map[string]any{"type": "registertriggertype", "id": "route", "description": "hijack"})
	w.Quiet()
	if tt := findType(te.Engine, "route"); tt == nil || tt.Worker != "test-module" {
		t.Fatalf("route provider now %+v", tt)
	}
	w.Conn.CloseNow()
	enginetest.WaitFor(t, "binding removed with its owner", func() bool { return !rec.has("ok") })
}

func TestOwnerlessTriggerViaEngineFunction(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	p := enginetest.Dial(t, te.URL)
	p.Send(map[string]any{"type": "registertriggertype", "id": "ext", "description": "external"})
	p.Quiet()
	caller := enginetest.Dial(t, te.URL)
	id := uuid.NewString()
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "engine::register_trigger",
		"data": map[string]any{"trigger_type": "ext", "function_id": "f", "config": map[string]any{"a": 1}}})
	got := p.Expect("registertrigger")
	p.Send(map[string]any{"type": "triggerregistrationresult", "id": got["id"], "trigger_type": "ext", "function_id": "f"})
	res := caller.Expect("invocationresult")
	tid, _ := res["result"].(map[string]any)["id"].(string)
	if tid != got["id"] {
		t.Fatalf("register_trigger returned %v, provider saw %v", res, got["id"])
	}
	// Ownerless: survives the caller's disconnect.
	caller.Conn.CloseNow()
	other := enginetest.Dial(t, te.URL)
	res = other.Call("engine::unregister_trigger", map[string]any{"id": tid}, uuid.NewString())
	if res["result"].(map[string]any)["removed"] != true {
		t.Fatalf("unregister_trigger: %v", res)
	}
	p.Expect("unregistertrigger")

	// A provider error turns into a failed call.
	other.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "engine::register_trigger",
		"data": map[string]any{"trigger_type": "ext", "function_id": "f"}})
	got = p.Expect("registertrigger")
	p.Send(map[string]any{"type": "triggerregistrationresult", "id": got["id"], "trigger_type": "ext", "function_id": "f",
		"error": map[string]any{"code": "trigger_registration_failed", "message": "nope"}})
	if res := other.Expect("invocationresult"); enginetest.ErrCode(res) != "trigger_registration_failed" {
		t.Fatalf("got %v", res)
	}
}

func TestWorkersAvailableTrigger(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	watcher := enginetest.Dial(t, te.URL)
	watcher.Register("watch::workers")
	watcher.Send(map[string]any{"type": "registertrigger", "id": uuid.NewString(), "trigger_type": engine.TriggerWorkersAvailable,
		"function_id": "watch::workers", "config": map[string]any{}})
	watcher.Quiet()
	w := enginetest.Dial(t, te.URL)
	inv := watcher.ServeOnce(nil, nil)
	data := inv["data"].(map[string]any)
	if data["event"] != "worker_connected" || data["worker_id"] != w.ID {
		t.Fatalf("got %v", data)
	}
	w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register",
		"data": map[string]any{"runtime": "node", "name": "api", "version": "0.22.1", "pid": 42}, "action": map[string]any{"type": "void"}})
	inv = watcher.ServeOnce(nil, nil)
	if inv["data"].(map[string]any)["event"] != "worker_metadata_updated" {
		t.Fatalf("got %v", inv["data"])
	}
	w.Conn.CloseNow()
	inv = watcher.ServeOnce(nil, nil)
	if inv["data"].(map[string]any)["event"] != "worker_disconnected" {
		t.Fatalf("got %v", inv["data"])
	}
}

func TestFunctionsAvailableTrigger(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	watcher := enginetest.Dial(t, te.URL)
	watcher.Register("watch::fns")
	watcher.Send(map[string]any{"type": "registertrigger", "id": uuid.NewString(), "trigger_type": engine.TriggerFunctionsAvailable,
		"function_id": "watch::fns", "config": map[string]any{}})
	watcher.Quiet()
	w := enginetest.Dial(t, te.URL)
	for _, f := range []string{"a::one", "a::two", "a::three"} {
		w.Send(map[string]any{"type": "registerfunction", "id": f})
	}
	// One burst of registrations fires (at least) one event listing them.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		inv := watcher.ServeOnce(nil, nil)
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

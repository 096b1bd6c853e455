package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
)

// routes is an in-process provider that, like the http module, refuses a
// path already bound under another trigger id, and logs every call.
type routes struct {
	mu     sync.Mutex
	byPath map[string]engine.Trigger
	log    []string // "+id" register, "-id" unregister
}

func newRoutes() *routes { return &routes{byPath: map[string]engine.Trigger{}} }

func pathOf(t engine.Trigger) string {
	var cfg struct {
		Path string `json:"path"`
	}
	json.Unmarshal(t.Config, &cfg)
	return cfg.Path
}

func (r *routes) RegisterTrigger(_ context.Context, t engine.Trigger) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := pathOf(t)
	if old, ok := r.byPath[p]; ok && old.ID != t.ID {
		return fmt.Errorf("%w: %s is bound to %s by trigger %s", engine.ErrTriggerConflict, p, old.FunctionID, old.ID)
	}
	r.byPath[p] = t
	r.log = append(r.log, "+"+t.ID)
	return nil
}

func (r *routes) UnregisterTrigger(_ context.Context, t engine.Trigger) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byPath[pathOf(t)]; ok && old.ID == t.ID {
		delete(r.byPath, pathOf(t))
	}
	r.log = append(r.log, "-"+t.ID)
	return nil
}

func (r *routes) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// served is the function a path is served by, or "".
func (r *routes) served(path string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byPath[path].FunctionID
}

// eventView rebuilds the trigger list from engine events the way the TUI
// does: one row per TriggerID.
type eventView struct {
	sub  *event.Subscription
	rows map[string]event.TriggerRegistered
}

func watchTriggers(t *testing.T, e *engine.Engine) *eventView {
	sub := e.Events().Subscribe(1024)
	t.Cleanup(sub.Close)
	return &eventView{sub: sub, rows: map[string]event.TriggerRegistered{}}
}

func (v *eventView) drain() {
	for {
		select {
		case ev := <-v.sub.C():
			switch ev := ev.(type) {
			case event.TriggerRegistered:
				v.rows[ev.TriggerID] = ev
			case event.TriggerUnregistered:
				delete(v.rows, ev.TriggerID)
			}
		default:
			return
		}
	}
}

// agrees checks the event view, the snapshot and want (binding id → owner
// worker id) all list the same bindings of type typ.
func (v *eventView) agrees(t *testing.T, e *engine.Engine, typ string, want map[string]string) {
	t.Helper()
	v.drain()
	if d := v.sub.Dropped(); d != 0 {
		t.Fatalf("event view dropped %d events", d)
	}
	got := map[string]string{}
	for _, tr := range e.Snapshot().Triggers {
		if tr.Type == typ {
			got[tr.ID] = tr.OwnerWorker
		}
	}
	fromEvents := map[string]string{}
	for id, r := range v.rows {
		if r.TriggerType == typ {
			fromEvents[id] = r.WorkerID
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(fromEvents) != fmt.Sprint(want) {
		t.Fatalf("bindings of %s: snapshot %v, events %v, want %v", typ, got, fromEvents, want)
	}
}

// TestSharedBindingOwnership: a second worker registering the same
// trigger (same function, type and config as JSON) shares the binding; it
// stays served while any owner is left and goes with the last one; the same
// route for another function is still refused.
func TestSharedBindingOwnership(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	rp := newRoutes()
	if err := te.RegisterTriggerType("routes-module", engine.TriggerType{ID: "route", Provider: rp}); err != nil {
		t.Fatal(err)
	}
	view := watchTriggers(t, te.Engine)

	oldW := enginetest.Dial(t, te.URL)
	oldW.Register("app::hello")
	oldW.Send(map[string]any{"type": "registertrigger", "id": "old-1", "trigger_type": "route", "function_id": "app::hello",
		"config": map[string]any{"path": "/hello/:name", "method": "GET", "timeout": 1}})
	oldW.Quiet()
	view.agrees(t, te.Engine, "route", map[string]string{"old-1": oldW.ID})

	// The replacement registers the same trigger: other id, keys in another
	// order, 1.0 for 1. The provider is not called again; the owner moves.
	newW := enginetest.Dial(t, te.URL)
	newW.Register("app::hello")
	newW.Send(`{"type":"registertrigger","id":"new-1","trigger_type":"route","function_id":"app::hello",` +
		`"config":{"timeout":1.0, "method":"GET","path":"/hello/:name"}}`)
	newW.Quiet()
	if got := rp.calls(); !slices.Equal(got, []string{"+old-1"}) {
		t.Fatalf("provider calls %v, want only +old-1", got)
	}
	view.agrees(t, te.Engine, "route", map[string]string{"old-1": newW.ID})
	if tr := findTrigger(te.Engine, "old-1"); tr == nil || !slices.Equal(tr.ClaimIDs, []string{"old-1", "new-1"}) || !tr.Active {
		t.Fatalf("shared binding %+v: want claims [old-1 new-1], active", tr)
	}

	// A genuine conflict: the same route for another function.
	other := enginetest.Dial(t, te.URL)
	other.Register("app::other")
	other.Send(map[string]any{"type": "registertrigger", "id": "other-1", "trigger_type": "route", "function_id": "app::other",
		"config": map[string]any{"path": "/hello/:name", "method": "GET", "timeout": 1}})
	res := other.Expect("triggerregistrationresult")
	if res["id"] != "other-1" || enginetest.ErrCode(res) != "trigger_registration_failed" {
		t.Fatalf("conflicting route: got %v, want trigger_registration_failed", res)
	}
	if rp.served("/hello/:name") != "app::hello" {
		t.Fatalf("route now served by %q after a refused conflict", rp.served("/hello/:name"))
	}
	view.agrees(t, te.Engine, "route", map[string]string{"old-1": newW.ID})

	// The first owner leaves: the binding stays, served, owned by the new one.
	oldW.Conn.CloseNow()
	enginetest.WaitFor(t, "old worker gone", func() bool { return !hasWorker(te.Engine, oldW.ID) })
	if got := rp.calls(); !slices.Equal(got, []string{"+old-1"}) || rp.served("/hello/:name") != "app::hello" {
		t.Fatalf("after the first owner left: provider calls %v, route served by %q", got, rp.served("/hello/:name"))
	}
	view.agrees(t, te.Engine, "route", map[string]string{"old-1": newW.ID})
	// Its id means nothing to others: a worker cannot remove a claim it does not own.
	other.Send(map[string]any{"type": "unregistertrigger", "id": "new-1"})
	other.Quiet()
	view.agrees(t, te.Engine, "route", map[string]string{"old-1": newW.ID})

	// The last owner removes it by the id it chose: the provider is told.
	newW.Send(map[string]any{"type": "unregistertrigger", "id": "new-1"})
	newW.Quiet()
	if got := rp.calls(); !slices.Equal(got, []string{"+old-1", "-old-1"}) || rp.served("/hello/:name") != "" {
		t.Fatalf("after the last owner left: provider calls %v, route served by %q", got, rp.served("/hello/:name"))
	}
	view.agrees(t, te.Engine, "route", map[string]string{})

	// Now the other function may take the route.
	other.Send(map[string]any{"type": "registertrigger", "id": "other-2", "trigger_type": "route", "function_id": "app::other",
		"config": map[string]any{"path": "/hello/:name"}})
	other.Quiet()
	if rp.served("/hello/:name") != "app::other" {
		t.Fatalf("route served by %q, want app::other", rp.served("/hello/:name"))
	}
	view.agrees(t, te.Engine, "route", map[string]string{"other-2": other.ID})
}

// TestSharedBindingLastDisconnect: two owners disconnect one after the
// other; the binding goes with the second. A different config is another
// binding.
func TestSharedBindingLastDisconnect(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	rp := newRoutes()
	if err := te.RegisterTriggerType("routes-module", engine.TriggerType{ID: "route", Provider: rp}); err != nil {
		t.Fatal(err)
	}
	view := watchTriggers(t, te.Engine)
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	for _, w := range []*enginetest.Worker{a, b} {
		w.Send(map[string]any{"type": "registertrigger", "id": uuid.NewString(), "trigger_type": "route", "function_id": "f",
			"config": map[string]any{"path": "/x"}})
		w.Quiet()
	}
	b.Send(map[string]any{"type": "registertrigger", "id": "b-y", "trigger_type": "route", "function_id": "f",
		"config": map[string]any{"path": "/y"}})
	b.Quiet()
	var xid string
	for _, tr := range te.Snapshot().Triggers {
		if tr.Type == "route" && pathOf(tr.Trigger) == "/x" {
			xid = tr.ID
		}
	}
	view.agrees(t, te.Engine, "route", map[string]string{xid: b.ID, "b-y": b.ID})

	b.Conn.CloseNow()
	enginetest.WaitFor(t, "b gone", func() bool { return !hasWorker(te.Engine, b.ID) })
	view.agrees(t, te.Engine, "route", map[string]string{xid: a.ID})
	if rp.served("/x") != "f" || rp.served("/y") != "" {
		t.Fatalf("after b left: /x by %q, /y by %q; want f and nothing", rp.served("/x"), rp.served("/y"))
	}
	a.Conn.CloseNow()
	enginetest.WaitFor(t, "a gone", func() bool { return !hasWorker(te.Engine, a.ID) })
	view.agrees(t, te.Engine, "route", map[string]string{})
	if got := rp.calls(); len(got) != 4 || rp.served("/x") != "" {
		t.Fatalf("provider calls %v: want /x and /y each registered and unregistered once", got)
	}
}

// TestSharedBindingRemoteProvider: a worker-provided trigger type sees one
// registertrigger for a shared binding and one unregistertrigger when the
// last owner goes; the listing shows it once, with its current owner.
func TestSharedBindingRemoteProvider(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	p := enginetest.Dial(t, te.URL)
	p.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "hooks"})
	p.Quiet()
	first := enginetest.Dial(t, te.URL)
	first.Send(map[string]any{"type": "registertrigger", "id": "h1", "trigger_type": "webhook", "function_id": "hook::in",
		"config": map[string]any{"url": "/in"}, "metadata": map[string]any{"v": 1}})
	if got := p.Expect("registertrigger"); got["id"] != "h1" {
		t.Fatalf("provider got %v", got)
	}
	second := enginetest.Dial(t, te.URL)
	second.Send(map[string]any{"type": "registertrigger", "id": "h2", "trigger_type": "webhook", "function_id": "hook::in",
		"config": map[string]any{"url": "/in"}, "metadata": map[string]any{"v": 1}})
	second.Quiet()
	p.Quiet() // same metadata: nothing to tell the provider

	caller := enginetest.Dial(t, te.URL)
	res := caller.Call("engine::registered-triggers::list", map[string]any{"trigger_type": "webhook"}, uuid.NewString())
	rows := res["result"].(map[string]any)["registered_triggers"].([]any)
	if len(rows) != 1 || rows[0].(map[string]any)["worker_name"] != second.ID || rows[0].(map[string]any)["id"] != "h1" {
		t.Fatalf("registered-triggers::list = %v, want one row h1 owned by %s", rows, second.ID)
	}
	info := caller.Call("engine::registered-triggers::info", map[string]any{"id": "h2"}, uuid.NewString())
	if r, _ := info["result"].(map[string]any); r == nil || r["id"] != "h1" {
		t.Fatalf("registered-triggers::info by the second claim's id = %v, want binding h1", info)
	}

	first.Conn.CloseNow()
	enginetest.WaitFor(t, "first gone", func() bool { return !hasWorker(te.Engine, first.ID) })
	p.Quiet() // no unregistertrigger: second still owns it
	second.Conn.CloseNow()
	if got := p.Expect("unregistertrigger"); got["id"] != "h1" {
		t.Fatalf("provider got %v, want unregistertrigger h1", got)
	}
}

// TestSharedBindingNewMetadata: a claim with other metadata takes over and
// the provider gets the binding again under the same id (providers replace
// by id), with the new metadata; when it leaves, the previous one's returns.
func TestSharedBindingNewMetadata(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	p := enginetest.Dial(t, te.URL)
	p.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "hooks"})
	p.Quiet()
	a := enginetest.Dial(t, te.URL)
	a.Send(map[string]any{"type": "registertrigger", "id": "m1", "trigger_type": "webhook", "function_id": "f",
		"config": map[string]any{}, "metadata": map[string]any{"v": 1}})
	p.Expect("registertrigger")
	b := enginetest.Dial(t, te.URL)
	b.Send(map[string]any{"type": "registertrigger", "id": "m2", "trigger_type": "webhook", "function_id": "f",
		"config": map[string]any{}, "metadata": map[string]any{"v": 2}})
	got := p.Expect("registertrigger")
	if got["id"] != "m1" || got["metadata"].(map[string]any)["v"] != 2.0 {
		t.Fatalf("provider got %v, want m1 again with metadata v=2", got)
	}
	b.Conn.CloseNow()
	got = p.Expect("registertrigger")
	if got["id"] != "m1" || got["metadata"].(map[string]any)["v"] != 1.0 {
		t.Fatalf("provider got %v, want m1 again with metadata v=1", got)
	}
}

func hasWorker(e *engine.Engine, id string) bool {
	for _, w := range e.Snapshot().Workers {
		if w.ID == id {
			return true
		}
	}
	return false
}

// TestClaimMovesToAnotherConfig: re-registering a trigger id with another
// config moves that registration to another binding; the binding it leaves
// keeps its id (and its provider's route) while others hold it, so the new
// binding gets an id of its own. The id still removes the registration.
func TestClaimMovesToAnotherConfig(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	rp := newRoutes()
	if err := te.RegisterTriggerType("routes-module", engine.TriggerType{ID: "route", Provider: rp}); err != nil {
		t.Fatal(err)
	}
	view := watchTriggers(t, te.Engine)
	a, b := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	a.Send(map[string]any{"type": "registertrigger", "id": "x", "trigger_type": "route", "function_id": "f", "config": map[string]any{"path": "/a"}})
	a.Quiet()
	b.Send(map[string]any{"type": "registertrigger", "id": "y", "trigger_type": "route", "function_id": "f", "config": map[string]any{"path": "/a"}})
	b.Quiet()
	a.Send(map[string]any{"type": "registertrigger", "id": "x", "trigger_type": "route", "function_id": "f", "config": map[string]any{"path": "/b"}})
	a.Quiet()
	var moved string
	for _, tr := range te.Snapshot().Triggers {
		if pathOf(tr.Trigger) == "/b" {
			moved = tr.ID
			if !slices.Equal(tr.ClaimIDs, []string{"x"}) {
				t.Errorf("/b binding claims %v, want [x]", tr.ClaimIDs)
			}
		}
	}
	if moved == "" || moved == "x" {
		t.Fatalf("the /b binding has id %q: want a new one (x still names the /a binding)", moved)
	}
	view.agrees(t, te.Engine, "route", map[string]string{"x": b.ID, moved: a.ID})
	if rp.served("/a") != "f" || rp.served("/b") != "f" {
		t.Fatalf("served: /a by %q, /b by %q; want both by f", rp.served("/a"), rp.served("/b"))
	}
	a.Send(map[string]any{"type": "unregistertrigger", "id": "x"})
	a.Quiet()
	view.agrees(t, te.Engine, "route", map[string]string{"x": b.ID})
	if rp.served("/a") != "f" || rp.served("/b") != "" {
		t.Fatalf("after unregistering x: /a by %q, /b by %q; want f and nothing", rp.served("/a"), rp.served("/b"))
	}
	// engine::unregister_trigger with a binding's id removes the binding.
	caller := enginetest.Dial(t, te.URL)
	res := caller.Call("engine::unregister_trigger", map[string]any{"id": "x"}, uuid.NewString())
	if res["result"].(map[string]any)["removed"] != true || rp.served("/a") != "" {
		t.Fatalf("unregister_trigger x: %v, /a served by %q", res, rp.served("/a"))
	}
	view.agrees(t, te.Engine, "route", map[string]string{})
}

// TestOwnerlessClaimJoins: engine::register_trigger of a trigger a worker
// holds shares its binding (the provider is not called again); the worker
// stays the listed owner; the binding outlives the worker and goes with the
// ownerless registration.
func TestOwnerlessClaimJoins(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	rp := newRoutes()
	if err := te.RegisterTriggerType("routes-module", engine.TriggerType{ID: "route", Provider: rp}); err != nil {
		t.Fatal(err)
	}
	view := watchTriggers(t, te.Engine)
	w := enginetest.Dial(t, te.URL)
	w.Send(map[string]any{"type": "registertrigger", "id": "w1", "trigger_type": "route", "function_id": "f", "config": map[string]any{"path": "/a"}})
	w.Quiet()
	caller := enginetest.Dial(t, te.URL)
	res := caller.Call("engine::register_trigger", map[string]any{"trigger_type": "route", "function_id": "f",
		"config": map[string]any{"path": "/a"}}, uuid.NewString())
	own, _ := res["result"].(map[string]any)["id"].(string)
	if own == "" || own == "w1" {
		t.Fatalf("register_trigger: %v, want a new id", res)
	}
	view.agrees(t, te.Engine, "route", map[string]string{"w1": w.ID})
	w.Conn.CloseNow()
	enginetest.WaitFor(t, "worker gone", func() bool { return !hasWorker(te.Engine, w.ID) })
	view.agrees(t, te.Engine, "route", map[string]string{"w1": ""})
	if rp.served("/a") != "f" {
		t.Fatal("the route went with the worker although an ownerless registration holds it")
	}
	res = caller.Call("engine::unregister_trigger", map[string]any{"id": own}, uuid.NewString())
	if res["result"].(map[string]any)["removed"] != true || rp.served("/a") != "" {
		t.Fatalf("unregister_trigger %s: %v; /a served by %q", own, res, rp.served("/a"))
	}
	view.agrees(t, te.Engine, "route", map[string]string{})
	if got := rp.calls(); !slices.Equal(got, []string{"+w1", "-w1"}) {
		t.Fatalf("provider calls %v, want [+w1 -w1]", got)
	}
}

// TestRefusedTwinWaits: a reloaded worker that changed a trigger's config
// (same function, so the provider refuses it while the old version's route
// is in the way) gets trigger_registration_failed, and its binding is
// parked, listed as not active, and served as soon as the old one goes.
func TestRefusedTwinWaits(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	rp := newRoutes()
	if err := te.RegisterTriggerType("routes-module", engine.TriggerType{ID: "route", Provider: rp}); err != nil {
		t.Fatal(err)
	}
	view := watchTriggers(t, te.Engine)
	oldW, newW := enginetest.Dial(t, te.URL), enginetest.Dial(t, te.URL)
	oldW.Send(map[string]any{"type": "registertrigger", "id": "o", "trigger_type": "route", "function_id": "f",
		"config": map[string]any{"path": "/a"}})
	oldW.Quiet()
	newW.Send(map[string]any{"type": "registertrigger", "id": "n", "trigger_type": "route", "function_id": "f",
		"config": map[string]any{"path": "/a", "auth": "bearer"}})
	res := newW.Expect("triggerregistrationresult")
	if res["id"] != "n" || enginetest.ErrCode(res) != "trigger_registration_failed" ||
		!strings.Contains(res["error"].(map[string]any)["message"].(string), "parked") {
		t.Fatalf("new version's route: got %v, want trigger_registration_failed saying it is parked", res)
	}
	view.agrees(t, te.Engine, "route", map[string]string{"o": oldW.ID, "n": newW.ID})
	if o, n := findTrigger(te.Engine, "o"), findTrigger(te.Engine, "n"); !o.Active || n.Active {
		t.Fatalf("active: o %v, n %v; want the served one only", o.Active, n.Active)
	}
	if view.rows["n"].Active {
		t.Fatal("the event stream lists the parked binding as active")
	}

	oldW.Conn.CloseNow()
	enginetest.WaitFor(t, "the parked binding served", func() bool {
		n := findTrigger(te.Engine, "n")
		return n != nil && n.Active
	})
	view.agrees(t, te.Engine, "route", map[string]string{"n": newW.ID})
	if !view.rows["n"].Active {
		t.Fatal("the event stream does not list the taken-over binding as active")
	}
	rp.mu.Lock()
	served := rp.byPath["/a"].ID
	rp.mu.Unlock()
	if served != "n" {
		t.Fatalf("/a served by trigger %q, want n", served)
	}
	if got := rp.calls(); !slices.Equal(got, []string{"+o", "-o", "+n"}) {
		t.Fatalf("provider calls %v, want [+o -o +n]", got)
	}
}

package engine_test

import (
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// The 0.25/0.26 SDKs replay their observers under the same ids, with the
// same observe (max_fires, expires_in_ms as first given), after a
// reconnect that starts with reattach: the observer carries on where it
// was (its fires count, its expiry), so max_fires bounds its fires across
// the reconnect. A connection that is not the worker's successor (no
// reattach, or a wrong token) starts the id afresh.
func TestObserverPolicyCarriesAcrossReattach(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := obsDial22(t, te.URL)
	host.Register("re::src")
	call := func(n int) {
		t.Helper()
		host.Send(map[string]any{"type": "invokefunction", "function_id": "re::src", "data": map[string]any{"n": n}, "action": map[string]any{"type": "void"}})
		host.answer(host.invoked("re::src"), map[string]any{"n": n})
	}
	// connect is a reconnect as the SDKs make it: reattach, registrations
	// replayed, features, then the observers.
	connect := func(prev *obsWorker, token string) *obsWorker {
		t.Helper()
		w := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
		if prev != nil {
			w.Send(map[string]any{"type": "reattach", "previous_worker_id": prev.ID, "reattach_token": token})
		}
		w.Register("re::t")
		w.declare("observe.v1")
		return w
	}
	observe := func(w *obsWorker, id string) {
		t.Helper()
		r := w.observe(map[string]any{"id": id, "source": map[string]any{"function_id": "re::src", "deliver": "input"},
			"target": map[string]any{"function_id": "re::t"}, "max_fires": 3})
		if r["state"] != "active" {
			t.Fatalf("observe %s: %v, want active", id, r)
		}
	}
	fire := func(w *obsWorker, n int) {
		t.Helper()
		call(n)
		w.answer(w.invoked("re::t"), nil)
	}
	drop := func(w *obsWorker) {
		t.Helper()
		w.Conn.Close(websocket.StatusGoingAway, "network")
		enginetest.WaitFor(t, "the old connection's cleanup", func() bool {
			for _, wi := range te.Snapshot().Workers {
				if wi.ID == w.ID {
					return false
				}
			}
			return true
		})
	}

	id := uuid.NewString()
	w1 := connect(nil, "")
	observe(w1, id)
	fire(w1, 1)
	fire(w1, 2)
	drop(w1)

	w2 := connect(w1, w1.Token)
	observe(w2, id) // the replay
	if info := observerInfo(t, te, id); info.Fires != 2 {
		t.Errorf("after the replay: fires %d, want 2 (carried over)", info.Fires)
	}
	fire(w2, 3)
	if m := w2.state(id); m["state"] != "disposed" || reasonCode(m) != "MAX_FIRES" || m["fires"] != float64(3) {
		t.Errorf("third fire in all: %v, want disposed MAX_FIRES after 3", m)
	}
	call(4)
	w2.none("invokefunction")

	// Not the worker's successor: the id starts again from zero.
	other := uuid.NewString()
	observe(w2, other)
	fire(w2, 5)
	drop(w2)
	w3 := connect(w2, "not-the-token")
	observe(w3, other)
	if info := observerInfo(t, te, other); info.Fires != 0 {
		t.Errorf("replayed by a connection with a wrong token: fires %d, want 0", info.Fires)
	}
}

// expires_in_ms counts from the first observe, not from each replay.
func TestObserverExpiryCarriesAcrossReattach(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	w1 := obsDial(t, te.URL, "observe.v1")
	w1.Register("rx::t")
	id := uuid.NewString()
	obs := map[string]any{"id": id, "source": map[string]any{"function_id": "rx::src"},
		"target": map[string]any{"function_id": "rx::t"}, "expires_in_ms": 600}
	w1.observe(obs)
	first := observerInfo(t, te, id).ExpiresAt
	time.Sleep(200 * time.Millisecond)
	w1.Conn.Close(websocket.StatusGoingAway, "network")
	enginetest.WaitFor(t, "the observer's disposal", func() bool { return len(te.Observers()) == 0 })

	w2 := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
	w2.Send(map[string]any{"type": "reattach", "previous_worker_id": w1.ID, "reattach_token": w1.Token})
	w2.Register("rx::t")
	w2.declare("observe.v1")
	obs["type"] = nil
	w2.observe(obs)
	again := observerInfo(t, te, id).ExpiresAt
	if first == nil || again == nil || !again.Equal(*first) {
		t.Errorf("expiry after the replay %v, want the first one %v", again, first)
	}
}

func observerInfo(t *testing.T, te *enginetest.Engine, id string) engine.ObserverInfo {
	t.Helper()
	for _, o := range te.Observers() {
		if o.ID == id {
			return o
		}
	}
	t.Fatalf("no observer %s", id)
	return engine.ObserverInfo{}
}

// Between a worker's lost connection and its SDK's replay, the observers
// it held are suspended, not gone: engine::observers::get describes them
// (state suspended, reason OBSERVER_DISCONNECTED), as the Rust SDK's own
// suite checks right after the reconnect; the replay makes them active.
// One already in error is not kept, and an unobserve from the successor
// forgets one before its replay.
func TestObserverSuspendedWhileItsWorkerIsAway(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := obsDial22(t, te.URL)
	host.Register("sus::src")
	w1 := obsDial(t, te.URL)
	w1.Register("sus::t")
	id, gone := uuid.NewString(), uuid.NewString()
	for _, oid := range []string{id, gone} {
		if r := w1.observe(map[string]any{"id": oid, "source": map[string]any{"function_id": "sus::src"},
			"target": map[string]any{"function_id": "sus::t"}}); r["state"] != "active" {
			t.Fatalf("observe %s: %v", oid, r)
		}
	}
	w1.Conn.Close(websocket.StatusGoingAway, "network")
	enginetest.WaitFor(t, "the old connection's cleanup", func() bool {
		for _, wi := range te.Snapshot().Workers {
			if wi.ID == w1.ID {
				return false
			}
		}
		return true
	})
	got := host.Call("engine::observers::get", map[string]any{"id": id}, uuid.NewString())
	r, _ := got["result"].(map[string]any)
	o, _ := r["observer"].(map[string]any)
	if o["id"] != id || o["state"] != "suspended" || reasonCode(o) != "OBSERVER_DISCONNECTED" {
		t.Fatalf("get while its worker is away = %v, want suspended OBSERVER_DISCONNECTED", got)
	}

	w2 := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
	w2.Send(map[string]any{"type": "reattach", "previous_worker_id": w1.ID, "reattach_token": w1.Token})
	w2.Register("sus::t")
	w2.declare("observe.v1")
	w2.Send(map[string]any{"type": "unobserve", "id": gone})
	if r := w2.observe(map[string]any{"id": id, "source": map[string]any{"function_id": "sus::src"},
		"target": map[string]any{"function_id": "sus::t"}}); r["state"] != "active" {
		t.Fatalf("replay: %v, want active", r)
	}
	if info := observerInfo(t, te, id); info.State != "active" {
		t.Errorf("after the replay: %+v, want active", info)
	}
	if r := host.Call("engine::observers::get", map[string]any{"id": gone}, uuid.NewString()); enginetest.ErrCode(r) != "OBSERVER_NOT_FOUND" {
		t.Errorf("get of an observer unobserved before its replay = %v, want OBSERVER_NOT_FOUND", r)
	}
}

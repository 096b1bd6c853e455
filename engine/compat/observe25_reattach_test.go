package compat_test

import (
	"testing"
	"time"
)

// TestPy25ObserverFiresCarryAcrossReconnect: the Python 0.25 SDK replays
// its observers (same id, same max_fires) after a reconnect that starts
// with reattach; the engine carries the observer's fires over, so an
// observer with max_fires 3 that fired twice fires once more, not three
// times.
func TestPy25ObserverFiresCarryAcrossReconnect(t *testing.T) {
	ctx := testContext(t)
	te := startEngine(t)
	tp := startTap(t, te.url)
	host := startPy25(t, te.url, "py25-rhost")
	obs := startPy25(t, tp.url, "py25-robs")
	for _, p := range []*py25{host, obs} {
		p.wait(ctx, "ready", is("ready"))
	}
	host.register(ctx, map[string]any{"id": "rh::src", "mode": "echo"})
	obs.register(ctx, map[string]any{"id": "ro::t"})
	if code := obs.observe(ctx, "r", map[string]any{"function_id": "rh::src"}, "ro::t", map[string]any{"max_fires": 3}); code != "" {
		t.Fatalf("observe: ready raised %s", code)
	}
	id := obs.wait(ctx, "the observer's id", is("ready", "ref", "r"))["id"].(string)
	call := func(ref string) {
		t.Helper()
		host.send(map[string]any{"cmd": "call", "ref": ref, "fn": "rh::src", "payload": map[string]any{"ref": ref}, "dispatch": "remote"})
		host.wait(ctx, "result of "+ref, is("result", "ref", ref))
	}
	call("c1")
	call("c2")
	obs.waitN(ctx, 2, "two activations", is("invoked", "function_id", "ro::t"))

	s1 := tp.session(t, ctx, 0)
	oldWorker := ""
	for _, o := range te.eng.Observers() {
		if o.ID == id {
			oldWorker = o.WorkerID
		}
	}
	s1.dropWorkerSide()
	tp.session(t, ctx, 1)
	waitCond(t, ctx, "the observer replayed on the new connection", func() bool {
		for _, o := range te.eng.Observers() {
			if o.ID == id && o.WorkerID != oldWorker && o.State == "active" {
				return true
			}
		}
		return false
	})
	for _, o := range te.eng.Observers() {
		if o.ID == id && o.Fires != 2 {
			t.Errorf("replayed observer: fires %d, want 2 (carried over)", o.Fires)
		}
	}
	call("c3")
	obs.waitN(ctx, 3, "the third activation", is("invoked", "function_id", "ro::t"))
	ev := obs.wait(ctx, "disposal", is("state", "ref", "r", "state", "disposed"))
	if r, _ := ev["reason"].(map[string]any); r["code"] != "MAX_FIRES" {
		t.Errorf("disposal %v, want MAX_FIRES", ev)
	}
	call("c4")
	time.Sleep(300 * time.Millisecond)
	if n := obs.count(is("invoked", "function_id", "ro::t")); n != 3 {
		t.Errorf("%d activations in all, want 3 (max_fires across the reconnect)", n)
	}
}

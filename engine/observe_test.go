package engine_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
)

// obsWorker is a raw worker that can wait for one frame type while frames
// of other types pile up for later.
type obsWorker struct {
	*enginetest.Worker
	held []map[string]any
}

func obsDial(t *testing.T, url string, features ...string) *obsWorker {
	t.Helper()
	w := &obsWorker{Worker: enginetest.Dial(t, url)}
	if len(features) > 0 {
		w.declare(features...)
	}
	return w
}

// obsDial22 dials a worker that declares itself as the 0.22 SDKs do:
// engine::workers::register with its metadata and no features.
func obsDial22(t *testing.T, url string) *obsWorker {
	t.Helper()
	w := &obsWorker{Worker: enginetest.Dial(t, url)}
	w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
		"data": map[string]any{"name": "w-" + w.ID[:8], "runtime": "node", "version": "0.22.1"}})
	return w
}

// declare sends engine::workers::register as the 0.25 SDKs do.
func (w *obsWorker) declare(features ...string) {
	w.T().Helper()
	w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
		"data": map[string]any{"name": "w-" + w.ID[:8], "runtime": "test", "features": features}})
}

// want returns the first frame of type typ that pred accepts (nil pred:
// any), held or new; other frames are held.
func (w *obsWorker) want(typ string, pred func(map[string]any) bool) map[string]any {
	w.T().Helper()
	ok := func(m map[string]any) bool { return m["type"] == typ && (pred == nil || pred(m)) }
	for i, m := range w.held {
		if ok(m) {
			w.held = append(w.held[:i], w.held[i+1:]...)
			return m
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			w.T().Fatalf("no %s frame within 5s; held %v", typ, w.held)
		}
		m := w.Next(left)
		if ok(m) {
			return m
		}
		w.held = append(w.held, m)
	}
}

// none asserts that no frame of type typ is held or arrives before a ping
// round trip.
func (w *obsWorker) none(typ string) {
	w.T().Helper()
	w.Send(`{"type":"ping"}`)
	for {
		m := w.Next(5 * time.Second)
		if m["type"] == "pong" {
			break
		}
		w.held = append(w.held, m)
	}
	for _, m := range w.held {
		if m["type"] == typ {
			w.T().Fatalf("unexpected %s frame %v", typ, m)
		}
	}
}

// Register registers fn and waits until the engine handled it (a
// functionregistered, if any, is held).
func (w *obsWorker) Register(fn string) {
	w.T().Helper()
	w.Send(map[string]any{"type": "registerfunction", "id": fn})
	w.none("registrationrejected")
}

func (w *obsWorker) observe(m map[string]any) map[string]any {
	w.T().Helper()
	m["type"] = "observe"
	if m["id"] == nil {
		m["id"] = uuid.NewString()
	}
	w.Send(m)
	id := m["id"]
	return w.want("observeresult", func(r map[string]any) bool { return r["id"] == id })
}

func (w *obsWorker) state(id string) map[string]any {
	w.T().Helper()
	return w.want("observerstatechanged", func(r map[string]any) bool { return r["id"] == id })
}

// answer answers one invokefunction with result.
func (w *obsWorker) answer(inv map[string]any, result any) {
	w.Send(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": inv["function_id"], "result": result})
}

func (w *obsWorker) invoked(fn string) map[string]any {
	w.T().Helper()
	return w.want("invokefunction", func(m map[string]any) bool { return m["function_id"] == fn })
}

func reasonCode(m map[string]any) string {
	for _, k := range []string{"reason", "error"} {
		if r, ok := m[k].(map[string]any); ok {
			c, _ := r["code"].(string)
			return c
		}
	}
	return ""
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestObserveRoutedCalls(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	// With a subscriber the router also publishes invocation events: the
	// observers must still see the calls.
	sub := te.Events().Subscribe(1024)
	defer sub.Close()
	host := obsDial22(t, te.URL) // the engine evaluates a 0.22 host's calls
	host.Register("obs::charge")
	observer := obsDial(t, te.URL, "observe.v1")
	observer.Register("obs::alert")
	caller := obsDial(t, te.URL)

	res := observer.observe(map[string]any{
		"source":   map[string]any{"function_id": "obs::charge", "filters": map[string]any{"input.amount": map[string]any{"$gte": 500}, "output.charged": map[string]any{"$exists": true}}},
		"target":   map[string]any{"function_id": "obs::alert"},
		"metadata": map[string]any{"team": "oncall"},
	})
	id, _ := res["id"].(string)
	if res["state"] != "active" {
		t.Fatalf("observeresult %v, want active", res)
	}

	for _, amount := range []int{100, 900} {
		caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "obs::charge", "data": map[string]any{"amount": amount}})
		inv := host.invoked("obs::charge")
		host.answer(inv, map[string]any{"charged": amount})
		caller.want("invocationresult", nil)
	}
	act := observer.invoked("obs::alert")
	a, _ := act["activation"].(map[string]any)
	if a["observer_id"] != id || a["activation_id"] == nil || act["observe_depth"] != float64(1) {
		t.Errorf("activation frame %v: want activation {observer_id %s, activation_id} and observe_depth 1", act, id)
	}
	if asJSON(act["metadata"]) != `{"team":"oncall"}` {
		t.Errorf("activation metadata %v, want the observer's", act["metadata"])
	}
	env, _ := act["data"].(map[string]any)
	caller1, _ := env["caller"].(map[string]any)
	if env["observer_id"] != id || env["function_id"] != "obs::charge" || env["status"] != "success" ||
		asJSON(env["input"]) != `{"amount":900}` || asJSON(env["output"]) != `{"charged":900}` ||
		caller1["worker_id"] != caller.ID || env["started_at_ms"] == nil || env["activation_id"] != a["activation_id"] {
		t.Errorf("envelope %s: want observer %s, input {amount 900} without _caller_worker_id, output, caller %s", asJSON(env), id, caller.ID)
	}
	observer.answer(act, nil)
	observer.none("invokefunction") // the call of 100 did not match
	for activated := false; !activated; {
		select {
		case ev := <-sub.C():
			a, ok := ev.(event.ObserverActivated)
			activated = ok && a.ObserverID == id && a.SourceFunction == "obs::charge" && a.Depth == 1
		case <-time.After(5 * time.Second):
			t.Fatal("no ObserverActivated event")
		}
	}

	// engine::observers::get shows the filters in normal form.
	got := caller.Call("engine::observers::get", map[string]any{"id": id}, uuid.NewString())
	shown, _ := got["result"].(map[string]any)["observer"].(map[string]any)
	if asJSON(shown["filters"]) != `{"$and":[{"input.amount":{"$gte":500}},{"output.charged":{"$exists":true}}]}` || shown["state"] != "active" || shown["fires"] != float64(1) {
		t.Errorf("engine::observers::get = %v", got)
	}
	if snap := te.Snapshot(); len(snap.Observers) != 1 || snap.Observers[0].Target != "obs::alert" {
		t.Errorf("Snapshot().Observers = %+v", snap.Observers)
	}
	// engine::snapshot (what iii tui reads) lists it as source → target.
	if got := asJSON(caller.Call("engine::snapshot", nil, uuid.NewString())["result"]); !strings.Contains(got,
		`"fires":1,`) || !strings.Contains(got, `"source":"obs::charge","state":"active","target":"obs::alert"`) {
		t.Errorf("engine::snapshot observers: %s", got)
	}

	observer.Send(map[string]any{"type": "unobserve", "id": id})
	if m := observer.state(id); m["state"] != "disposed" || reasonCode(m) != "UNOBSERVED" {
		t.Errorf("after unobserve: %v, want disposed UNOBSERVED", m)
	}
	if r := caller.Call("engine::observers::get", map[string]any{"id": id}, uuid.NewString()); enginetest.ErrCode(r) != "OBSERVER_NOT_FOUND" {
		t.Errorf("get after dispose = %v, want OBSERVER_NOT_FOUND", r)
	}
}

func TestObserveHostHandshakeAndV2(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := obsDial(t, te.URL)
	// Registration before the declaration, as the SDKs replay it.
	host.Send(map[string]any{"type": "registerfunction", "id": "obs::topics", "private": true,
		"args_format": map[string]any{"type": "object", "required": []string{"topic"}, "properties": map[string]any{"topic": map[string]any{"type": "string"}}}})
	host.Send(map[string]any{"type": "registerfunction", "id": "obs::bad", "args_format": map[string]any{"type": "thing"}})
	rej := host.want("registrationrejected", nil)
	if rej["code"] != "INVALID_ARGS_FORMAT" || rej["function_id"] != "obs::bad" {
		t.Errorf("registrationrejected %v, want INVALID_ARGS_FORMAT for obs::bad", rej)
	}
	host.declare("observe.v1", "observe.v2", "local-dispatch.v1")
	fr := host.want("functionregistered", nil)
	if fr["id"] != "obs::topics" || fr["local_dispatch"] != true || fr["namespace"] != "default" || asJSON(fr["observers"]) != "[]" {
		t.Errorf("functionregistered %v", fr)
	}
	observer := obsDial(t, te.URL, "observe.v1")
	observer.Register("obs::a")
	caller := obsDial(t, te.URL)

	// target must be an object: the frame is malformed, dropped and counted.
	observer.Send(map[string]any{"type": "observe", "id": "m", "source": map[string]any{"function_id": "obs::topics"}, "target": "x"})
	observer.none("observeresult")
	r := observer.observe(map[string]any{"source": map[string]any{"function_id": "obs::topics", "args": map[string]any{}}, "target": map[string]any{"function_id": "obs::a"}})
	if r["state"] != "error" || reasonCode(r) != "INVALID_ARGS" {
		t.Errorf("observe without a required arg: %v, want error INVALID_ARGS", r)
	}
	r = observer.observe(map[string]any{"source": map[string]any{"function_id": "obs::topics", "args": map[string]any{"topic": "a"}}, "target": map[string]any{"function_id": "obs::a"},
		"metadata": map[string]any{"route": 1}})
	id, _ := r["id"].(string)
	if r["state"] != "pending" {
		t.Fatalf("observe of a v1 host's function: %v, want pending until the host acks", r)
	}
	added := host.want("observeradded", nil)
	view, _ := added["observer"].(map[string]any)
	if view["id"] != id || view["target"] != "obs::a" || asJSON(view["args"]) != `{"topic":"a"}` || asJSON(view["filters"]) != "{}" ||
		asJSON(view["capture"]) != `["input","output","caller"]` || view["on"] != "success" || view["metadata"] != nil {
		t.Errorf("observeradded %v", added)
	}
	host.Send(map[string]any{"type": "observerack", "function_id": "obs::topics", "id": id, "revision": added["revision"]})
	if m := observer.state(id); m["state"] != "active" {
		t.Fatalf("after the ack: %v, want active", m)
	}

	// Private: only the host may call it.
	if res := caller.Call("obs::topics", map[string]any{"topic": "a"}, uuid.NewString()); enginetest.ErrCode(res) != "FORBIDDEN" {
		t.Errorf("call of a private function from another worker = %v, want FORBIDDEN", res)
	}
	// The host's routed calls: matched [] activates nothing, matched [id]
	// activates, delivered activates nothing; the fields never reach the caller.
	for i, report := range []map[string]any{{"matched": []string{}}, {"matched": []string{id}}, {"delivered": true}} {
		host.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "obs::topics", "data": map[string]any{"topic": "a", "n": i}})
		inv := host.invoked("obs::topics")
		res := map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": "obs::topics", "result": map[string]any{"n": i}}
		for k, v := range report {
			res[k] = v
		}
		host.Send(res)
		got := host.want("invocationresult", nil)
		if _, leaked := got["matched"]; leaked || got["delivered"] != nil {
			t.Errorf("result forwarded with the host's report: %v", got)
		}
	}
	act := observer.invoked("obs::a")
	if env, _ := act["data"].(map[string]any); asJSON(env["input"]) != `{"n":1,"topic":"a"}` {
		t.Errorf("activation %v: want the call matched [id] (n 1)", act)
	}
	observer.answer(act, nil)
	observer.none("invokefunction")

	// A call through the observer: the payload as given, the observer's
	// metadata, the target's result back to the host.
	host.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "obs::a", "data": map[string]any{"path": "/x"},
		"activation": map[string]any{"observer_id": id}})
	through := observer.invoked("obs::a")
	if asJSON(through["data"]) != `{"path":"/x"}` || asJSON(through["metadata"]) != `{"route":1}` {
		t.Errorf("call through the observer reached the target as %v", through)
	}
	observer.answer(through, map[string]any{"status": 200})
	if res := host.want("invocationresult", nil); asJSON(res["result"]) != `{"status":200}` {
		t.Errorf("call through the observer answered %v", res)
	}
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "obs::a", "data": 1, "activation": map[string]any{"observer_id": id}})
	if res := caller.want("invocationresult", nil); enginetest.ErrCode(res) != "NOT_FUNCTION_OWNER" {
		t.Errorf("call through another worker's observer = %v, want NOT_FUNCTION_OWNER", res)
	}

	// A late rejection puts the observer in error; the engine keeps it
	// until unobserve.
	host.Send(map[string]any{"type": "observerack", "function_id": "obs::topics", "id": id, "revision": added["revision"],
		"error": map[string]any{"code": "TOPIC_FORBIDDEN", "message": "not this one"}})
	if m := observer.state(id); m["state"] != "error" || reasonCode(m) != "TOPIC_FORBIDDEN" {
		t.Errorf("after a late rejection: %v, want error TOPIC_FORBIDDEN", m)
	}
	if m := host.want("observerremoved", nil); m["id"] != id {
		t.Errorf("observerremoved %v", m)
	}
	host.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "obs::a", "data": 1, "activation": map[string]any{"observer_id": id}})
	if res := host.want("invocationresult", nil); enginetest.ErrCode(res) != "OBSERVER_NOT_ACTIVE" {
		t.Errorf("call through an observer in error = %v, want OBSERVER_NOT_ACTIVE", res)
	}
}

func TestObservePolicies(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := obsDial22(t, te.URL)
	host.Register("pol::src")
	observer := obsDial(t, te.URL, "observe.v1")
	observer.Register("pol::t")
	call := func(n int) {
		host.Send(map[string]any{"type": "invokefunction", "function_id": "pol::src", "data": map[string]any{"n": n}, "action": map[string]any{"type": "void"}})
		host.answer(host.invoked("pol::src"), map[string]any{"n": n})
	}

	t.Run("max_fires", func(t *testing.T) {
		r := observer.observe(map[string]any{"source": map[string]any{"function_id": "pol::src", "deliver": "input"}, "target": map[string]any{"function_id": "pol::t"}, "max_fires": 2})
		id := r["id"].(string)
		for n := range 3 {
			call(n)
		}
		for n := range 2 {
			act := observer.invoked("pol::t")
			if asJSON(act["data"]) != `{"n":`+string(rune('0'+n))+`}` {
				t.Errorf("activation %d delivered %v, want the input alone", n, act["data"])
			}
			observer.answer(act, nil)
		}
		if m := observer.state(id); m["state"] != "disposed" || reasonCode(m) != "MAX_FIRES" || m["fires"] != float64(2) {
			t.Errorf("after 2 fires: %v, want disposed MAX_FIRES", m)
		}
		observer.none("invokefunction")
	})

	t.Run("expires_in_ms", func(t *testing.T) {
		r := observer.observe(map[string]any{"source": map[string]any{"function_id": "pol::src"}, "target": map[string]any{"function_id": "pol::t"}, "expires_in_ms": 50})
		id := r["id"].(string)
		if m := observer.state(id); m["state"] != "disposed" || reasonCode(m) != "EXPIRED" {
			t.Errorf("expiry: %v, want disposed EXPIRED", m)
		}
		call(9)
		observer.none("invokefunction")
	})

	t.Run("max_in_flight queues the rest", func(t *testing.T) {
		r := observer.observe(map[string]any{"source": map[string]any{"function_id": "pol::src", "capture": []string{}}, "target": map[string]any{"function_id": "pol::t"}, "max_in_flight": 1})
		id := r["id"].(string)
		call(1)
		call(2)
		first := observer.invoked("pol::t")
		env, _ := first["data"].(map[string]any)
		if _, has := env["input"]; has || env["status"] != "success" {
			t.Errorf("capture [] envelope %v: want ids, status and timing only", env)
		}
		observer.none("invokefunction") // the second waits for the first
		observer.answer(first, nil)
		observer.answer(observer.invoked("pol::t"), nil)
		observer.Send(map[string]any{"type": "unobserve", "id": id})
		observer.state(id)
	})

	t.Run("loop guard", func(t *testing.T) {
		r := observer.observe(map[string]any{"source": map[string]any{"function_id": "pol::src"}, "target": map[string]any{"function_id": "pol::t"}})
		id := r["id"].(string)
		for _, depth := range []int{engine.MaxObserveDepth - 1, engine.MaxObserveDepth} {
			host.Send(map[string]any{"type": "invokefunction", "function_id": "pol::src", "data": 1, "observe_depth": depth, "action": map[string]any{"type": "void"}})
			host.answer(host.invoked("pol::src"), 1)
		}
		act := observer.invoked("pol::t")
		if act["observe_depth"] != float64(engine.MaxObserveDepth) {
			t.Errorf("activation at depth %v, want %d", act["observe_depth"], engine.MaxObserveDepth)
		}
		observer.answer(act, nil)
		if m := observer.state(id); m["state"] != "active" || reasonCode(m) != "LOOP_GUARD" {
			t.Errorf("loop guard: %v, want active with reason LOOP_GUARD", m)
		}
		observer.none("invokefunction")
	})
}

func TestObserveBadInputAndLifecycle(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := obsDial(t, te.URL)
	host.Send(map[string]any{"type": "registerfunction", "id": "bad::src",
		"request_format": map[string]any{"type": "object", "properties": map[string]any{"amount": map[string]any{"type": "number"}}, "additionalProperties": false}})
	host.Send(map[string]any{"type": "registerfunction", "id": "bad::closed", "observe": map[string]any{"allow": false}})
	host.Quiet()
	observer := obsDial(t, te.URL, "observe.v1")
	target := obsDial(t, te.URL)
	target.Register("bad::t")
	src := func(extra map[string]any) map[string]any {
		s := map[string]any{"function_id": "bad::src"}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	tgt := map[string]any{"function_id": "bad::t"}
	for _, tt := range []struct {
		name string
		msg  map[string]any
		code string
	}{
		{"self target", map[string]any{"source": src(nil), "target": map[string]any{"function_id": "bad::src"}}, "SELF_TARGET"},
		{"invalid filter", map[string]any{"source": src(map[string]any{"filters": map[string]any{"input.amount": 5}}), "target": tgt}, "INVALID_FILTER"},
		{"filter path outside a closed request_format", map[string]any{"source": src(map[string]any{"filters": map[string]any{"input.amout": map[string]any{"$gt": 1}}}), "target": tgt}, "INVALID_FILTER_PATH"},
		{"args without args_format", map[string]any{"source": src(map[string]any{"args": map[string]any{"x": 1}}), "target": tgt}, "INVALID_ARGS"},
		{"not observable", map[string]any{"source": map[string]any{"function_id": "bad::closed"}, "target": tgt}, "NOT_OBSERVABLE"},
		{"unknown capture", map[string]any{"source": src(map[string]any{"capture": []string{"body"}}), "target": tgt}, "INVALID_ARGS"},
	} {
		if r := observer.observe(tt.msg); r["state"] != "error" || reasonCode(r) != tt.code {
			t.Errorf("%s: %v, want error %s", tt.name, r, tt.code)
		}
	}

	// A missing function: pending, with a warning, until it is registered.
	r := observer.observe(map[string]any{"source": map[string]any{"function_id": "bad::later"}, "target": tgt})
	lateID := r["id"].(string)
	if w, _ := r["warnings"].([]any); r["state"] != "pending" || len(w) != 1 || !strings.Contains(w[0].(string), "bad::later") {
		t.Errorf("observe of a missing function: %v, want pending with a warning", r)
	}
	late := obsDial(t, te.URL)
	late.Register("bad::later")
	if m := observer.state(lateID); m["state"] != "active" {
		t.Errorf("once the function is registered: %v, want active", m)
	}

	// An id held by another connection.
	other := obsDial(t, te.URL, "observe.v1")
	if r := other.observe(map[string]any{"id": lateID, "source": src(nil), "target": tgt}); reasonCode(r) != "OBSERVER_ID_CONFLICT" {
		t.Errorf("observe under a held id: %v, want OBSERVER_ID_CONFLICT", r)
	}
	// A replay on the same connection answers the current state.
	if r := observer.observe(map[string]any{"id": lateID, "source": map[string]any{"function_id": "bad::later"}, "target": tgt}); r["state"] != "active" {
		t.Errorf("replay: %v, want active", r)
	}

	// The target leaves: suspended; back: active.
	target.Conn.CloseNow()
	if m := observer.state(lateID); m["state"] != "suspended" || reasonCode(m) != "TARGET_UNAVAILABLE" {
		t.Errorf("target gone: %v, want suspended TARGET_UNAVAILABLE", m)
	}
	back := obsDial(t, te.URL)
	back.Register("bad::t")
	if m := observer.state(lateID); m["state"] != "active" {
		t.Errorf("target back: %v, want active", m)
	}

	// The observing connection closes: its observers go.
	observer.Conn.CloseNow()
	enginetest.WaitFor(t, "the observer to be disposed", func() bool { return len(te.Observers()) == 0 })
}

func TestObserveLocalDispatchReports(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	sub := te.Events().Subscribe(256)
	defer sub.Close()
	host := obsDial(t, te.URL)
	host.Register("loc::f")
	host.declare("observe.v1", "local-dispatch.v1")
	if fr := host.want("functionregistered", nil); fr["local_dispatch"] != true {
		t.Fatalf("functionregistered %v, want local_dispatch", fr)
	}
	observer := obsDial(t, te.URL, "observe.v1")
	observer.Register("loc::t")
	r := observer.observe(map[string]any{"source": map[string]any{"function_id": "loc::f", "capture": []string{"input", "output"}}, "target": map[string]any{"function_id": "loc::t"}})
	id := r["id"].(string)
	added := host.want("observeradded", nil)
	host.Send(map[string]any{"type": "observerack", "function_id": "loc::f", "id": id, "revision": added["revision"]})
	observer.state(id)

	inv := uuid.NewString()
	host.Send(map[string]any{"type": "invocationsobserved", "items": []map[string]any{
		{"function_id": "loc::f", "invocation_id": inv, "matched": []string{id}, "status": "success", "input": map[string]any{"n": 1},
			"output_is_input": true, "started_at_ms": time.Now().UnixMilli(), "duration_ms": 0.2, "observe_depth": 0},
		{"function_id": "loc::f", "invocation_id": uuid.NewString(), "matched": []string{"no-such-observer"}, "status": "success", "started_at_ms": 1, "duration_ms": 0},
	}})
	act := observer.invoked("loc::t")
	env, _ := act["data"].(map[string]any)
	if env["invocation_id"] != inv || asJSON(env["input"]) != `{"n":1}` || asJSON(env["output"]) != `{"n":1}` {
		t.Errorf("activation of a local call: %s", asJSON(env))
	}
	observer.answer(act, nil)
	host.Send(map[string]any{"type": "localinvocationstats", "window_ms": 10000, "functions": []map[string]any{{"function_id": "loc::f", "count": 5, "errors": 1, "duration_ms_sum": 2.5}},
		"dropped_reports": []any{}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sawLocal, sawStats bool
	for !sawLocal || !sawStats {
		select {
		case ev := <-sub.C():
			if s := asJSON(ev); strings.Contains(s, `"Trigger":"local"`) && strings.Contains(s, inv) {
				sawLocal = true
			} else if strings.Contains(s, `"Count":5`) {
				sawStats = true
			}
		case <-ctx.Done():
			t.Fatalf("events: local invocation %v, stats %v", sawLocal, sawStats)
		}
	}
}

func TestObserveNamespaces(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	host := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
	host.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
		"data": map[string]any{"name": "shop-host", "namespace": "shop", "features": []string{"observe.v1"}}})
	host.Register("ns::f")
	if fr := host.want("functionregistered", nil); fr["id"] != "ns::f" || fr["namespace"] != "shop" {
		t.Errorf("functionregistered %v, want ns::f in shop", fr)
	}
	// A registration replayed before the declaration is acknowledged in the
	// namespace the declaration names.
	early := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
	early.Send(map[string]any{"type": "registerfunction", "id": "ns::g"})
	early.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
		"data": map[string]any{"name": "shop2-host", "namespace": "shop2", "features": []string{"observe.v1"}}})
	if fr := early.want("functionregistered", nil); fr["id"] != "ns::g" || fr["namespace"] != "shop2" {
		t.Errorf("functionregistered %v, want ns::g in shop2", fr)
	}
	observer := obsDial(t, te.URL, "observe.v1")
	observer.Register("ns::t")
	target := map[string]any{"function_id": "ns::t"}
	if r := observer.observe(map[string]any{"source": map[string]any{"function_id": "ns::f"}, "target": target}); r["state"] != "pending" {
		t.Errorf("observe of ns::f in default: %v, want pending (it lives in shop)", r)
	}
	r := observer.observe(map[string]any{"source": map[string]any{"function_id": "ns::f", "namespace": "shop"}, "target": target})
	id := r["id"].(string)
	added := host.want("observeradded", nil)
	if added["namespace"] != "shop" {
		t.Errorf("observeradded %v, want namespace shop", added)
	}
	host.Send(map[string]any{"type": "observerack", "function_id": "ns::f", "namespace": "shop", "id": id, "revision": added["revision"]})
	if m := observer.state(id); m["state"] != "active" {
		t.Fatalf("%v, want active", m)
	}
	host.Send(map[string]any{"type": "invokefunction", "function_id": "ns::f", "namespace": "shop", "data": 1, "action": map[string]any{"type": "void"}})
	host.answer(host.invoked("ns::f"), 2)
	act := observer.invoked("ns::t")
	if env, _ := act["data"].(map[string]any); env["namespace"] != "shop" || env["output"] != float64(2) {
		t.Errorf("activation %v, want the call in shop", act)
	}
	observer.answer(act, nil)
}

// An observer made while its source's host has connected but not yet
// declared itself (the SDKs replay registrations first) waits for the
// declaration: an observe.v1 host then acks it before it goes active; a
// 0.22 host's declaration makes it active; a host that never declares
// releases it after the grace.
func TestObserverWaitsForHostDeclaration(t *testing.T) {
	// Long enough that a slow machine never runs out of it before the
	// host declares; the last case sets its own.
	engine.SetDeclareGraceForTest(t, time.Minute)
	te := enginetest.New(t, engine.Options{})
	observer := obsDial(t, te.URL, "observe.v1")
	observer.Register("dw::t")
	observe := func(src string) string {
		t.Helper()
		r := observer.observe(map[string]any{"source": map[string]any{"function_id": src}, "target": map[string]any{"function_id": "dw::t"}})
		if r["state"] != "pending" {
			t.Fatalf("observe of %s before its host declared: %v, want pending", src, r)
		}
		return r["id"].(string)
	}

	t.Run("observe host acks first", func(t *testing.T) {
		host := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
		host.Register("dw::v1")
		id := observe("dw::v1")
		host.declare("observe.v1")
		fr := host.want("functionregistered", nil)
		obs, _ := fr["observers"].([]any)
		if len(obs) != 1 || obs[0].(map[string]any)["id"] != id {
			t.Fatalf("functionregistered %v, want observer %s", fr, id)
		}
		observer.none("observerstatechanged") // not active before the ack
		host.Send(map[string]any{"type": "observerack", "function_id": "dw::v1", "id": id, "revision": fr["revision"]})
		if m := observer.state(id); m["state"] != "active" {
			t.Fatalf("after the host's ack: %v, want active", m)
		}
	})

	t.Run("0.22 host", func(t *testing.T) {
		host := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
		host.Register("dw::old")
		id := observe("dw::old")
		host.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
			"data": map[string]any{"name": "old", "runtime": "node", "version": "0.22.1"}})
		if m := observer.state(id); m["state"] != "active" {
			t.Fatalf("after a 0.22 declaration: %v, want active", m)
		}
		host.none("functionregistered")
	})

	t.Run("host never declares", func(t *testing.T) {
		const grace = 300 * time.Millisecond
		engine.SetDeclareGraceForTest(t, grace)
		start := time.Now()
		host := &obsWorker{Worker: enginetest.Dial(t, te.URL)}
		host.Register("dw::raw")
		id := observe("dw::raw")
		if m := observer.state(id); m["state"] != "active" {
			t.Fatalf("after the grace: %v, want active", m)
		}
		if d := time.Since(start); d < grace {
			t.Errorf("active after %v, before the %v grace", d, grace)
		}
	})
}

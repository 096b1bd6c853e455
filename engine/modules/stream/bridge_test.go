package stream_test

import (
	"testing"

	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/pubsub" // the backend's pub/sub in TestBridgeEvents
	"github.com/iii-workbench/iii/engine/modules/stream"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// TestBridge: an engine whose streams live in a second engine (bridge_url,
// iii's bridge adapter). Each engine has a Redis of its own, so whatever
// one reads back of the other's writes went over the bridge; the front's
// own subscribers see the changes made through it, from its first sync on.
func TestBridge(t *testing.T) {
	ctx := enginetest.Context(t)
	backend := startEngine(t, ctx, storetest.Mini(t).URL, "")
	front := startEngine(t, ctx, storetest.Mini(t).URL, ", bridge_url: "+backend.srv.URL())
	item := func(id string, more ...any) map[string]any {
		m := map[string]any{"stream_name": "s", "group_id": "g", "item_id": id}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i].(string)] = more[i+1]
		}
		return m
	}

	backend.call(t, ctx, "stream::set", item("a", "data", 1))
	sub := dial(t, ctx, front.mod.URL())
	sub.join(ctx, "sub-g", "s", "g", nil)
	sub.expect(ctx, "sync", "s", "g", "<null>", `[1]`) // read from the backend

	assertJSON(t, "set b on the front", front.call(t, ctx, "stream::set", item("b", "data", map[string]any{"n": 1, "s": "a"})),
		`{"old_value":null,"new_value":{"n":1,"s":"a"}}`)
	sub.expect(ctx, "create", "s", "g", "b", `{"n":1,"s":"a"}`)
	assertJSON(t, "b on the backend", backend.call(t, ctx, "stream::get", item("b")), `{"n":1,"s":"a"}`)

	assertJSON(t, "update b on the front",
		front.call(t, ctx, "stream::update", item("b", "ops", []any{
			map[string]any{"type": "increment", "path": "n", "by": 5},
			map[string]any{"type": "increment", "path": "s", "by": 1},
		})),
		`{"old_value":{"n":1,"s":"a"},"new_value":{"n":6,"s":"a"},"errors":[{"op_index":1,"code":"increment.not_number","message":"expected a number at path \"s\", got a string"}]}`)
	sub.expect(ctx, "update", "s", "g", "b", `{"n":6,"s":"a"}`)

	assertJSON(t, "get a on the front", front.call(t, ctx, "stream::get", item("a")), `1`)
	if got := front.call(t, ctx, "stream::get", item("none")); got != nil {
		t.Errorf("get of a missing item = %s, want no result", got)
	}
	assertJSON(t, "list on the front", front.call(t, ctx, "stream::list", map[string]any{"stream_name": "s", "group_id": "g"}), `[1,{"n":6,"s":"a"}]`)
	assertJSON(t, "list_groups on the front", front.call(t, ctx, "stream::list_groups", map[string]any{"stream_name": "s"}), `["g"]`)
	assertJSON(t, "list_all on the front", front.call(t, ctx, "stream::list_all", nil), `{"stream":[{"id":"s","groups":["g"]}],"count":1}`)

	assertJSON(t, "delete a on the front", front.call(t, ctx, "stream::delete", item("a")), `{"old_value":1}`)
	sub.expect(ctx, "delete", "s", "g", "a", `1`)
	if got := backend.call(t, ctx, "stream::get", item("a")); got != nil {
		t.Errorf("a on the backend after the delete = %s, want no result", got)
	}

	// Bad input is refused on the front, before the bridge.
	if _, err := front.callErr(ctx, "stream::set", item("c")); errCode(err) != "deserialization_error" {
		t.Errorf("set without data: %v, want deserialization_error", err)
	}
}

// TestBridgeEvents: two engines bridged to one backend see each other's
// changes through the backend's pub/sub topic stream.events, as iii's
// bridged engines do; each engine's own subscribers get its changes once.
func TestBridgeEvents(t *testing.T) {
	ctx := enginetest.Context(t)
	cfg := enginetest.ModuleConfig(storetest.Mini(t).URL, "StreamModule", "{port: 0}") + "  - class: PubSubModule\n"
	backend := enginetest.Start(t, ctx, cfg)
	a := startEngine(t, ctx, storetest.Mini(t).URL, ", bridge_url: "+backend.URL())
	b := startEngine(t, ctx, storetest.Mini(t).URL, ", bridge_url: "+backend.URL())
	subA, subB := dial(t, ctx, a.mod.URL()), dial(t, ctx, b.mod.URL())
	for _, s := range []*wsClient{subA, subB} {
		s.join(ctx, "sub", "s", "g", nil)
		s.expect(ctx, "sync", "s", "g", "<null>", `[]`)
	}
	// Each engine's subscription to the topic is made on its first
	// connection; wait until the backend has both.
	enginetest.WaitFor(t, "both engines subscribed to stream.events", func() bool {
		n := 0
		for _, tr := range backend.Engine().Snapshot().Triggers {
			if tr.Type == "subscribe" {
				n++
			}
		}
		return n == 2
	})

	a.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "x", "data": map[string]any{"z": 1, "a": 2}})
	subA.expect(ctx, "create", "s", "g", "x", `{"z":1,"a":2}`)
	subB.expect(ctx, "create", "s", "g", "x", `{"z":1,"a":2}`)
	b.call(t, ctx, "stream::send", map[string]any{"stream_name": "s", "group_id": "g", "type": "ping", "data": 1})
	// Each subscriber's next frame is B's event, not an echo of a change
	// seen already; and after it, the next change, not an echo of B's event.
	for name, sub := range map[string]*wsClient{"A": subA, "B": subB} {
		if m := sub.read(ctx); m.eventType() != stream.EventCustom {
			t.Errorf("%s's subscriber got %s, want B's custom event", name, m)
		}
	}
	a.call(t, ctx, "stream::delete", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "x"})
	subA.expect(ctx, "delete", "s", "g", "x", `{"z":1,"a":2}`)
	subB.expect(ctx, "delete", "s", "g", "x", `{"z":1,"a":2}`)
}

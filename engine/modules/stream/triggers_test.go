package stream_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

// TestJoinLeaveHandlers: a stream:join handler of a Go SDK worker refuses
// one stream (the client gets "unauthorized" and no pushes) and admits
// another; stream:leave handlers run on leave and on socket close.
func TestJoinLeaveHandlers(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, "")
	w := sdkWorker(t, ctx, te, "auth-worker")
	joins, leaves := newRecorder(), newRecorder()
	err := w.RegisterFunction("auth::join", func(_ context.Context, in json.RawMessage) (any, error) {
		joins.add(in)
		var ev struct {
			StreamName string `json:"stream_name"`
		}
		json.Unmarshal(in, &ev)
		return map[string]any{"unauthorized": ev.StreamName == "secret"}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterFunction("auth::leave", func(_ context.Context, in json.RawMessage) (any, error) {
		leaves.add(in)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []sdk.Trigger{
		{Type: "stream:join", FunctionID: "auth::join"},
		{Type: "stream:leave", FunctionID: "auth::leave"},
		// Filtered to another stream: never called here.
		{Type: "stream:join", FunctionID: "auth::leave", Config: map[string]any{"stream_name": "elsewhere"}},
	} {
		if _, err := w.RegisterTrigger(tr); err != nil {
			t.Fatal(err)
		}
	}
	te.waitBindings(t, ctx, "stream:join", 2)
	te.waitBindings(t, ctx, "stream:leave", 1)

	c := dial(t, ctx, te.mod.URL())
	c.join(ctx, "sub-secret", "secret", "g", ptr("i"))
	m := c.expect(ctx, "unauthorized", "secret", "g", "i", "")
	assertJSON(t, "unauthorized event", m.Event, `{"type":"unauthorized"}`)
	assertJSON(t, "join handler input", joins.wait(t, ctx, 1, "join handler")[0],
		`{"subscription_id":"sub-secret","stream_name":"secret","group_id":"g","id":"i","context":null}`)

	c.join(ctx, "sub-open", "open", "g", nil)
	c.expect(ctx, "sync", "open", "g", "<null>", `[]`)

	// No push for the refused subscription: the next frame is open's.
	te.call(t, ctx, "stream::set", map[string]any{"stream_name": "secret", "group_id": "g", "item_id": "i", "data": 1})
	te.call(t, ctx, "stream::set", map[string]any{"stream_name": "open", "group_id": "g", "item_id": "i", "data": 2})
	c.expect(ctx, "create", "open", "g", "i", `2`)

	c.leave(ctx, "sub-open", "open", "g")
	assertJSON(t, "leave handler input", leaves.wait(t, ctx, 1, "leave handler")[0],
		`{"subscription_id":"sub-open","stream_name":"open","group_id":"g","id":null,"context":null}`)

	// Closing the socket leaves every remaining subscription.
	c.join(ctx, "sub-a", "open", "a", nil)
	c.expect(ctx, "sync", "open", "a", "<null>", `[]`)
	c.join(ctx, "sub-b", "open", "b", ptr("x"))
	c.expect(ctx, "sync", "open", "b", "x", `null`)
	c.conn.CloseNow()
	got := leaves.wait(t, ctx, 3, "leave handler after close")
	assertJSON(t, "leave on close (1)", got[1], `{"subscription_id":"sub-a","stream_name":"open","group_id":"a","id":null,"context":null}`)
	assertJSON(t, "leave on close (2)", got[2], `{"subscription_id":"sub-b","stream_name":"open","group_id":"b","id":"x","context":null}`)
	if n := len(joins.snapshot()); n != 4 {
		t.Errorf("join handler called %d times, want 4 (the stream-filtered binding never)", n)
	}
}

// TestAuthFunction: the configured auth function sees the upgrade request
// and its context reaches join handlers; its failure does not refuse the
// socket.
func TestAuthFunction(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, ", auth_function: auth::ws")
	w := sdkWorker(t, ctx, te, "auth-worker")
	auths, joins := newRecorder(), newRecorder()
	w.RegisterFunction("auth::ws", func(_ context.Context, in json.RawMessage) (any, error) {
		auths.add(in)
		var req struct {
			QueryParams map[string][]string `json:"query_params"`
		}
		json.Unmarshal(in, &req)
		if len(req.QueryParams["token"]) == 0 {
			return nil, sdk.Errorf("denied", "no token")
		}
		return map[string]any{"context": map[string]any{"user": req.QueryParams["token"][0]}}, nil
	})
	w.RegisterFunction("auth::join", func(_ context.Context, in json.RawMessage) (any, error) {
		joins.add(in)
		return map[string]any{}, nil
	})
	w.RegisterTrigger(sdk.Trigger{Type: "stream:join", FunctionID: "auth::join"})
	// The worker's frames are handled in order: once the binding is
	// active, its functions are registered.
	te.waitBindings(t, ctx, "stream:join", 1)

	c := dial(t, ctx, te.mod.URL()+"?token=u1&x=1&x=2")
	c.join(ctx, "s1", "s", "g", nil)
	c.expect(ctx, "sync", "s", "g", "<null>", `[]`)
	var req struct {
		Headers     map[string]string   `json:"headers"`
		Path        string              `json:"path"`
		QueryParams map[string][]string `json:"query_params"`
		Addr        string              `json:"addr"`
	}
	json.Unmarshal(auths.wait(t, ctx, 1, "auth function")[0], &req)
	if req.Path != "/" || req.Addr == "" || req.Headers["upgrade"] != "websocket" ||
		len(req.QueryParams["x"]) != 2 || req.QueryParams["token"][0] != "u1" {
		t.Errorf("auth input = %+v", req)
	}
	assertJSON(t, "join with context", joins.wait(t, ctx, 1, "join")[0],
		`{"subscription_id":"s1","stream_name":"s","group_id":"g","id":null,"context":{"user":"u1"}}`)

	// The auth function fails: connected anyway, without context.
	c2 := dial(t, ctx, te.mod.URL())
	c2.join(ctx, "s2", "s", "g", nil)
	c2.expect(ctx, "sync", "s", "g", "<null>", `[]`)
	assertJSON(t, "join without context", joins.wait(t, ctx, 2, "join")[1],
		`{"subscription_id":"s2","stream_name":"s","group_id":"g","id":null,"context":null}`)
}

// TestStreamTrigger: stream bindings get the wrapper as payload, filtered
// by stream, group, item and condition function.
func TestStreamTrigger(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, "")
	w := sdkWorker(t, ctx, te, "trigger-worker")
	all, item, never, cond := newRecorder(), newRecorder(), newRecorder(), newRecorder()
	for id, r := range map[string]*recorder{"t::all": all, "t::item": item, "t::never": never} {
		w.RegisterFunction(id, func(_ context.Context, in json.RawMessage) (any, error) {
			r.add(in)
			return nil, nil
		})
	}
	w.RegisterFunction("t::cond", func(_ context.Context, in json.RawMessage) (any, error) {
		cond.add(in)
		return false, nil
	})
	for _, tr := range []sdk.Trigger{
		{Type: "stream", FunctionID: "t::all", Config: map[string]any{"stream_name": "s"}},
		{Type: "stream", FunctionID: "t::item", Config: map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i1"}},
		{Type: "stream", FunctionID: "t::never", Config: map[string]any{"stream_name": "s", "condition_function_id": "t::cond"}},
		{Type: "stream", FunctionID: "t::never", Config: map[string]any{"stream_name": "other"}},
	} {
		if _, err := w.RegisterTrigger(tr); err != nil {
			t.Fatal(err)
		}
	}
	te.waitBindings(t, ctx, "stream", 4)

	te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i2", "data": map[string]any{"v": 1}})
	te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i1", "data": map[string]any{"v": 2}})
	te.call(t, ctx, "stream::send", map[string]any{"stream_name": "s", "group_id": "g2", "type": "ping", "data": nil})

	got := all.wait(t, ctx, 3, "t::all")
	kinds := map[string]bool{}
	for _, in := range got {
		var m msg
		json.Unmarshal(in, &m)
		m.raw = in
		if m.Type != "stream" || m.Timestamp == 0 || m.StreamName != "s" {
			t.Errorf("payload %s: want a stream wrapper on s", in)
		}
		kinds[m.eventType()+"/"+m.GroupID+"/"+m.id()] = true
	}
	for _, k := range []string{"create/g/i2", "create/g/i1", "event/g2/<null>"} {
		if !kinds[k] {
			t.Errorf("t::all payloads %s: missing %s", got, k)
		}
	}
	in := item.wait(t, ctx, 1, "t::item")[0]
	var m msg
	json.Unmarshal(in, &m)
	m.Timestamp = 0
	assertJSON(t, "t::item payload", []byte(mustJSON(t, m)),
		`{"type":"stream","timestamp":0,"streamName":"s","groupId":"g","id":"i1","event":{"type":"create","data":{"v":2}}}`)
	cond.wait(t, ctx, 3, "condition") // one per change on s
	if n := len(never.snapshot()); n != 0 {
		t.Errorf("t::never called %d times, want 0 (condition false, other stream)", n)
	}
	if n := len(item.snapshot()); n != 1 {
		t.Errorf("t::item called %d times, want 1", n)
	}

	// Bad binding configs are refused with a reason.
	for _, cfg := range []string{`{}`, `{"stream_name":""}`, `"s"`, `{"stream_name":5}`} {
		_, err := te.eng().RegisterTrigger(ctx, engine.Trigger{Type: "stream", FunctionID: "t::all", Config: json.RawMessage(cfg)})
		if errCode(err) != "trigger_registration_failed" {
			t.Errorf("stream binding with config %s: %v, want trigger_registration_failed", cfg, err)
		}
	}
}

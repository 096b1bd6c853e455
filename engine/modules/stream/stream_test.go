package stream_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// TestPushes: a raw client joins a group and an item, sees the sync, then
// the create/update/delete/event pushes of stream::set/update/delete/send
// made through the engine; a left subscription gets nothing more.
func TestPushes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, "")

		// Changes race joins (a change made just before a join may be
		// pushed after its sync), so every join below follows the last
		// change's push to some client.
		group := dial(t, ctx, te.mod.URL())
		group.join(ctx, "sub-g", "s", "g", nil)
		group.expect(ctx, "sync", "s", "g", "<null>", `[]`)
		assertJSON(t, "set a",
			te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "a", "data": map[string]any{"n": 0}}),
			`{"old_value":null,"new_value":{"n":0}}`)
		group.expect(ctx, "create", "s", "g", "a", `{"n":0}`)
		group.join(ctx, "sub-g2", "s", "g2", nil)
		group.expect(ctx, "sync", "s", "g2", "<null>", `[]`)

		item := dial(t, ctx, te.mod.URL())
		item.join(ctx, "sub-b", "s", "g", ptr("b"))
		item.expect(ctx, "sync", "s", "g", "b", `null`)

		// create
		assertJSON(t, "set b",
			te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "b", "data": map[string]any{"n": 1}}),
			`{"old_value":null,"new_value":{"n":1}}`)
		group.expect(ctx, "create", "s", "g", "b", `{"n":1}`)
		item.expect(ctx, "create", "s", "g", "b", `{"n":1}`)

		// update of another item: only the group subscriber sees it
		assertJSON(t, "set a again",
			te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "a", "data": map[string]any{"n": 2}}),
			`{"old_value":{"n":0},"new_value":{"n":2}}`)
		group.expect(ctx, "update", "s", "g", "a", `{"n":2}`)

		// stream::update
		assertJSON(t, "update b",
			te.call(t, ctx, "stream::update", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "b",
				"ops": []any{map[string]any{"type": "increment", "path": "n", "by": 5}}}),
			`{"old_value":{"n":1},"new_value":{"n":6}}`)
		group.expect(ctx, "update", "s", "g", "b", `{"n":6}`)
		item.expect(ctx, "update", "s", "g", "b", `{"n":6}`) // not a's update

		// stream::update of a missing item creates it
		assertJSON(t, "update c",
			te.call(t, ctx, "stream::update", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "c",
				"ops": []any{map[string]any{"type": "set", "path": "k", "value": "v"}}}),
			`{"old_value":null,"new_value":{"k":"v"}}`)
		group.expect(ctx, "create", "s", "g", "c", `{"k":"v"}`)

		// custom events: group-wide (id null) and item-addressed
		if res := te.call(t, ctx, "stream::send", map[string]any{"stream_name": "s", "group_id": "g", "type": "ping", "data": map[string]any{"x": 1}}); res != nil {
			t.Errorf("stream::send result %s, want none", res)
		}
		group.expect(ctx, "event", "s", "g", "<null>", `{"type":"ping","data":{"x":1}}`)
		te.call(t, ctx, "stream::send", map[string]any{"stream_name": "s", "group_id": "g", "id": "b", "type": "poke", "data": "hi"})
		group.expect(ctx, "event", "s", "g", "b", `{"type":"poke","data":"hi"}`)
		item.expect(ctx, "event", "s", "g", "b", `{"type":"poke","data":"hi"}`) // not the group-wide ping

		// delete: data is the old value
		assertJSON(t, "delete b",
			te.call(t, ctx, "stream::delete", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "b"}),
			`{"old_value":{"n":6}}`)
		group.expect(ctx, "delete", "s", "g", "b", `{"n":6}`)
		item.expect(ctx, "delete", "s", "g", "b", `{"n":6}`)

		// leave: no more pushes for s/g; s/g2 still flows
		group.leave(ctx, "sub-g", "s", "g")
		item.leave(ctx, "sub-b", "s", "g")
		// A client's frames are handled in order: once a later join's sync
		// arrives, the leave is done.
		for _, c := range []*wsClient{group, item} {
			c.join(ctx, "probe", "probe", "probe", nil)
			c.expect(ctx, "sync", "probe", "probe", "<null>", `[]`)
		}
		te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "b", "data": 7})
		te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g2", "item_id": "z", "data": 8})
		group.expect(ctx, "create", "s", "g2", "z", `8`)

		// A fresh group join syncs the current items, ordered by item id.
		fresh := dial(t, ctx, te.mod.URL())
		fresh.join(ctx, "x", "s", "g", nil)
		fresh.expect(ctx, "sync", "s", "g", "<null>", `[{"n":2},7,{"k":"v"}]`)

		// A client with a group and an item subscription matching one
		// change gets it once.
		fresh.join(ctx, "y", "s", "g", ptr("c"))
		fresh.expect(ctx, "sync", "s", "g", "c", `{"k":"v"}`)
		te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "c", "data": 9})
		te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "a", "data": 10})
		fresh.expect(ctx, "update", "s", "g", "c", `9`)
		fresh.expect(ctx, "update", "s", "g", "a", `10`)
	})
}

// TestFunctions: the stream::* results against Redis, including deleting a
// missing item (no push) and names that contain ':'.
func TestFunctions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, "")
		set := func(s, g, i string, v any) {
			te.call(t, ctx, "stream::set", map[string]any{"stream_name": s, "group_id": g, "item_id": i, "data": v})
		}
		set("a", "b:c", "1", "x")
		set("a:b", "c", "1", "y")
		set("a", "g", "2", map[string]any{"deep": []any{1, "two", nil}})
		set("z", "g", "1", nil)

		for _, tc := range []struct {
			fn   string
			in   map[string]any
			want string
		}{
			{"stream::get", map[string]any{"stream_name": "a", "group_id": "b:c", "item_id": "1"}, `"x"`},
			{"stream::get", map[string]any{"stream_name": "a:b", "group_id": "c", "item_id": "1"}, `"y"`},
			{"stream::get", map[string]any{"stream_name": "a", "group_id": "g", "item_id": "2"}, `{"deep":[1,"two",null]}`},
			// A missing item is no result at all (as state::get): the Node
			// SDK sees undefined. A stored null is null.
			{"stream::get", map[string]any{"stream_name": "a", "group_id": "g", "item_id": "missing"}, ``},
			{"stream::get", map[string]any{"stream_name": "z", "group_id": "g", "item_id": "1"}, `null`},
			{"stream::list", map[string]any{"stream_name": "a", "group_id": "b:c"}, `["x"]`},
			{"stream::list", map[string]any{"stream_name": "a", "group_id": "nothing"}, `[]`},
			{"stream::list", map[string]any{"stream_name": "z", "group_id": "g"}, `[null]`},
			{"stream::list_groups", map[string]any{"stream_name": "a"}, `["b:c","g"]`},
			{"stream::list_groups", map[string]any{"stream_name": "nope"}, `[]`},
			{"stream::list_all", map[string]any{}, `{"stream":[{"id":"a","groups":["b:c","g"]},{"id":"a:b","groups":["c"]},{"id":"z","groups":["g"]}],"count":3}`},
			{"stream::delete", map[string]any{"stream_name": "a", "group_id": "g", "item_id": "missing"}, `{"old_value":null}`},
			{"stream::delete", map[string]any{"stream_name": "a:b", "group_id": "c", "item_id": "1"}, `{"old_value":"y"}`},
			// the emptied stream and group are gone from the listings
			{"stream::list_groups", map[string]any{"stream_name": "a:b"}, `[]`},
			{"stream::list_all", nil, `{"stream":[{"id":"a","groups":["b:c","g"]},{"id":"z","groups":["g"]}],"count":2}`},
		} {
			got := te.call(t, ctx, tc.fn, tc.in)
			if tc.want == "" {
				if got != nil {
					t.Errorf("%s %s = %s, want no result", tc.fn, mustJSON(t, tc.in), got)
				}
				continue
			}
			assertJSON(t, tc.fn+" "+mustJSON(t, tc.in), got, tc.want)
		}

		// A failed update op is reported; the others apply.
		set("u", "g", "1", map[string]any{"n": "text"})
		got := te.call(t, ctx, "stream::update", map[string]any{"stream_name": "u", "group_id": "g", "item_id": "1",
			"ops": []any{map[string]any{"type": "increment", "path": "n", "by": 1}, map[string]any{"type": "set", "path": "m", "value": true}}})
		var res struct {
			Old    json.RawMessage   `json:"old_value"`
			New    json.RawMessage   `json:"new_value"`
			Errors []json.RawMessage `json:"errors"`
		}
		if err := json.Unmarshal(got, &res); err != nil {
			t.Fatal(err)
		}
		assertJSON(t, "update new_value", res.New, `{"n":"text","m":true}`)
		if len(res.Errors) != 1 || !strings.Contains(string(res.Errors[0]), `"op_index":0`) {
			t.Errorf("update errors = %s, want one error for op 0", got)
		}
	})
}

// TestBadFunctionInput: missing or mistyped fields get deserialization_error
// and change nothing.
func TestBadFunctionInput(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, "")
	for _, tc := range []struct {
		fn   string
		in   any
		want string // part of the message
	}{
		{"stream::set", nil, "input must be a JSON object"},
		{"stream::set", "text", "input must be a JSON object"},
		{"stream::set", map[string]any{"group_id": "g", "item_id": "i", "data": 1}, "stream_name"},
		{"stream::set", map[string]any{"stream_name": "", "group_id": "g", "item_id": "i", "data": 1}, "stream_name"},
		{"stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i"}, "missing field `data`"},
		{"stream::set", map[string]any{"stream_name": 5, "group_id": "g", "item_id": "i", "data": 1}, "stream_name"},
		{"stream::get", map[string]any{"stream_name": "s", "group_id": "g"}, "item_id"},
		{"stream::delete", map[string]any{"stream_name": "s", "item_id": "i"}, "group_id"},
		{"stream::list", map[string]any{"stream_name": "s"}, "group_id"},
		{"stream::list_groups", map[string]any{}, "stream_name"},
		{"stream::send", map[string]any{"stream_name": "s", "group_id": "g", "data": 1}, "type"},
		{"stream::send", map[string]any{"stream_name": "s", "group_id": "g", "type": "t"}, "missing field `data`"},
		{"stream::update", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i"}, "ops"},
		{"stream::update", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i", "ops": []any{map[string]any{"type": "explode"}}}, "explode"},
		{"stream::update", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i", "ops": "set"}, "ops"},
	} {
		_, err := te.callErr(ctx, tc.fn, tc.in)
		if errCode(err) != "deserialization_error" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s(%s): error %v, want deserialization_error mentioning %q", tc.fn, mustJSON(t, tc.in), err, tc.want)
		}
	}
	assertJSON(t, "streams after bad input", te.call(t, ctx, "stream::list_all", nil), `{"stream":[],"count":0}`)
}

// TestBadFrames: garbage from a client is ignored and its socket stays
// open; paths other than "/" are 404.
func TestBadFrames(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, "")
	c := dial(t, ctx, te.mod.URL()+"?token=abc")
	for _, frame := range []string{
		`not json`,
		`{}`,
		`[1,2]`,
		`{"type":"join"}`,
		`{"type":"join","data":{"streamName":"s","groupId":"g"}}`,
		`{"type":"join","data":{"subscriptionId":"x","streamName":5,"groupId":"g"}}`,
		`{"type":"leave","data":{}}`,
		`{"type":"subscribe","data":{"subscriptionId":"x","streamName":"s","groupId":"g"}}`,
		`{"type":"leave","data":{"subscriptionId":"never-joined","streamName":"s","groupId":"g"}}`,
	} {
		c.sendRaw(ctx, frame)
	}
	if err := c.conn.Write(ctx, websocket.MessageBinary, []byte{0xff, 0x00}); err != nil {
		t.Fatal(err)
	}
	c.join(ctx, "ok", "s", "g", nil)
	c.expect(ctx, "sync", "s", "g", "<null>", `[]`)
	if !strings.Contains(te.logs.String(), "undecodable stream client message ignored") {
		t.Error("bad frames were not logged")
	}

	for _, path := range []string{"/stream/s/g/", "/x", "/ws"} {
		resp, err := http.Get("http://" + te.mod.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, resp.StatusCode)
		}
	}

	// A frame over max_message_bytes closes only that socket (1009).
	big := dial(t, ctx, te.mod.URL())
	big.sendRaw(ctx, `{"type":"join","data":{"subscriptionId":"`+strings.Repeat("x", 70<<10)+`","streamName":"s","groupId":"g"}}`)
	if _, _, err := big.conn.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("after an oversized frame: %v, want close 1009", err)
	}
	te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
	c.expect(ctx, "create", "s", "g", "i", `1`)
}

// TestStopClosesClients: Stop closes stream sockets with 1001 and frees the
// port.
func TestStopClosesClients(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, "")
	c := dial(t, ctx, te.mod.URL())
	c.join(ctx, "a", "s", "g", nil)
	c.expect(ctx, "sync", "s", "g", "<null>", `[]`)
	readErr := make(chan error, 1)
	// Exits when the server closes the socket (the client answers the
	// close handshake while reading).
	go func() {
		_, _, err := c.conn.Read(ctx)
		readErr <- err
	}()
	if err := te.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("after Stop: %v, want close 1001", err)
	}
	if _, _, err := websocket.Dial(ctx, te.mod.URL(), nil); err == nil {
		t.Error("dial after Stop succeeded")
	}
}

// TestConfig: iii's adapter block is accepted (and ignored); bad values
// fail start-up naming the key; a taken port fails Start and releases
// everything.
func TestConfig(t *testing.T) {
	ctx := enginetest.Context(t)
	url := storetest.Mini(t).URL
	start := func(moduleConfig string) error {
		cfgText := fmt.Sprintf("engine: {host: 127.0.0.1, port: 0}\nredis: {url: %q}\nmodules:\n  - class: modules::stream::StreamModule\n    config: {%s}\n", url, moduleConfig)
		return enginetest.TryStart(ctx, cfgText)
	}
	if err := start(`port: 0, host: 127.0.0.1, adapter: {class: modules::stream::adapters::RedisAdapter, config: {redis_url: "redis://x"}}`); err != nil {
		t.Errorf("iii adapter block: %v", err)
	}
	taken := startEngine(t, ctx, url, "")
	takenPort := taken.mod.Addr()[strings.LastIndex(taken.mod.Addr(), ":")+1:]
	for _, tc := range []struct{ config, want string }{
		{`port: -1`, "port -1 out of range"},
		{`port: 0, queue_size: 0`, "queue_size 0"},
		{`port: 0, write_timeout_ms: 0`, "write_timeout_ms 0"},
		{`port: 0, max_message_bytes: 10`, "max_message_bytes 10"},
		{`port: 0, handler_timeout_ms: -5`, "handler_timeout_ms -5"},
		{`port: 0, queue: 5`, "queue"},
		{`port: "x"`, "port"},
		// devserver turns this into the flag to use (its TestModulePortInUse).
		{`port: ` + takenPort, "module stream: start: listen on 127.0.0.1:" + takenPort},
	} {
		err := start(tc.config)
		t.Logf("{%s}: %v", tc.config, err)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config {%s}: error %v, want one mentioning %q", tc.config, err, tc.want)
		}
	}
}

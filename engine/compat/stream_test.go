package compat_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/modules/stream"
)

// startStreamServer runs an engine (embedded Redis) with the stream
// module on a free port and returns it with the stream WebSocket URL.
func startStreamServer(t *testing.T, ctx context.Context) (*enginetest.Server, string) {
	t.Helper()
	srv := startServer(t, ctx, "engine: {port: 0}\nmodules:\n  - class: StreamModule\n    config: {port: 0}\n")
	m, ok := srv.Modules().Get("stream")
	if !ok {
		t.Fatal("stream module not started")
	}
	return srv, m.(*stream.Module).URL()
}

// streamClient is a raw stream-API WebSocket client (spec §8), as a
// browser would speak it.
type streamClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialStream(t *testing.T, ctx context.Context, url string) *streamClient {
	t.Helper()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial stream API %s: %v", url, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &streamClient{t: t, conn: conn}
}

func (c *streamClient) join(ctx context.Context, sub, streamName, group string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]any{"type": "join",
		"data": map[string]any{"subscriptionId": sub, "streamName": streamName, "groupId": group}})
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("join %s: %v", sub, err)
	}
}

// expect reads the next wrapper and compares it, timestamp aside, with
// {"type":"stream","streamName","groupId","id","event"}.
func (c *streamClient) expect(ctx context.Context, streamName, group string, id any, event any) {
	c.t.Helper()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("stream API read: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		c.t.Fatalf("stream frame %q: %v", b, err)
	}
	if ts, _ := got["timestamp"].(float64); ts <= 0 {
		c.t.Errorf("stream frame %s: no unix-ms timestamp", b)
	}
	delete(got, "timestamp")
	assertJSON(c.t, "stream frame", got, map[string]any{"type": "stream", "streamName": streamName, "groupId": group, "id": id, "event": event})
}

// TestStreamRealClients: each SDK's worker refuses joins to one stream
// through a stream:join handler, changes another stream with
// stream::set/update/send/delete, and sees the stream trigger payloads;
// a raw WebSocket client sees the sync and every push.
func TestStreamRealClients(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	srv, streamURL := startStreamServer(t, ctx)
	ws := make(map[lang]*workerProc)
	for _, l := range langs {
		ws[l] = startWorker(t, l, srv.URL(), string(l)+"stream")
	}
	for _, l := range langs {
		ws[l].ready(t, ctx)
	}
	for _, l := range langs {
		w := ws[l]
		t.Run(string(l), func(t *testing.T) {
			secret, open := string(l)+"-secret", string(l)+"-open"
			w.do(t, ctx, map[string]any{"op": "register_function", "ref": "deny", "function_id": w.fn("deny"),
				"result": map[string]any{"unauthorized": true}}, "function_registered")
			w.do(t, ctx, map[string]any{"op": "bind", "ref": "join", "type_id": "stream:join", "function_id": w.fn("deny"),
				"config": map[string]any{"stream_name": secret}}, "bound")
			w.do(t, ctx, map[string]any{"op": "bind", "ref": "watch", "type_id": "stream", "function_id": w.fn("sink"),
				"config": map[string]any{"stream_name": open, "group_id": "room"}}, "bound")

			c := dialStream(t, ctx, streamURL)
			c.join(ctx, "s1", secret, "room")
			c.expect(ctx, secret, "room", nil, map[string]any{"type": "unauthorized"})
			inv := w.invoked(t, ctx, w.fn("deny"), nil)
			assertJSON(t, "stream:join payload seen by "+string(l), inv["data"], map[string]any{
				"subscription_id": "s1", "stream_name": secret, "group_id": "room", "id": nil, "context": nil})

			c.join(ctx, "s2", open, "room")
			c.expect(ctx, open, "room", nil, map[string]any{"type": "sync", "data": []any{}})

			item := map[string]any{"stream_name": open, "group_id": "room", "item_id": "u1"}
			with := func(extra map[string]any) map[string]any {
				out := map[string]any{}
				for k, v := range item {
					out[k] = v
				}
				for k, v := range extra {
					out[k] = v
				}
				return out
			}
			steps := []struct {
				fn      string
				payload map[string]any
				result  any
				id      any
				event   map[string]any
			}{
				{"stream::set", with(map[string]any{"data": map[string]any{"name": "Ada"}}),
					map[string]any{"old_value": nil, "new_value": map[string]any{"name": "Ada"}},
					"u1", map[string]any{"type": "create", "data": map[string]any{"name": "Ada"}}},
				{"stream::update", with(map[string]any{"ops": []any{map[string]any{"type": "set", "path": "by", "value": string(l)}}}),
					map[string]any{"old_value": map[string]any{"name": "Ada"}, "new_value": map[string]any{"name": "Ada", "by": string(l)}},
					"u1", map[string]any{"type": "update", "data": map[string]any{"name": "Ada", "by": string(l)}}},
				{"stream::get", item, map[string]any{"name": "Ada", "by": string(l)}, nil, nil},
				{"stream::list", map[string]any{"stream_name": open, "group_id": "room"}, []any{map[string]any{"name": "Ada", "by": string(l)}}, nil, nil},
				{"stream::send", map[string]any{"stream_name": open, "group_id": "room", "type": "typing", "data": map[string]any{"who": "Ada"}},
					nil, nil, map[string]any{"type": "event", "event": map[string]any{"type": "typing", "data": map[string]any{"who": "Ada"}}}},
				{"stream::delete", item, map[string]any{"old_value": map[string]any{"name": "Ada", "by": string(l)}},
					"u1", map[string]any{"type": "delete", "data": map[string]any{"name": "Ada", "by": string(l)}}},
			}
			pushes := 0
			for _, s := range steps {
				out := w.call(t, ctx, s.fn, s.payload)
				if out.str("event") != "result" {
					t.Fatalf("%s from %s: %v", s.fn, l, out)
				}
				assertJSON(t, s.fn+" result seen by "+string(l), out["result"], s.result)
				if s.event == nil {
					continue
				}
				pushes++
				c.expect(ctx, open, "room", s.id, s.event)
				// The stream trigger gets the same wrapper.
				invs := w.waitEvents(t, ctx, pushes, "stream trigger call", func(e event) bool {
					return e.str("event") == "invoked" && e.str("function_id") == w.fn("sink") && e.obj("data")["type"] == "stream"
				})
				got := invs[pushes-1].obj("data")
				delete(got, "timestamp")
				assertJSON(t, s.fn+" stream trigger payload seen by "+string(l), got, map[string]any{
					"type": "stream", "streamName": open, "groupId": "room", "id": s.id, "event": s.event})
			}
			w.do(t, ctx, map[string]any{"op": "unbind", "ref": "join"}, "unbound")
			w.do(t, ctx, map[string]any{"op": "unbind", "ref": "watch"}, "unbound")
		})
	}
}

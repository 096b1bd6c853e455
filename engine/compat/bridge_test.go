package compat_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/modules/stream"
)

// TestBridgeAdapter: the pair of engines of iii's SDK bridge fixtures
// (sdk/fixtures/config-bridge-backend.yaml and config-bridge.yaml), in
// iii's config format: a backend, and an engine whose iii-state and
// iii-stream use the `bridge` adapter pointed at it. Node and Python
// workers of the bridged engine set, update, read and delete state and
// stream items through it; the backend holds them, and the bridged engine's
// own stream subscribers see the changes.
func TestBridgeAdapter(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	backend := startServer(t, ctx, `workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-stream
    config: {host: 127.0.0.1, port: 0, adapter: {name: kv, config: {store_method: in_memory}}}
  - name: iii-state
    config: {adapter: {name: kv, config: {store_method: in_memory}}}
`)
	front := startServer(t, ctx, fmt.Sprintf(`workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-stream
    config: {host: 127.0.0.1, port: 0, adapter: {name: bridge, config: {bridge_url: %[1]q}}}
  - name: iii-state
    config: {adapter: {name: bridge, config: {bridge_url: %[1]q}}}
`, backend.URL()))
	sm, ok := front.Modules().Get("stream")
	if !ok {
		t.Fatalf("modules running on the bridged engine: %v; want stream", front.Modules().IDs())
	}
	onBackend := func(fn string, in any) json.RawMessage {
		t.Helper()
		b, _ := json.Marshal(in)
		res, err := backend.Engine().Invoke(ctx, engine.Request{FunctionID: fn, Data: b})
		if err != nil {
			t.Fatalf("%s %s on the backend: %v", fn, b, err)
		}
		return res
	}

	for _, l := range langs {
		t.Run(string(l), func(t *testing.T) {
			w := startWorker(t, l, front.URL(), "app")
			w.ready(t, ctx)
			call := func(fn string, in any, want any) {
				t.Helper()
				out := w.call(t, ctx, fn, in)
				if out.str("event") != "result" {
					t.Fatalf("%s from %s: %v", fn, l, out)
				}
				assertJSON(t, fn+" result seen by "+string(l), out["result"], want)
			}
			scope, key := "bridge-"+string(l), map[string]any{"scope": "bridge-" + string(l), "key": "k"}

			call("state::set", map[string]any{"scope": scope, "key": "k", "value": map[string]any{"n": 1}},
				map[string]any{"old_value": nil, "new_value": map[string]any{"n": 1}})
			assertJSON(t, "state on the backend", onBackend("state::get", key), map[string]any{"n": 1})
			call("state::update", map[string]any{"scope": scope, "key": "k", "ops": []any{map[string]any{"type": "increment", "path": "n", "by": 2}}},
				map[string]any{"old_value": map[string]any{"n": 1}, "new_value": map[string]any{"n": 3}})
			call("state::get", key, map[string]any{"n": 3})
			call("state::list", map[string]any{"scope": scope}, []any{map[string]any{"n": 3}})
			call("state::delete", key, map[string]any{"n": 3})
			call("state::get", key, nil)
			if res := onBackend("state::get", key); res != nil {
				t.Errorf("state on the backend after the delete: %s, want none", res)
			}

			sub := dialStream(t, ctx, sm.(*stream.Module).URL())
			sub.join(ctx, "sub-1", scope, "room")
			sub.expect(ctx, scope, "room", nil, map[string]any{"type": "sync", "data": []any{}})
			item := map[string]any{"stream_name": scope, "group_id": "room", "item_id": "i1"}
			set := map[string]any{"stream_name": scope, "group_id": "room", "item_id": "i1", "data": map[string]any{"text": "hi"}}
			call("stream::set", set, map[string]any{"old_value": nil, "new_value": map[string]any{"text": "hi"}})
			sub.expect(ctx, scope, "room", "i1", map[string]any{"type": "create", "data": map[string]any{"text": "hi"}})
			assertJSON(t, "stream item on the backend", onBackend("stream::get", item), map[string]any{"text": "hi"})
			call("stream::get", item, map[string]any{"text": "hi"})
			call("stream::list", map[string]any{"stream_name": scope, "group_id": "room"}, []any{map[string]any{"text": "hi"}})
			call("stream::delete", item, map[string]any{"old_value": map[string]any{"text": "hi"}})
			sub.expect(ctx, scope, "room", "i1", map[string]any{"type": "delete", "data": map[string]any{"text": "hi"}})
			call("stream::get", item, nil)
		})
	}
}

package stream_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/modules/stream"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// stream::on-changed: an observer (a raw 0.25 worker) gets each change of
// the streams its filters pick, with the trigger payload plus
// stream_name, group_id and item_id.
func TestObserveStreamChanges(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, "")
		w := enginetest.Dial(t, te.srv.URL())
		w.Send(map[string]any{"type": "registerfunction", "id": "watch::orders"})
		w.Declare(map[string]any{"name": "watcher", "features": []string{"observe.v1"}})
		id := uuid.NewString()
		w.Send(map[string]any{"type": "observe", "id": id,
			"source": map[string]any{"function_id": stream.SourceChanged, "deliver": "input",
				"filters": map[string]any{"input.stream_name": map[string]any{"$eq": "orders"}}},
			"target": map[string]any{"function_id": "watch::orders"}})
		for {
			m := w.Next(enginetest.FrameTimeout)
			if m["type"] == "observeresult" {
				if m["state"] != "active" {
					t.Fatalf("observe %s: %v", stream.SourceChanged, m)
				}
				break
			}
		}
		te.call(t, ctx, "stream::set", map[string]any{"stream_name": "other", "group_id": "g", "item_id": "1", "data": 0})
		te.call(t, ctx, "stream::set", map[string]any{"stream_name": "orders", "group_id": "eu", "item_id": "7", "data": map[string]any{"total": 3}})
		act := w.Expect("invokefunction")
		in, _ := act["data"].(map[string]any)
		ev, _ := in["event"].(map[string]any)
		if act["function_id"] != "watch::orders" || in["stream_name"] != "orders" || in["group_id"] != "eu" || in["item_id"] != "7" ||
			in["streamName"] != "orders" || ev["type"] != "create" {
			t.Errorf("activation %v", act)
		}
		w.Send(map[string]any{"type": "invocationresult", "invocation_id": act["invocation_id"], "function_id": act["function_id"], "result": nil})
		w.Quiet() // the change of "other" was filtered out
	})
}

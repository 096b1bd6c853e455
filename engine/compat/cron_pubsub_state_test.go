package compat_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/cron"
	_ "github.com/iii-workbench/iii/engine/modules/pubsub"
	_ "github.com/iii-workbench/iii/engine/modules/state"
)

// startModulesServer runs an engine (embedded Redis) with the cron,
// pub/sub and state modules.
func startModulesServer(t *testing.T, ctx context.Context) *enginetest.Server {
	t.Helper()
	srv := startServer(t, ctx, "engine: {port: 0}\nmodules:\n  - class: CronModule\n  - class: PubSubModule\n  - class: StateModule\n")
	return srv
}

// TestCronPubSubState: each SDK's worker binds its functions to a cron
// trigger (fires every second with the cron payload and the binding's
// metadata), to a subscribe trigger (gets exactly the data a publish call
// sent) and to a state trigger (gets the state events of its own
// state::set/update/delete calls), using only the published SDKs.
func TestCronPubSubState(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	srv := startModulesServer(t, ctx)
	ws := make(map[lang]*workerProc)
	for _, l := range langs {
		ws[l] = startWorker(t, l, srv.URL(), string(l)+"mods")
	}
	for _, l := range langs {
		ws[l].ready(t, ctx)
	}
	for _, l := range langs {
		w := ws[l]
		t.Run(string(l)+"/cron", func(t *testing.T) {
			w.do(t, ctx, map[string]any{"op": "bind", "ref": "tick", "type_id": "cron", "function_id": w.fn("sink"),
				"config": map[string]any{"expression": "* * * * * *"}, "metadata": map[string]any{"job": string(l)}}, "bound")
			inv := w.invoked(t, ctx, w.fn("sink"), func(d map[string]any) bool { return d["trigger"] == "cron" })
			data := inv.obj("data")
			sched, err1 := time.Parse(time.RFC3339, data["scheduled_time"].(string))
			_, err2 := time.Parse(time.RFC3339, data["actual_time"].(string))
			if id, _ := data["job_id"].(string); id == "" || err1 != nil || err2 != nil || sched.Nanosecond() != 0 {
				t.Errorf("cron payload seen by the %s handler: %v; want job_id and RFC3339 scheduled_time/actual_time", l, data)
			}
			assertJSON(t, "cron trigger metadata", inv["metadata"], map[string]any{"job": string(l)})
			w.do(t, ctx, map[string]any{"op": "unbind", "ref": "tick"}, "unbound")
		})
		t.Run(string(l)+"/pubsub", func(t *testing.T) {
			topic := "compat-" + string(l)
			w.do(t, ctx, map[string]any{"op": "bind", "ref": "sub", "type_id": "subscribe", "function_id": w.fn("echo"),
				"config": map[string]any{"topic": topic}}, "bound")
			tag := uuid.NewString()
			sent := map[string]any{"tag": tag, "items": []any{1.0, "two"}}
			if out := w.call(t, ctx, "publish", map[string]any{"topic": topic, "data": sent}); out.str("event") != "result" || out["result"] != nil {
				t.Errorf("publish from %s: %v, want a result of null", l, out)
			}
			inv := w.invoked(t, ctx, w.fn("echo"), tagged(tag))
			assertJSON(t, "data received through subscribe", inv["data"], sent)
			out := w.call(t, ctx, "publish", map[string]any{"data": 1})
			if out.str("event") != "error" || out.str("code") != "topic_not_set" {
				t.Errorf("publish without a topic from %s: %v, want error code topic_not_set", l, out)
			}
			w.do(t, ctx, map[string]any{"op": "unbind", "ref": "sub"}, "unbound")
		})
		t.Run(string(l)+"/state", func(t *testing.T) {
			scope := "compat-" + string(l)
			w.do(t, ctx, map[string]any{"op": "bind", "ref": "state", "type_id": "state", "function_id": w.fn("sink"),
				"config": map[string]any{"scope": scope}, "metadata": map[string]any{"watch": scope}}, "bound")
			steps := []struct {
				fn      string
				payload map[string]any
				result  any
				event   map[string]any
			}{
				{"state::set", map[string]any{"scope": scope, "key": "k", "value": map[string]any{"n": 1.0}},
					map[string]any{"old_value": nil, "new_value": map[string]any{"n": 1.0}},
					map[string]any{"event_type": "state:created", "old_value": nil, "new_value": map[string]any{"n": 1.0}}},
				{"state::update", map[string]any{"scope": scope, "key": "k", "ops": []any{
					map[string]any{"type": "increment", "path": "n", "by": 2.0},
					map[string]any{"type": "set", "path": "who", "value": string(l)}}},
					map[string]any{"old_value": map[string]any{"n": 1.0}, "new_value": map[string]any{"n": 3.0, "who": string(l)}},
					map[string]any{"event_type": "state:updated", "old_value": map[string]any{"n": 1.0}, "new_value": map[string]any{"n": 3.0, "who": string(l)}}},
				{"state::get", map[string]any{"scope": scope, "key": "k"}, map[string]any{"n": 3.0, "who": string(l)}, nil},
				{"state::list", map[string]any{"scope": scope}, []any{map[string]any{"n": 3.0, "who": string(l)}}, nil},
				{"state::delete", map[string]any{"scope": scope, "key": "k"}, map[string]any{"n": 3.0, "who": string(l)},
					map[string]any{"event_type": "state:deleted", "old_value": map[string]any{"n": 3.0, "who": string(l)}, "new_value": nil}},
				{"state::get", map[string]any{"scope": scope, "key": "k"}, nil, nil},
			}
			for _, s := range steps {
				out := w.call(t, ctx, s.fn, s.payload)
				if out.str("event") != "result" {
					t.Fatalf("%s from %s: %v", s.fn, l, out)
				}
				assertJSON(t, s.fn+" result seen by "+string(l), out["result"], s.result)
				if s.event == nil {
					continue
				}
				kind := s.event["event_type"]
				inv := w.invoked(t, ctx, w.fn("sink"), func(d map[string]any) bool { return d["type"] == "state" && d["event_type"] == kind })
				want := map[string]any{"type": "state", "scope": scope, "key": "k"}
				for k, v := range s.event {
					want[k] = v
				}
				assertJSON(t, kind.(string)+" event seen by the "+string(l)+" handler", inv["data"], want)
				assertJSON(t, "state trigger metadata", inv["metadata"], map[string]any{"watch": scope})
			}
		})
	}
}

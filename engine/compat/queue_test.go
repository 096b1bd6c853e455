package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/queue"
)

// startQueueServer runs an engine (embedded Redis) with the queue module;
// queue "compat" retries twice, 50 ms apart at first.
func startQueueServer(t *testing.T, ctx context.Context) *enginetest.Server {
	t.Helper()
	srv := startServer(t, ctx, "engine: {port: 0}\nmodules:\n  - class: QueueModule\n    config: {queues: {compat: {max_retries: 3, backoff_ms: 50}}}\n")
	return srv
}

// queueCall invokes a queue function in-process and decodes its result.
func queueCall(t *testing.T, ctx context.Context, srv *enginetest.Server, fn string, in any, out any) {
	t.Helper()
	data, _ := json.Marshal(in)
	res, err := srv.Engine().Invoke(ctx, engine.Request{FunctionID: fn, Data: data})
	if err != nil {
		t.Fatalf("%s(%s): %v", fn, data, err)
	}
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("%s(%s) = %s: %v", fn, data, res, err)
	}
}

// TestQueueRealClients: a real SDK worker enqueues with
// TriggerAction.Enqueue({queue}) and gets its receipt at once; the other
// language's worker then receives the call. Its flaky function fails twice
// and succeeds on the queue's retries; a message failing every attempt ends
// in the dead-letter queue and is redriven through the caller's SDK.
func TestQueueRealClients(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	srv := startQueueServer(t, ctx)
	ws := make(map[lang]*workerProc)
	for _, l := range langs {
		ws[l] = startWorker(t, l, srv.URL(), string(l)+"q")
	}
	for _, l := range langs {
		ws[l].ready(t, ctx)
	}
	for _, pair := range [][2]lang{{node, python}, {python, node}} {
		cw, tw := ws[pair[0]], ws[pair[1]]
		name := fmt.Sprintf("%s_to_%s", pair[0], pair[1])
		byKey := func(key string) func(map[string]any) bool {
			return func(d map[string]any) bool { return d["key"] == key || d["tag"] == key }
		}

		t.Run(name+"/enqueue", func(t *testing.T) {
			tag := uuid.NewString()
			id := cw.startCall(t, tw.fn("echo"), map[string]any{"tag": tag}, map[string]any{"enqueue": "default"})
			out := cw.outcome(t, ctx, id)
			if receipt, _ := out.obj("result")["messageReceiptId"].(string); out.str("event") != "result" || receipt == "" {
				t.Fatalf("%s enqueue outcome %v, want a result with messageReceiptId", pair[0], out)
			}
			inv := tw.invoked(t, ctx, tw.fn("echo"), byKey(tag))
			if inv.obj("data")["tag"] != tag {
				t.Errorf("%s handler got %v, want tag %s", pair[1], inv.obj("data"), tag)
			}
		})

		t.Run(name+"/retry_then_success", func(t *testing.T) {
			key := uuid.NewString()
			out := cw.outcome(t, ctx, cw.startCall(t, tw.fn("flaky"), map[string]any{"key": key, "fail_times": 2},
				map[string]any{"enqueue": "compat"}))
			if out.str("event") != "result" {
				t.Fatalf("enqueue: %v", out)
			}
			tw.waitEvents(t, ctx, 3, "three attempts of flaky "+key, func(e event) bool {
				return e.str("event") == "invoked" && e.str("function_id") == tw.fn("flaky") && byKey(key)(e.obj("data"))
			})
			waitQueue(t, ctx, srv, "compat", func(s map[string]any) bool {
				return s["depth"] == float64(0) && s["delayed"] == float64(0) && s["dlq_depth"] == float64(0)
			})
		})

		t.Run(name+"/poison_dlq_redrive", func(t *testing.T) {
			key := uuid.NewString()
			out := cw.outcome(t, ctx, cw.startCall(t, tw.fn("flaky"), map[string]any{"key": key, "fail_times": 3},
				map[string]any{"enqueue": "compat"}))
			if out.str("event") != "result" {
				t.Fatalf("enqueue: %v", out)
			}
			// max_retries 3: three attempts in all, all failing: dead-lettered.
			var entry map[string]any
			for entry == nil {
				var dlq []map[string]any
				queueCall(t, ctx, srv, "engine::queue::dlq_messages", map[string]any{"queue": "compat"}, &dlq)
				for _, e := range dlq {
					if p, _ := e["payload"].(map[string]any); p["key"] == key {
						entry = e
					}
				}
				if entry == nil && !waitTick(ctx, 20*time.Millisecond) {
					t.Fatalf("flaky %s never reached the dead-letter queue", key)
				}
			}
			if msg, _ := entry["error"].(string); entry["attempts"] != float64(3) || !strings.Contains(msg, "attempt 3 of "+key) {
				t.Errorf("dead letter %v: want attempts 3 and the handler's last error", entry)
			}
			// Redrive through the caller's SDK: the fourth attempt succeeds.
			res := cw.call(t, ctx, "iii::queue::redrive_message", map[string]any{"queue": "compat", "message_id": entry["id"]})
			if res.str("event") != "result" || res.obj("result")["redriven"] != float64(1) {
				t.Fatalf("redrive_message through the %s SDK: %v, want redriven 1", pair[0], res)
			}
			tw.waitEvents(t, ctx, 4, "the redriven attempt of flaky "+key, func(e event) bool {
				return e.str("event") == "invoked" && e.str("function_id") == tw.fn("flaky") && byKey(key)(e.obj("data"))
			})
			waitQueue(t, ctx, srv, "compat", func(s map[string]any) bool {
				return s["depth"] == float64(0) && s["dlq_depth"] == float64(0)
			})
		})
	}
}

// waitQueue polls engine::queue::topic_stats for queue until ok holds.
func waitQueue(t *testing.T, ctx context.Context, srv *enginetest.Server, queue string, ok func(map[string]any) bool) {
	t.Helper()
	for {
		var s map[string]any
		queueCall(t, ctx, srv, "engine::queue::topic_stats", map[string]any{"queue": queue}, &s)
		if ok(s) {
			return
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("queue %s never reached the expected state; last stats %v", queue, s)
		}
	}
}

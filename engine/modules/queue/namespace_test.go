package queue_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// A durable subscriber bound by a worker in a namespace (0.25+ SDKs) has
// its condition_function_id called in that namespace, not in default (the
// worker's own orders email::is-priority, not a missing default one that
// would dead-letter every message with function_not_found). What the
// module shows of its function (dlq_messages, its log lines) is the bare
// id and the namespace, never the engine's internal "ns\x00id" key.
func TestNamespacedSubscriber(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {mail: {backoff_ms: 20, max_retries: 2}}}`)
		w := enginetest.Dial(t, te.srv.URL())
		w.Declare(map[string]any{"name": "mailer", "runtime": "test", "namespace": "orders"})
		w.Register("email::send")
		w.Register("email::is-priority")
		// As the 0.25 SDKs send it: the trigger names the worker's namespace.
		w.Send(map[string]any{"type": "registertrigger", "id": "sub-mail", "trigger_type": "durable:subscriber",
			"function_id": "email::send", "namespace": "orders", "config": map[string]any{"topic": "mail.out", "queue": "mail",
				"condition_function_id": "email::is-priority"}})
		te.waitBindings(t, ctx, "durable:subscriber", 1)

		// serve answers the next call, which must be to fn in orders.
		serve := func(fn string, result any, errBody map[string]any) map[string]any {
			t.Helper()
			inv := w.ServeOnce(result, errBody)
			if inv["function_id"] != fn {
				t.Fatalf("called %v, want %s", inv["function_id"], fn)
			}
			return inv
		}

		// Not a priority message: the condition (in orders) skips it.
		te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "mail.out", "data": map[string]any{"priority": false}})
		if d, _ := serve("email::is-priority", false, nil)["data"].(map[string]any); d["priority"] != false {
			t.Errorf("condition got %v, want the published data", d)
		}
		te.waitStats(t, ctx, "mail", "the skipped message acknowledged", func(s stats) bool { return s.Depth == 0 && s.Delayed == 0 })
		w.Quiet() // email::send was not called

		// A priority message whose handler keeps failing: the condition
		// admits it each attempt, and after max_retries 2 (attempts in
		// all) it is dead-lettered with the handler's error.
		te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "mail.out", "data": map[string]any{"priority": true}})
		for range 2 {
			serve("email::is-priority", true, nil)
			serve("email::send", nil, map[string]any{"code": "smtp_down", "message": "smtp is down"})
		}
		te.waitStats(t, ctx, "mail", "one dead letter", func(s stats) bool { return s.DLQDepth == 1 && s.Depth == 0 && s.Delayed == 0 })
		w.Quiet()

		raw := te.call(t, ctx, "engine::queue::dlq_messages", map[string]any{"queue": "mail"})
		if strings.Contains(string(raw), `\u0000`) {
			t.Errorf("dlq_messages shows the internal function key: %s", raw)
		}
		var dlq []dlqMessage
		if err := json.Unmarshal(raw, &dlq); err != nil || len(dlq) != 1 {
			t.Fatalf("dlq_messages = %s (%v), want one entry", raw, err)
		}
		if e := dlq[0]; e.FunctionID != "email::send" || e.Namespace != "orders" || e.ErrorCode != "smtp_down" ||
			e.Attempts != 2 || e.Retries != 2 {
			t.Errorf("dead letter %+v, want email::send in namespace orders, smtp_down, 2 attempts and retries", e)
		}

		logs := te.logs.String()
		if strings.Contains(logs, `\x00`) || strings.ContainsRune(logs, 0) {
			t.Errorf("a log line shows the internal function key:\n%s", logs)
		}
		for _, msg := range []string{`msg="queue: handler failed; retry scheduled"`, `msg="queue: message dead-lettered after its retries"`} {
			found := false
			for line := range strings.Lines(logs) {
				if strings.Contains(line, msg) {
					found = true
					if !strings.Contains(line, " function_id=email::send namespace=orders ") {
						t.Errorf("log line %q: want function_id=email::send namespace=orders", line)
					}
				}
			}
			if !found {
				t.Errorf("no log line %s", msg)
			}
		}
	})
}

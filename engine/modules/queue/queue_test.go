package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/queue"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// An enqueued call reaches its target later, whichever way it was enqueued:
// a Go SDK worker's Trigger with sdk.Enqueue, engine.Invoke with an enqueue
// action, a direct engine::queue::enqueue call, or a queue config.yaml does
// not list (it gets default's settings).
func TestEnqueueDelivers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, "")
		type delivery struct {
			data        map[string]any
			metadata    string
			traceparent string
		}
		got := make(chan delivery, 10)
		w := te.worker(t, ctx, "orders")
		err := w.RegisterFunction("orders::process", func(ctx context.Context, in json.RawMessage) (any, error) {
			var d map[string]any
			json.Unmarshal(in, &d)
			got <- delivery{d, string(sdk.Metadata(ctx)), sdk.Traceparent(ctx)}
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		te.waitFunction(t, ctx, "orders::process")

		caller := te.worker(t, ctx, "caller")
		start := time.Now()
		res, err := caller.Trigger(ctx, sdk.TriggerRequest{FunctionID: "orders::process",
			Payload: map[string]any{"order": 1}, Action: sdk.Enqueue("default"), Metadata: map[string]any{"tenant": "acme"}})
		if err != nil {
			t.Fatalf("Trigger with Enqueue(default): %v", err)
		}
		if r := fields(t, res); r["messageReceiptId"] == "" || r["messageReceiptId"] == nil {
			t.Fatalf("Trigger with Enqueue(default) = %s, want {messageReceiptId}", res)
		}
		d := receive(t, ctx, got, "delivery of the SDK-enqueued call")
		if d.data["order"] != float64(1) || !strings.Contains(d.metadata, `"tenant":"acme"`) {
			t.Errorf("delivered data %v metadata %s, want order 1 and tenant acme", d.data, d.metadata)
		}
		t.Logf("SDK enqueue -> handled in %v", time.Since(start))

		// engine.Invoke with the enqueue action, carrying a trace context.
		if _, err := te.eng().Invoke(ctx, engine.Request{FunctionID: "orders::process", Data: json.RawMessage(`{"order":2}`),
			Traceparent: traceparent, Action: &protocol.Action{Type: protocol.ActionEnqueue, Queue: "default"}}); err != nil {
			t.Fatalf("Invoke with enqueue action: %v", err)
		}
		d = receive(t, ctx, got, "delivery of the Invoke-enqueued call")
		// The engine starts a span of its own: the trace id carries over.
		if d.data["order"] != float64(2) || !strings.HasPrefix(d.traceparent, traceparent[:36]) {
			t.Errorf("delivered %v with traceparent %q, want order 2 in trace %q", d.data, d.traceparent, traceparent[3:35])
		}

		// The provider function called directly.
		res = te.call(t, ctx, "engine::queue::enqueue", map[string]any{"queue": "default",
			"function_id": "orders::process", "data": map[string]any{"order": 3}})
		if r := fields(t, res); r["messageReceiptId"] == nil {
			t.Errorf("engine::queue::enqueue = %s, want {messageReceiptId}", res)
		}
		if d := receive(t, ctx, got, "delivery of the direct enqueue"); d.data["order"] != float64(3) {
			t.Errorf("delivered %v, want order 3", d.data)
		}

		// A queue nobody configured is created with default's settings.
		te.enqueue(t, ctx, "adhoc", "orders::process", map[string]any{"order": 4})
		if d := receive(t, ctx, got, "delivery through an unconfigured queue"); d.data["order"] != float64(4) {
			t.Errorf("delivered %v, want order 4", d.data)
		}
		for _, q := range []string{"default", "adhoc"} {
			te.waitStats(t, ctx, q, "an empty queue", func(s stats) bool { return s.Depth == 0 && s.Pending == 0 })
		}
		quiet(t, got, 100*time.Millisecond, "extra delivery")
	})
}

// A handler that fails (or times out) is retried with exponential backoff
// until it succeeds.
func TestRetryThenSuccess(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {retry: {backoff_ms: 40, max_retries: 3, timeout_ms: 300}}}`)
		var mu sync.Mutex
		calls := map[string][]time.Time{}
		done := make(chan string, 4)
		te.register(t, "jobs::flaky", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			var in struct {
				Name string `json:"name"`
				Mode string `json:"mode"`
			}
			json.Unmarshal(c.Data, &in)
			mu.Lock()
			calls[in.Name] = append(calls[in.Name], time.Now())
			n := len(calls[in.Name])
			mu.Unlock()
			if n <= 2 {
				if in.Mode == "slow" {
					<-ctx.Done() // past timeout_ms: the queue gives up on this attempt
					return nil, ctx.Err()
				}
				return nil, &protocol.ErrorBody{Code: "flaky", Message: fmt.Sprintf("attempt %d fails", n)}
			}
			done <- in.Name
			return json.RawMessage(`{"ok":true}`), nil
		})
		te.enqueue(t, ctx, "retry", "jobs::flaky", map[string]any{"name": "fails", "mode": "error"})
		te.enqueue(t, ctx, "retry", "jobs::flaky", map[string]any{"name": "slow", "mode": "slow"})
		seen := map[string]bool{}
		for range 2 {
			seen[receive(t, ctx, done, "success after retries")] = true
		}
		if !seen["fails"] || !seen["slow"] {
			t.Fatalf("succeeded: %v, want fails and slow", seen)
		}
		te.waitStats(t, ctx, "retry", "an empty queue", func(s stats) bool {
			return s.Depth == 0 && s.Delayed == 0 && s.DLQDepth == 0
		})
		mu.Lock()
		defer mu.Unlock()
		for name, at := range calls {
			if len(at) != 3 {
				t.Errorf("%s: %d attempts, want 3 (2 failures, 1 success)", name, len(at))
				continue
			}
			// The gaps grow: backoff 40 ms, then 80 ms (plus the slow
			// handler's own 300 ms timeout).
			if g1, g2 := at[1].Sub(at[0]), at[2].Sub(at[1]); g1 < 40*time.Millisecond || g2 < 80*time.Millisecond {
				t.Errorf("%s: gaps between attempts %v, %v; want at least 40ms, 80ms", name, g1, g2)
			}
		}
	})
}

// dlqMessage is an entry of engine::queue::dlq_messages.
type dlqMessage struct {
	ID         string          `json:"id"`
	DLQID      string          `json:"dlq_id"`
	Queue      string          `json:"queue"`
	FunctionID string          `json:"function_id"`
	Namespace  string          `json:"namespace"`
	Payload    json.RawMessage `json:"payload"`
	Error      string          `json:"error"`
	ErrorCode  string          `json:"error_code"`
	Attempts   int             `json:"attempts"`
	Retries    int             `json:"retries"`
	FailedAt   int64           `json:"failed_at"`
	EnqueuedAt int64           `json:"enqueued_at"`
}

// A message that keeps failing ends in the dead-letter queue with its
// payload, error and attempt count; redrive brings it back. max_retries
// counts attempts in all, as iii's does (its docs: max_retries 3, three
// delivery attempts, a dead letter with retries 3).
func TestPoisonDeadLetterRedrive(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {poison: {backoff_ms: 20, max_retries: 2}}}`)
		var failing atomic.Bool
		failing.Store(true)
		var attempts sync.Map // name -> *atomic.Int32
		handled := make(chan string, 10)
		te.register(t, "jobs::poison", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			var in struct{ Name string }
			json.Unmarshal(c.Data, &in)
			n, _ := attempts.LoadOrStore(in.Name, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			if failing.Load() {
				return nil, &protocol.ErrorBody{Code: "bad_input", Message: "cannot process " + in.Name}
			}
			handled <- in.Name
			return nil, nil
		})
		start := time.Now()
		receipts := map[string]string{}
		for _, name := range []string{"p1", "p2", "p3"} {
			receipts[name] = te.enqueue(t, ctx, "poison", "jobs::poison", map[string]any{"name": name})
		}
		te.waitStats(t, ctx, "poison", "three dead letters", func(s stats) bool { return s.DLQDepth == 3 && s.Depth == 0 })
		t.Logf("3 poison messages dead-lettered after %v", time.Since(start))

		var dlq []dlqMessage
		if err := json.Unmarshal(te.call(t, ctx, "engine::queue::dlq_messages", map[string]any{"queue": "poison"}), &dlq); err != nil {
			t.Fatal(err)
		}
		if len(dlq) != 3 {
			t.Fatalf("dlq_messages: %d entries, want 3: %+v", len(dlq), dlq)
		}
		byName := map[string]dlqMessage{}
		for _, e := range dlq {
			var p struct{ Name string }
			json.Unmarshal(e.Payload, &p)
			byName[p.Name] = e
			if e.Attempts != 2 || e.Retries != 2 || e.ErrorCode != "bad_input" || e.Error != "cannot process "+p.Name ||
				e.FunctionID != "jobs::poison" || e.Namespace != "" || e.Queue != "poison" || e.ID != receipts[p.Name] || e.FailedAt < e.EnqueuedAt {
				t.Errorf("dead letter %+v: want 2 attempts and retries, bad_input 'cannot process %s', jobs::poison in no namespace, id %s", e, p.Name, receipts[p.Name])
			}
		}
		for name := range receipts {
			if n, _ := attempts.Load(name); n.(*atomic.Int32).Load() != 2 {
				t.Errorf("%s: handler called %d times, want 2 (max_retries 2: attempts in all)", name, n.(*atomic.Int32).Load())
			}
		}

		failing.Store(false)
		// One by message id, one discarded, the rest by queue.
		res := fields(t, te.call(t, ctx, "iii::queue::redrive_message", map[string]any{"queue": "poison", "message_id": byName["p1"].ID}))
		if res["redriven"] != float64(1) {
			t.Errorf("redrive_message p1 = %v, want redriven 1", res)
		}
		if got := receive(t, ctx, handled, "redriven p1"); got != "p1" {
			t.Errorf("handled %s, want p1", got)
		}
		res = fields(t, te.call(t, ctx, "iii::queue::discard_message", map[string]any{"topic": "poison", "message_id": byName["p2"].DLQID}))
		if res["redriven"] != float64(1) {
			t.Errorf("discard_message p2 = %v, want 1 removed", res)
		}
		res = fields(t, te.call(t, ctx, "iii::queue::redrive", map[string]any{"queue": "poison"}))
		if res["queue"] != "poison" || res["redriven"] != float64(1) {
			t.Errorf("redrive = %v, want {queue: poison, redriven: 1}", res)
		}
		if got := receive(t, ctx, handled, "redriven p3"); got != "p3" {
			t.Errorf("handled %s, want p3", got)
		}
		quiet(t, handled, 100*time.Millisecond, "delivery of the discarded message")
		te.waitStats(t, ctx, "poison", "an empty queue and DLQ", func(s stats) bool { return s.DLQDepth == 0 && s.Depth == 0 })

		// The console views.
		var topics []struct {
			Topic        string `json:"topic"`
			MessageCount int    `json:"message_count"`
		}
		json.Unmarshal(te.call(t, ctx, "engine::queue::dlq_topics", nil), &topics)
		if len(topics) != 0 {
			t.Errorf("dlq_topics = %+v, want none", topics)
		}
		var all struct {
			Queues []struct {
				Queue string `json:"queue"`
			} `json:"queues"`
		}
		json.Unmarshal(te.call(t, ctx, "engine::queue::topic_stats", nil), &all)
		if len(all.Queues) != 2 || all.Queues[0].Queue != "default" || all.Queues[1].Queue != "poison" {
			t.Errorf("topic_stats without a queue = %+v, want default and poison", all)
		}
	})
}

// No more than `concurrency` handlers of a queue run at once. Handlers
// block until the test releases them, one at a time, so the peak is not a
// matter of timing: exactly 3 are in flight before the first release, and a
// fourth that started early would be counted.
func TestConcurrencyLimit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {limited: {concurrency: 3}}}`)
		const messages = 12
		var inflight, peak atomic.Int32
		entered := make(chan struct{}, messages)
		release := make(chan struct{})
		done := make(chan struct{}, messages)
		te.register(t, "jobs::busy", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			n := inflight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			inflight.Add(-1)
			done <- struct{}{}
			return nil, nil
		})
		for i := range messages {
			te.enqueue(t, ctx, "limited", "jobs::busy", map[string]any{"i": i})
		}
		free := func() {
			select {
			case release <- struct{}{}:
			case <-ctx.Done():
				t.Fatalf("no handler to release: %v", ctx.Err())
			}
		}
		for range 3 {
			receive(t, ctx, entered, "handler start")
		}
		for range messages - 3 {
			free()
			receive(t, ctx, entered, "handler start after a release")
		}
		for range 3 {
			free()
		}
		for range messages {
			receive(t, ctx, done, "handled message")
		}
		if p := peak.Load(); p != 3 {
			t.Errorf("at most %d handlers ran at once, want exactly 3 (concurrency)", p)
		}
	})
}

// A FIFO queue handles each message group in order, one message at a time,
// even when a message fails and is retried; groups run in parallel.
func TestFIFOOrderPerGroup(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {ordered: {type: fifo, message_group_field: user, concurrency: 3, backoff_ms: 20}}}`)
		var mu sync.Mutex
		order := map[string][]int{}
		busy := map[string]bool{}
		failedOnce := false
		var overlaps atomic.Int32
		done := make(chan struct{}, 40)
		te.register(t, "jobs::ordered", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			var in struct {
				User string `json:"user"`
				Seq  int    `json:"seq"`
			}
			json.Unmarshal(c.Data, &in)
			mu.Lock()
			if busy[in.User] {
				overlaps.Add(1)
			}
			busy[in.User] = true
			fail := in.User == "bob" && in.Seq == 2 && !failedOnce
			failedOnce = failedOnce || fail
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			busy[in.User] = false
			if !fail {
				order[in.User] = append(order[in.User], in.Seq)
			}
			mu.Unlock()
			if fail {
				return nil, &protocol.ErrorBody{Code: "flaky", Message: "first try of bob/2 fails"}
			}
			done <- struct{}{}
			return nil, nil
		})
		users := []string{"ann", "bob", "cid", "dee"}
		const perUser = 6
		for seq := range perUser {
			for _, u := range users {
				te.enqueue(t, ctx, "ordered", "jobs::ordered", map[string]any{"user": u, "seq": seq})
			}
		}
		for range perUser * len(users) {
			receive(t, ctx, done, "handled message")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, u := range users {
			if fmt.Sprint(order[u]) != "[0 1 2 3 4 5]" {
				t.Errorf("user %s handled in order %v, want [0 1 2 3 4 5]", u, order[u])
			}
		}
		if n := overlaps.Load(); n != 0 {
			t.Errorf("%d times a group's message started while another of the same group ran", n)
		}
		if !failedOnce {
			t.Error("bob/2 never failed: the retry path was not exercised")
		}
		// A message without its group field is refused at once.
		if _, err := te.enqueueErr(ctx, "ordered", "jobs::ordered", map[string]any{"seq": 9}); errCode(err) != "enqueue_error" ||
			!strings.Contains(err.Error(), `message group field "user"`) {
			t.Errorf("enqueue without the group field: %v, want enqueue_error naming the field", err)
		}
	})
}

// iii::durable::publish gives every subscribed function its own durable
// delivery: durable:subscriber and the legacy queue trigger type alike, one
// per function however many bindings it has, none for other topics.
func TestDurablePublishFanOut(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {mail: {backoff_ms: 20}}}`)
		w := te.worker(t, ctx, "subscribers")
		type hit struct {
			fn   string
			data map[string]any
			meta string
		}
		hits := make(chan hit, 10)
		for _, fn := range []string{"audit::log", "mail::send", "legacy::sub", "other::sub"} {
			w.RegisterFunction(fn, func(ctx context.Context, in json.RawMessage) (any, error) {
				var d map[string]any
				json.Unmarshal(in, &d)
				hits <- hit{fn, d, string(sdk.Metadata(ctx))}
				return nil, nil
			})
		}
		binds := []sdk.Trigger{
			{Type: "durable:subscriber", FunctionID: "audit::log", Config: map[string]any{"topic": "orders.created"}},
			// A second binding of the same function (the engine would share an
			// identical one): still one delivery.
			{Type: "durable:subscriber", FunctionID: "audit::log", Config: map[string]any{"topic": "orders.created", "queue": "orders.created"}},
			{Type: "durable:subscriber", FunctionID: "mail::send", Config: map[string]any{"topic": "orders.created", "queue": "mail"},
				Metadata: map[string]any{"who": "mail"}},
			{Type: "queue", FunctionID: "legacy::sub", Config: map[string]any{"topic": "orders.created"}},
			{Type: "durable:subscriber", FunctionID: "other::sub", Config: map[string]any{"topic": "users.created"}},
		}
		for _, tr := range binds {
			if _, err := w.RegisterTrigger(tr); err != nil {
				t.Fatal(err)
			}
		}
		te.waitBindings(t, ctx, "durable:subscriber", 4)
		te.waitBindings(t, ctx, "queue", 1)

		res := te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "orders.created", "data": map[string]any{"order": 7}})
		if string(res) != "" && string(res) != "null" {
			t.Errorf("publish = %s, want no result", res)
		}
		got := map[string]hit{}
		for range 3 {
			h := receive(t, ctx, hits, "durable delivery")
			if _, dup := got[h.fn]; dup {
				t.Errorf("%s got the message twice", h.fn)
			}
			got[h.fn] = h
		}
		for _, fn := range []string{"audit::log", "mail::send", "legacy::sub"} {
			if h, ok := got[fn]; !ok || h.data["order"] != float64(7) {
				t.Errorf("%s: got %+v, want the published data", fn, h)
			}
		}
		if !strings.Contains(got["mail::send"].meta, `"who":"mail"`) {
			t.Errorf("mail::send metadata %q, want the binding's metadata", got["mail::send"].meta)
		}
		quiet(t, hits, 150*time.Millisecond, "delivery to a non-subscriber or a duplicate")
		// Deliveries went through the topic's queue and the configured one.
		te.waitStats(t, ctx, "orders.created", "drained topic queue", func(s stats) bool { return s.Depth == 0 })
		te.waitStats(t, ctx, "mail", "drained mail queue", func(s stats) bool { return s.Depth == 0 })

		if _, err := te.callErr(ctx, "iii::durable::publish", map[string]any{"data": 1}); errCode(err) != "topic_not_set" {
			t.Errorf("publish without a topic: %v, want topic_not_set", err)
		}
		_, err := te.eng().RegisterTrigger(ctx, engine.Trigger{Type: "durable:subscriber", FunctionID: "audit::log", Config: json.RawMessage(`{}`)})
		if err == nil || !strings.Contains(err.Error(), "config.topic is required") {
			t.Errorf("durable:subscriber without a topic: %v, want a registration error naming config.topic", err)
		}
	})
}

// Bad input gets a clear error.
func TestBadInput(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, "")
	for _, tc := range []struct {
		fn       string
		in       any
		code     string
		contains string
	}{
		{"engine::queue::enqueue", map[string]any{"function_id": "x"}, "queue_not_set", "queue is not set"},
		{"engine::queue::enqueue", map[string]any{"queue": "default"}, "INVALID_ARGUMENTS", "function_id is required"},
		{"engine::queue::enqueue", "text", "INVALID_ARGUMENTS", "bad input"},
		{"engine::queue::enqueue", map[string]any{"queue": "a b", "function_id": "x"}, "queue_not_set", "whitespace"},
		{"engine::queue::dlq_messages", map[string]any{}, "queue_not_set", "queue is not set"},
		{"iii::queue::redrive", nil, "queue_not_set", "queue is not set"},
		{"iii::queue::redrive_message", map[string]any{"queue": "default"}, "INVALID_ARGUMENTS", "message_id is required"},
		{"engine::queue::topic_stats", map[string]any{"queue": "{x}"}, "INVALID_ARGUMENTS", "brace"},
	} {
		_, err := te.callErr(ctx, tc.fn, tc.in)
		if errCode(err) != tc.code || !strings.Contains(fmt.Sprint(err), tc.contains) {
			t.Errorf("%s(%s): %v, want %s containing %q", tc.fn, mustJSON(t, tc.in), err, tc.code, tc.contains)
		}
	}
	// Through the enqueue action the engine reports enqueue_error with the
	// module's reason.
	if _, err := te.enqueueErr(ctx, "a b", "x", nil); errCode(err) != "enqueue_error" || !strings.Contains(err.Error(), "whitespace") {
		t.Errorf("enqueue action to queue %q: %v, want enqueue_error about whitespace", "a b", err)
	}
	// Unknown DLQ ids are not an error: nothing is redriven.
	res := fields(t, te.call(t, ctx, "iii::queue::redrive_message", map[string]any{"queue": "default", "message_id": "nope"}))
	if res["redriven"] != float64(0) {
		t.Errorf("redrive_message of an unknown id = %v, want redriven 0", res)
	}
}

// A durable subscriber's queue_config.max_retries counts retries after the
// first attempt, as iii's does (maxRetries 1: two attempts), while the
// queue's own max_retries counts attempts in all.
func TestSubscriberQueueConfigRetries(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, `{queues: {jobs: {backoff_ms: 10, max_retries: 4}}}`)
	var calls atomic.Int32
	te.register(t, "jobs::fail", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
		calls.Add(1)
		return nil, &protocol.ErrorBody{Code: "nope", Message: "always fails"}
	})
	if _, err := te.eng().RegisterTrigger(ctx, engine.Trigger{Type: "durable:subscriber", FunctionID: "jobs::fail",
		Config: json.RawMessage(`{"topic":"jobs","queue_config":{"max_retries":1}}`)}); err != nil {
		t.Fatal(err)
	}
	te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "jobs", "data": 1})
	te.waitStats(t, ctx, "jobs", "one dead letter", func(s stats) bool { return s.DLQDepth == 1 && s.Depth == 0 && s.Delayed == 0 })
	var dlq []dlqMessage
	json.Unmarshal(te.call(t, ctx, "engine::queue::dlq_messages", map[string]any{"queue": "jobs"}), &dlq)
	if n := calls.Load(); n != 2 || len(dlq) != 1 || dlq[0].Retries != 2 {
		t.Errorf("handler called %d times, dead letters %+v; want 2 calls (1 + queue_config.max_retries 1) and retries 2", n, dlq)
	}

	// The queue's max_retries 4 (no queue_config): four attempts.
	calls.Store(0)
	te.enqueue(t, ctx, "jobs", "jobs::fail", 2)
	te.waitStats(t, ctx, "jobs", "a second dead letter", func(s stats) bool { return s.DLQDepth == 2 && s.Depth == 0 && s.Delayed == 0 })
	if n := calls.Load(); n != 4 {
		t.Errorf("handler called %d times, want 4 (max_retries 4: attempts in all)", n)
	}

	// iii's spelling, maxRetries, means the same: a subscriber whose
	// queue_config says maxRetries 2 gets 3 attempts.
	calls.Store(0)
	if _, err := te.eng().RegisterTrigger(ctx, engine.Trigger{Type: "durable:subscriber", FunctionID: "jobs::fail",
		Config: json.RawMessage(`{"topic":"iii-jobs","queue":"jobs","queue_config":{"maxRetries":2,"backoffDelayMs":10}}`)}); err != nil {
		t.Fatal(err)
	}
	te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "iii-jobs", "data": 3})
	te.waitStats(t, ctx, "jobs", "a third dead letter", func(s stats) bool { return s.DLQDepth == 3 && s.Depth == 0 && s.Delayed == 0 })
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3 (1 + queue_config.maxRetries 2)", n)
	}
}

package queue_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// obsConsumer is a raw 0.25-style worker that consumes a topic through an
// observer of queue::on-message.
type obsConsumer struct {
	*enginetest.Worker
	held []map[string]any
}

func dialConsumer(t *testing.T, url, fn string) *obsConsumer {
	t.Helper()
	w := &obsConsumer{Worker: enginetest.Dial(t, url)}
	if fn != "" {
		w.Send(map[string]any{"type": "registerfunction", "id": fn})
	}
	w.Declare(map[string]any{"name": "consumer", "runtime": "test", "features": []string{"observe.v1"}})
	return w
}

// observe sends an observe of queue::on-message on topic and returns the
// observeresult.
func (w *obsConsumer) observe(id, topic, target string, opts map[string]any) map[string]any {
	w.T().Helper()
	m := map[string]any{"type": "observe", "id": id,
		"source": map[string]any{"function_id": "queue::on-message", "args": map[string]any{"topic": topic}},
		"target": map[string]any{"function_id": target}}
	for k, v := range opts {
		m[k] = v
	}
	w.Send(m)
	return w.want("observeresult", 0)
}

// want returns the next frame of type typ (held or new), holding the
// others; within 0 waits FrameTimeout and fails without one, otherwise it
// returns nil when none arrives within that time.
func (w *obsConsumer) want(typ string, within time.Duration) map[string]any {
	w.T().Helper()
	for i, m := range w.held {
		if m["type"] == typ {
			w.held = append(w.held[:i], w.held[i+1:]...)
			return m
		}
	}
	wait := within
	if wait == 0 {
		wait = enginetest.FrameTimeout
	}
	deadline := time.Now().Add(wait)
	for {
		m, ok := w.NextWithin(time.Until(deadline))
		if !ok {
			if within == 0 {
				w.T().Fatalf("no %s frame within %v; held %v", typ, wait, w.held)
			}
			return nil
		}
		if m["type"] == typ {
			return m
		}
		w.held = append(w.held, m)
	}
}

func (w *obsConsumer) answer(inv map[string]any) {
	w.Send(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"],
		"function_id": inv["function_id"], "result": map[string]any{"ok": true}})
}

// A queue::on-message observer's messages go through it: max_in_flight
// bounds its concurrent deliveries (the rest wait in the queue),
// max_fires ends it after that many deliveries, and the messages left
// for it stay queued, without counting attempts, until an observer of
// the same id comes back; none is lost, none delivered twice.
func TestQueueObserverPolicy(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {orders: {concurrency: 4, backoff_ms: 20}}}`)
		w := dialConsumer(t, te.srv.URL(), "app::consume")
		id := uuid.NewString()
		if r := w.observe(id, "orders", "app::consume", map[string]any{"max_fires": 2, "max_in_flight": 1}); r["state"] != "active" {
			t.Fatalf("observe: %v, want active", r)
		}
		for n := range 3 {
			te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "orders", "data": map[string]any{"n": n}})
		}
		seen := map[float64]bool{}
		deliver := func() map[string]any {
			t.Helper()
			inv := w.want("invokefunction", 0)
			act, _ := inv["activation"].(map[string]any)
			if inv["function_id"] != "app::consume" || act["observer_id"] != id {
				t.Fatalf("message reached the consumer as %v, want an activation of observer %s", inv, id)
			}
			d, _ := inv["data"].(map[string]any)
			n, _ := d["n"].(float64)
			if seen[n] {
				t.Errorf("message %v delivered twice", d)
			}
			seen[n] = true
			return inv
		}
		first := deliver()
		// max_in_flight 1: nothing else while the first is unanswered.
		if m := w.want("invokefunction", 300*time.Millisecond); m != nil {
			t.Fatalf("second delivery %v while the first is in flight (max_in_flight 1)", m)
		}
		w.answer(first)
		second := deliver()
		w.answer(second)
		st := w.want("observerstatechanged", 0)
		if r, _ := st["reason"].(map[string]any); st["state"] != "disposed" || r["code"] != "MAX_FIRES" || st["fires"] != float64(2) {
			t.Errorf("after two messages: %v, want disposed MAX_FIRES after 2 fires", st)
		}
		// The third waits for the observer, not delivered, not dead-lettered.
		if m := w.want("invokefunction", 500*time.Millisecond); m != nil {
			t.Fatalf("delivery %v after max_fires", m)
		}
		s := te.stats(t, ctx, "orders")
		if s.Depth+s.Delayed != 1 || s.DLQDepth != 0 {
			t.Errorf("stats after max_fires %+v, want the third message waiting, none dead", s)
		}
		// A publish now has no subscriber: nothing more is queued for it.
		te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "orders", "data": map[string]any{"n": 9}})

		// The consumer observes again under its id: the third arrives.
		if r := w.observe(id, "orders", "app::consume", nil); r["state"] != "active" {
			t.Fatalf("observe again: %v, want active", r)
		}
		third := deliver()
		w.answer(third)
		if len(seen) != 3 || seen[9] {
			t.Errorf("delivered %v, want messages 0, 1, 2 once each", seen)
		}
		te.waitStats(t, ctx, "orders", "drained queue", func(s stats) bool { return s.Depth == 0 && s.Delayed == 0 })
		if s := te.stats(t, ctx, "orders"); s.DLQDepth != 0 {
			t.Errorf("dead letters %+v, want none", s)
		}
		if m := w.want("invokefunction", 200*time.Millisecond); m != nil {
			t.Errorf("extra delivery %v", m)
		}
	})
}

// On a FIFO queue a message its observer does not admit (pending: its
// target is not registered yet; then ended by max_fires) waits at the
// head of its partition: the group's order holds across the observer's
// end and return.
func TestQueueObserverFIFOWaitsInPlace(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL,
		`{queues: {lines: {type: fifo, message_group_field: g, concurrency: 1, backoff_ms: 20}}}`)
	w := dialConsumer(t, te.srv.URL(), "")
	id := uuid.NewString()
	args := map[string]any{"topic": "lines", "queue": "lines"}
	send := func(opts map[string]any, state string) {
		t.Helper()
		m := map[string]any{"type": "observe", "id": id,
			"source": map[string]any{"function_id": "queue::on-message", "args": args},
			"target": map[string]any{"function_id": "app::line"}}
		for k, v := range opts {
			m[k] = v
		}
		w.Send(m)
		if r := w.want("observeresult", 0); r["state"] != state {
			t.Fatalf("observe: %v, want %s", r, state)
		}
	}
	send(map[string]any{"max_fires": 1}, "pending")
	for n := range 3 {
		te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "lines", "data": map[string]any{"g": "a", "n": n}})
	}
	if m := w.want("invokefunction", 300*time.Millisecond); m != nil {
		t.Fatalf("delivery %v to a pending observer", m)
	}
	w.Send(map[string]any{"type": "registerfunction", "id": "app::line"})
	got := func() float64 {
		t.Helper()
		inv := w.want("invokefunction", 0)
		d, _ := inv["data"].(map[string]any)
		w.answer(inv)
		n, _ := d["n"].(float64)
		return n
	}
	if n := got(); n != 0 {
		t.Fatalf("first delivery %v, want message 0", n)
	}
	for {
		if st := w.want("observerstatechanged", 0); st["state"] == "disposed" {
			break
		}
	}
	if m := w.want("invokefunction", 400*time.Millisecond); m != nil {
		t.Fatalf("delivery %v after max_fires", m)
	}
	send(nil, "active")
	for want := 1.0; want <= 2; want++ {
		if n := got(); n != want {
			t.Fatalf("delivery %v, want message %v (group order)", n, want)
		}
	}
	te.waitStats(t, ctx, "lines", "drained queue", func(s stats) bool { return s.Depth == 0 })
	if s := te.stats(t, ctx, "lines"); s.DLQDepth != 0 {
		t.Errorf("dead letters %+v, want none", s)
	}
}

// A consumer whose connection drops mid-delivery loses nothing: the
// failed delivery is retried as any failed attempt, waits while its
// observer is gone, and reaches the consumer once its SDK has reattached
// and replayed the observer under the same id.
func TestQueueObserverMessageWaitsForReconnect(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, `{queues: {jobs: {backoff_ms: 20}}}`)
	w1 := dialConsumer(t, te.srv.URL(), "app::job")
	id := uuid.NewString()
	if r := w1.observe(id, "jobs", "app::job", nil); r["state"] != "active" {
		t.Fatalf("observe: %v, want active", r)
	}
	te.call(t, ctx, "iii::durable::publish", map[string]any{"topic": "jobs", "data": map[string]any{"n": 1}})
	w1.want("invokefunction", 0) // never answered: the connection drops
	w1.Conn.CloseNow()
	enginetest.WaitFor(t, "the consumer's observer gone", func() bool { return len(te.eng().Observers()) == 0 })
	// Its retry comes due meanwhile, and waits: longer than its retries
	// (3, backoff 20 ms doubling) would last if waiting counted as attempts.
	time.Sleep(time.Second)

	w2 := &obsConsumer{Worker: enginetest.Dial(t, te.srv.URL())}
	w2.Send(map[string]any{"type": "reattach", "previous_worker_id": w1.ID, "reattach_token": w1.Token})
	w2.Send(map[string]any{"type": "registerfunction", "id": "app::job"})
	w2.Declare(map[string]any{"name": "consumer", "runtime": "test", "features": []string{"observe.v1"}})
	if r := w2.observe(id, "jobs", "app::job", nil); r["state"] != "active" {
		t.Fatalf("replayed observe: %v, want active", r)
	}
	inv := w2.want("invokefunction", 0)
	act, _ := inv["activation"].(map[string]any)
	if d, _ := inv["data"].(map[string]any); d["n"] != float64(1) || act["observer_id"] != id {
		t.Errorf("after the reconnect: %v, want message 1 as an activation of observer %s", inv, id)
	}
	w2.answer(inv)
	te.waitStats(t, ctx, "jobs", "drained queue", func(s stats) bool { return s.Depth == 0 && s.Delayed == 0 })
	if s := te.stats(t, ctx, "jobs"); s.DLQDepth != 0 {
		t.Errorf("dead letters %+v, want none", s)
	}
}

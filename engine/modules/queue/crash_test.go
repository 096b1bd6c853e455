package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// A message read by a consumer that then died (it never acknowledges) is
// taken over once it has been idle claim_idle_ms and delivered again.
func TestReclaimFromDeadConsumer(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		rdb := b.Client(t)
		stream := "iii:queue:{crash}:stream"
		if err := rdb.XGroupCreateMkStream(ctx, stream, "iii-queue", "0").Err(); err != nil {
			t.Fatal(err)
		}
		msg := `{"id":"m-1","queue":"crash","function_id":"crash::fn","data":{"n":1},"attempts":0,"enqueued_at":1}`
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"m", msg}}).Err(); err != nil {
			t.Fatal(err)
		}
		// The dead engine's consumer reads the message and never acks it.
		claimed, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "iii-queue", Consumer: "dead-engine",
			Streams: []string{stream, ">"}, Count: 1, Block: -1}).Result()
		if err != nil || len(claimed) != 1 || len(claimed[0].Messages) != 1 {
			t.Fatalf("dead consumer's read: %v %v", claimed, err)
		}
		readAt := time.Now()

		te := startEngine(t, ctx, b.URL, `{queues: {crash: {timeout_ms: 200, claim_idle_ms: 400}}}`)
		got := make(chan string, 2)
		te.register(t, "crash::fn", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			got <- string(c.Data)
			return nil, nil
		})
		if data := receive(t, ctx, got, "re-delivery of the dead consumer's message"); data != `{"n":1}` {
			t.Errorf("re-delivered data %s, want {\"n\":1}", data)
		}
		if d := time.Since(readAt); d < 400*time.Millisecond {
			t.Errorf("re-delivered after %v, before claim_idle_ms 400ms", d)
		}
		te.waitStats(t, ctx, "crash", "the message acknowledged", func(s stats) bool { return s.Depth == 0 && s.Pending == 0 })
		quiet(t, got, 100*time.Millisecond, "second re-delivery")
	})
}

// Two engines on one Redis: engine A reads a message and is stopped
// abruptly while its handler runs; engine B delivers the message again.
func TestCrashedEngineMessageRedelivered(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		a := startEngine(t, ctx, b.URL, `{queues: {jobs: {timeout_ms: 20000}}}`)
		wa := a.worker(t, ctx, "worker-a")
		running := make(chan struct{}, 1)
		release := make(chan struct{})
		t.Cleanup(func() { close(release) }) // before wa closes (cleanups run last-in first)
		wa.RegisterFunction("jobs::run", func(ctx context.Context, in json.RawMessage) (any, error) {
			running <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		})
		a.waitFunction(t, ctx, "jobs::run")
		a.enqueue(t, ctx, "jobs", "jobs::run", map[string]any{"job": 1})
		receive(t, ctx, running, "engine A's handler start")

		// Crash A: Stop with a context that is already over abandons the
		// running handler without acknowledging its message. A second Stop
		// (at cleanup) finishes the shutdown.
		crashCtx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := a.srv.Stop(crashCtx); err == nil {
			t.Log("engine A stopped without abandoning anything")
		}

		bEng := startEngine(t, ctx, b.URL, `{queues: {jobs: {timeout_ms: 300, claim_idle_ms: 600}}}`)
		wb := bEng.worker(t, ctx, "worker-b")
		got := make(chan map[string]any, 2)
		wb.RegisterFunction("jobs::run", func(ctx context.Context, in json.RawMessage) (any, error) {
			var d map[string]any
			json.Unmarshal(in, &d)
			got <- d
			return nil, nil
		})
		if d := receive(t, ctx, got, "engine B's re-delivery"); d["job"] != float64(1) {
			t.Errorf("engine B got %v, want job 1", d)
		}
		bEng.waitStats(t, ctx, "jobs", "the message acknowledged", func(s stats) bool { return s.Depth == 0 && s.Pending == 0 })
	})
}

// A retry waiting for its backoff is kept in Redis: an engine started after
// the first one stopped delivers it.
func TestRetrySurvivesRestart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		const cfg = `{queues: {later: {backoff_ms: 600}}}`
		a := startEngine(t, ctx, b.URL, cfg)
		failed := make(chan struct{}, 1)
		a.register(t, "jobs::later", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			failed <- struct{}{}
			return nil, &protocol.ErrorBody{Code: "not_yet", Message: "try later"}
		})
		a.enqueue(t, ctx, "later", "jobs::later", map[string]any{"k": "v"})
		receive(t, ctx, failed, "first, failing attempt")
		a.waitStats(t, ctx, "later", "a scheduled retry", func(s stats) bool { return s.Delayed == 1 && s.Depth == 0 })
		a.stop(t, 10*time.Second)

		bEng := startEngine(t, ctx, b.URL, cfg)
		got := make(chan string, 2)
		bEng.register(t, "jobs::later", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			got <- string(c.Data)
			return nil, nil
		})
		if d := receive(t, ctx, got, "the retry on the new engine"); d != `{"k":"v"}` {
			t.Errorf("retried data %s, want {\"k\":\"v\"}", d)
		}
		bEng.waitStats(t, ctx, "later", "an empty queue", func(s stats) bool { return s.Delayed == 0 && s.Depth == 0 })
	})
}

// Redis going away under load: enqueue fails with a clear error, consumers
// back off, and once Redis is back they consume again without an engine
// restart. (The server runs without persistence: what it held is gone, so
// only messages enqueued after the restart are checked.)
func TestRedisOutage(t *testing.T) {
	ctx := enginetest.Context(t)
	srv := storetest.StartServer(t)
	te := startEngine(t, ctx, srv.URL(), `{queues: {jobs: {backoff_ms: 50}}}`)
	var mu sync.Mutex
	handled := map[float64]bool{}
	te.register(t, "jobs::run", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
		var in struct{ Seq float64 }
		json.Unmarshal(c.Data, &in)
		mu.Lock()
		handled[in.Seq] = true
		mu.Unlock()
		return nil, nil
	})

	// A producer enqueues all along and records what it was told.
	type result struct {
		seq float64
		at  time.Time
		err error
	}
	var results []result
	stopProducer := make(chan struct{})
	producerDone := make(chan struct{})
	// Exits when stopProducer is closed.
	go func() {
		defer close(producerDone)
		for seq := 1.0; ; seq++ {
			_, err := te.enqueueErr(ctx, "jobs", "jobs::run", map[string]any{"seq": seq})
			mu.Lock()
			results = append(results, result{seq, time.Now(), err})
			mu.Unlock()
			select {
			case <-stopProducer:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	waitHandled := func(what string, pred func() bool) {
		t.Helper()
		for {
			mu.Lock()
			ok := pred()
			mu.Unlock()
			if ok {
				return
			}
			if !sleepCtx(ctx, 20*time.Millisecond) {
				t.Fatalf("never: %s", what)
			}
		}
	}
	waitHandled("10 messages handled before the outage", func() bool { return len(handled) >= 10 })

	srv.Stop()
	waitHandled("an enqueue refused during the outage", func() bool {
		return len(results) > 0 && results[len(results)-1].err != nil
	})
	for !strings.Contains(te.logs.String(), "redis unavailable") {
		if !tick(ctx) {
			t.Fatal("consumers never noticed the outage")
		}
	}
	srv.Restart()
	restarted := time.Now()
	waitHandled("20 enqueues accepted after the restart", func() bool {
		n := 0
		for _, r := range results {
			if r.err == nil && r.at.After(restarted) {
				n++
			}
		}
		return n >= 20
	})
	close(stopProducer)
	<-producerDone

	mu.Lock()
	var failed, after []result
	for _, r := range results {
		switch {
		case r.err != nil:
			failed = append(failed, r)
		case r.at.After(restarted):
			after = append(after, r)
		}
	}
	mu.Unlock()
	for _, r := range failed {
		if errCode(r.err) != "enqueue_error" || !strings.Contains(r.err.Error(), "redis") {
			t.Fatalf("enqueue %v during the outage: %v, want enqueue_error naming redis", r.seq, r.err)
		}
	}
	t.Logf("%d enqueues refused during the outage, e.g. %v", len(failed), failed[0].err)
	waitHandled("every message enqueued after the restart handled", func() bool {
		for _, r := range after {
			if !handled[r.seq] {
				return false
			}
		}
		return true
	})
	te.waitStats(t, ctx, "jobs", "an empty queue", func(s stats) bool { return s.Depth == 0 && s.Pending == 0 })
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// Stop lets a running handler finish within its context and acknowledges
// its message: nothing is delivered again afterwards.
func TestGracefulStopFinishesHandlers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		te := startEngine(t, ctx, b.URL, `{queues: {jobs: {timeout_ms: 300, claim_idle_ms: 400}}}`)
		running := make(chan struct{}, 1)
		release := make(chan struct{})
		te.register(t, "jobs::slow", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			running <- struct{}{}
			<-release
			return nil, nil
		})
		te.enqueue(t, ctx, "jobs", "jobs::slow", map[string]any{"n": 1})
		receive(t, ctx, running, "handler start")
		stopped := make(chan struct{})
		// Exits when Stop returns.
		go func() {
			te.stop(t, 10*time.Second)
			close(stopped)
		}()
		quiet(t, stopped, 100*time.Millisecond, "Stop returning while a handler runs")
		close(release)
		receive(t, ctx, stopped, "Stop after the handler finished")

		// A new engine finds nothing to deliver: the message was acknowledged.
		next := startEngine(t, ctx, b.URL, `{queues: {jobs: {timeout_ms: 300, claim_idle_ms: 400}}}`)
		again := make(chan struct{}, 1)
		next.register(t, "jobs::slow", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
			again <- struct{}{}
			return nil, nil
		})
		quiet(t, again, time.Second, "re-delivery of an acknowledged message")
		if s := next.stats(t, ctx, "jobs"); s.Depth != 0 || s.Pending != 0 {
			t.Errorf("stats after a graceful stop %+v, want an empty queue", s)
		}
	})
}

// Two engines share a FIFO queue: each partition is consumed by one engine
// at a time, and when that engine stops another takes its partitions over
// where it left off, so every group stays in order.
func TestFIFOTwoEngines(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx := enginetest.Context(t)
		const cfg = `{queues: {ordered: {fifo: true, message_group_field: g, concurrency: 4, claim_idle_ms: 30000}}}`
		engines := []*testEngine{startEngine(t, ctx, b.URL, cfg), startEngine(t, ctx, b.URL, cfg)}
		var mu sync.Mutex
		order := map[string][]int{}
		by := map[int]int{}
		done := make(chan struct{}, 64)
		for i, te := range engines {
			te.register(t, "jobs::ordered", func(ctx context.Context, c *engine.Call) (json.RawMessage, error) {
				var in struct {
					G   string `json:"g"`
					Seq int    `json:"seq"`
				}
				json.Unmarshal(c.Data, &in)
				time.Sleep(3 * time.Millisecond)
				mu.Lock()
				order[in.G] = append(order[in.G], in.Seq)
				by[i]++
				mu.Unlock()
				done <- struct{}{}
				return nil, nil
			})
		}
		groups := []string{"a", "b", "c", "d", "e", "f"}
		const per = 8
		for seq := range per {
			for i, g := range groups {
				engines[i%2].enqueue(t, ctx, "ordered", "jobs::ordered", map[string]any{"g": g, "seq": seq})
			}
		}
		for range 10 {
			receive(t, ctx, done, "handled message")
		}
		// The engine holding partitions stops; its leases are released and
		// the other engine continues (long before claim_idle_ms).
		mu.Lock()
		first := 0
		if by[1] > by[0] {
			first = 1
		}
		mu.Unlock()
		engines[first].stop(t, 10*time.Second)
		for range per*len(groups) - 10 {
			receive(t, ctx, done, "handled message")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, g := range groups {
			if fmt.Sprint(order[g]) != "[0 1 2 3 4 5 6 7]" {
				t.Errorf("group %s handled in order %v, want 0..7", g, order[g])
			}
		}
		if by[1-first] == 0 {
			t.Errorf("messages handled per engine %v: the remaining engine took nothing over", by)
		}
		t.Logf("messages handled per engine: %v (engine %d stopped)", by, first)
	})
}

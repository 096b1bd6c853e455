package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// BenchmarkQueueThroughput measures enqueue -> handled messages per second
// through one engine: b.N messages are enqueued by 8 concurrent callers
// (engine.Invoke with the enqueue action) and handled by a target that
// returns at once, either in-process or a Go SDK worker over its WebSocket.
// It runs against miniredis and a real redis-server. Run with
//
//	go test -run '^$' -bench QueueThroughput -benchtime 5000x ./engine/modules/queue
func BenchmarkQueueThroughput(b *testing.B) {
	backends := []struct {
		name string
		url  func(b *testing.B) string
	}{
		{"miniredis", func(b *testing.B) string { return storetest.Mini(b).URL }},
		{"redis-server", func(b *testing.B) string { return storetest.StartServer(b).URL() }},
	}
	for _, be := range backends {
		for _, target := range []string{"inproc", "sdk-worker"} {
			b.Run(be.name+"/"+target, func(b *testing.B) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				te := startEngine(b, ctx, be.url(b), `{queues: {bench: {concurrency: 32}}}`)
				var handled atomic.Int64
				done := make(chan struct{})
				var want atomic.Int64
				count := func() {
					if handled.Add(1) == want.Load() {
						close(done)
					}
				}
				if target == "inproc" {
					te.register(b, "bench::handle", func(context.Context, *engine.Call) (json.RawMessage, error) {
						count()
						return nil, nil
					})
				} else {
					w := te.worker(b, ctx, "bench")
					w.RegisterFunction("bench::handle", func(context.Context, json.RawMessage) (any, error) {
						count()
						return nil, nil
					})
					te.waitFunction(b, ctx, "bench::handle")
				}
				want.Store(int64(b.N))
				const callers = 8
				next := atomic.Int64{}
				errs := make(chan error, callers)
				b.ResetTimer()
				start := time.Now()
				for range callers {
					// Exits when every message is enqueued or one failed.
					go func() {
						for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
							_, err := te.eng().Invoke(ctx, engine.Request{FunctionID: "bench::handle",
								Data:   json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
								Action: &protocol.Action{Type: protocol.ActionEnqueue, Queue: "bench"}})
							if err != nil {
								errs <- err
								return
							}
						}
						errs <- nil
					}()
				}
				for range callers {
					if err := <-errs; err != nil {
						b.Fatalf("enqueue: %v", err)
					}
				}
				enqueued := time.Since(start)
				select {
				case <-done:
				case <-ctx.Done():
					b.Fatalf("handled %d of %d: %v", handled.Load(), b.N, ctx.Err())
				}
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(float64(b.N)/enqueued.Seconds(), "enqueues/s")
			})
		}
	}
}

package chaos_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/internal/slowlink"
	_ "github.com/iii-workbench/iii/engine/modules/pubsub"
	"github.com/iii-workbench/iii/engine/server"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

// TestPubSubBurstIntoSlowSubscriber publishes 100,000 messages at once to
// a topic whose only subscriber is a Go SDK worker that reads slowly
// (through a proxy that holds, then throttles, what the engine sends it).
// Every message is delivered, the subscriber stays connected, the pub/sub
// fan-out waits for room in the subscriber's queue instead of dropping, and
// the heap stays bounded.
func TestPubSubBurstIntoSlowSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("burst test")
	}
	messages := 100_000
	if raceEnabled {
		messages = 10_000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rs := storetest.StartServer(t)
	rc := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(rs.URL(), "redis://")})
	defer rc.Close()
	// Redis itself disconnects a subscriber whose output buffer passes 32
	// MB (8 MB for 60 s) and the messages are then lost: Redis pub/sub is
	// at-most-once. This test is about the engine, so it lifts that limit.
	if err := rc.ConfigSet(ctx, "client-output-buffer-limit", "pubsub 0 0 0").Err(); err != nil {
		t.Fatal(err)
	}
	srv := enginetest.Start(t, ctx, fmt.Sprintf("engine: {host: 127.0.0.1, port: 0}\nredis: {url: %q}\nmodules:\n  - class: iii-pubsub\n", rs.URL()))
	eng := srv.Engine()

	w := slowlink.Connect(t, ctx, srv.URL(), "subscriber", "burst::on", messages)
	proxy, got := w.Proxy, &w.Got
	if _, err := w.RegisterTrigger(sdk.Trigger{Type: "subscribe", FunctionID: "burst::on", Config: map[string]any{"topic": "burst"}}); err != nil {
		t.Fatal(err)
	}
	for len(eng.Bindings("subscribe")) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the subscription never became active")
		}
		time.Sleep(5 * time.Millisecond)
	}

	peak := enginetest.HeapGrowth()
	proxy.Hold()
	channel := server.KeyPrefix + "pubsub:topic:burst"
	pipe := rc.Pipeline()
	for i := range messages {
		pipe.Publish(ctx, channel, fmt.Sprintf(`{"i":%d}`, i))
		if (i+1)%1000 == 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	// Under -race fewer messages may all fit in the queue and the socket
	// buffers; otherwise the fan-out must have waited.
	for !raceEnabled && eng.Stats().Stalls == 0 {
		if ctx.Err() != nil {
			t.Fatalf("the fan-out was never held back; delivered %d", got.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	opened := time.Now()
	proxy.Open()
	for got.Load() < int64(messages) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	grew := peak()
	st := eng.Stats()
	t.Logf("delivered %d/%d in %v after open, stalls %d, heap growth peak %.1f MiB, dropped %v",
		got.Load(), messages, time.Since(opened), st.Stalls, float64(grew)/(1<<20), st.Dropped)
	w.Delivered(t, int64(messages), st)
	// The engine's queue bound is 4 MiB; the pending entries of the calls
	// in flight and the SDK worker share this heap.
	if limit := uint64(64 << 20); grew > limit {
		t.Errorf("heap grew by %d MiB, over the %d MiB bound", grew>>20, limit>>20)
	}
}

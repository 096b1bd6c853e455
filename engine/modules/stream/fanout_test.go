package stream_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

// TestTwoEngines: two engines on one redis-server; a subscriber of engine
// A sees the changes made on engine B, and B's stream trigger fires once
// per change.
func TestTwoEngines(t *testing.T) {
	ctx := enginetest.Context(t)
	rs := storetest.StartServer(t)
	a := startEngine(t, ctx, rs.URL(), "")
	b := startEngine(t, ctx, rs.URL(), "")

	w := sdkWorker(t, ctx, b, "b-worker")
	fired := newRecorder()
	w.RegisterFunction("b::changed", func(_ context.Context, in json.RawMessage) (any, error) {
		fired.add(in)
		return nil, nil
	})
	w.RegisterTrigger(sdk.Trigger{Type: "stream", FunctionID: "b::changed", Config: map[string]any{"stream_name": "s"}})
	b.waitBindings(t, ctx, "stream", 1)

	// B's write, read through A's sync. (Its own push may still reach
	// this early client, before or after the sync: changes race joins, as
	// in iii. Under load A's fan-out can deliver it first.)
	b.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g0", "item_id": "old", "data": "before"})
	early := dial(t, ctx, a.mod.URL())
	early.join(ctx, "sub", "s", "g0", nil)
	if m := early.read(ctx); m.eventType() == "create" && m.id() == "old" {
		early.expect(ctx, "sync", "s", "g0", "<null>", `["before"]`)
	} else if m.eventType() != "sync" || m.id() != "<null>" {
		t.Fatalf("early client's first frame %s, want the sync (or B's push of old)", m)
	} else {
		assertJSON(t, "early client's sync", m.data(), `["before"]`)
	}

	c := dial(t, ctx, a.mod.URL())
	c.join(ctx, "sub", "s", "g", nil)
	c.expect(ctx, "sync", "s", "g", "<null>", `[]`)

	b.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i", "data": map[string]any{"from": "b"}})
	c.expect(ctx, "create", "s", "g", "i", `{"from":"b"}`)
	b.call(t, ctx, "stream::update", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i",
		"ops": []any{map[string]any{"type": "set", "path": "n", "value": 1}}})
	c.expect(ctx, "update", "s", "g", "i", `{"from":"b","n":1}`)
	b.call(t, ctx, "stream::send", map[string]any{"stream_name": "s", "group_id": "g", "type": "hello", "data": 1})
	c.expect(ctx, "event", "s", "g", "<null>", `{"type":"hello","data":1}`)
	a.call(t, ctx, "stream::delete", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i"})
	c.expect(ctx, "delete", "s", "g", "i", `{"from":"b","n":1}`)

	// Four changes on B (the first before the join) fire B's trigger four
	// times; A's delete fires only A's bindings (none).
	fired.wait(t, ctx, 4, "stream trigger on B")
	b.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "last", "data": 0})
	c.expect(ctx, "create", "s", "g", "last", `0`)
	if got := fired.wait(t, ctx, 5, "stream trigger on B"); len(got) != 5 {
		t.Errorf("B's trigger fired %d times for 5 changes on B: %s", len(got), got)
	}
}

// TestSlowClient: a client that stops reading is dropped once its queue
// fills, while another client of the same group keeps receiving.
func TestSlowClient(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, ", queue_size: 8")
	good := dial(t, ctx, te.mod.URL())
	slow := dial(t, ctx, te.mod.URL())
	for _, c := range []*wsClient{good, slow} {
		c.join(ctx, "sub", "s", "g", nil)
		c.expect(ctx, "sync", "s", "g", "<null>", `[]`)
	}
	// From here on slow never reads: the server's writes to it block once
	// the socket buffers are full, then its queue of 8 fills.
	payload := strings.Repeat("x", 256<<10)
	const maxSends = 2000 // far more than the socket buffers hold
	sent := 0
	for te.mod.Dropped() == 0 {
		if sent == maxSends {
			t.Fatalf("slow client not dropped after %d events of %d bytes", sent, len(payload))
		}
		te.call(t, ctx, "stream::send", map[string]any{"stream_name": "s", "group_id": "g", "type": "big", "data": payload})
		sent++
		good.expect(ctx, "event", "s", "g", "<null>", "")
	}
	t.Logf("slow client dropped after %d events of %d KiB", sent, len(payload)>>10)
	for te.mod.Clients() != 1 {
		if !tick(ctx) {
			t.Fatalf("clients = %d after the drop, want 1", te.mod.Clients())
		}
	}
	te.call(t, ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "after", "data": true})
	good.expect(ctx, "create", "s", "g", "after", `true`)
	if n := te.mod.Dropped(); n != 1 {
		t.Errorf("dropped = %d, want 1", n)
	}
}

// TestRedisOutage: while Redis is down the functions fail with their error
// code (no hang); once it is back, the change subscription resumes and
// pushes flow again.
func TestRedisOutage(t *testing.T) {
	ctx := enginetest.Context(t)
	rs := storetest.StartServer(t)
	te := startEngine(t, ctx, rs.URL(), "")
	c := dial(t, ctx, te.mod.URL())
	c.join(ctx, "sub", "s", "g", nil)
	c.expect(ctx, "sync", "s", "g", "<null>", `[]`)

	frames := make(chan msg, 64)
	readCtx, stopReading := context.WithCancel(ctx)
	done := make(chan struct{})
	// Exits when the test ends (stopReading closes the socket).
	go func() {
		defer close(done)
		for {
			_, b, err := c.conn.Read(readCtx)
			if err != nil {
				return
			}
			var m msg
			json.Unmarshal(b, &m)
			m.raw = b
			frames <- m
		}
	}()
	defer func() { stopReading(); <-done }()

	rs.Stop()
	_, err := te.callErr(ctx, "stream::set", map[string]any{"stream_name": "s", "group_id": "g", "item_id": "i", "data": 1})
	if errCode(err) != "STREAM_SET_ERROR" {
		t.Fatalf("stream::set with Redis down: %v, want STREAM_SET_ERROR", err)
	}
	rs.Restart()

	// Pushes resume once the subscription is back; events sent before
	// that are lost (pub/sub is at-most-once).
	for n := 0; ; n++ {
		if _, err := te.callErr(ctx, "stream::send", map[string]any{"stream_name": "s", "group_id": "g", "type": "probe", "data": n}); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("stream::send never succeeded after the restart: %v", err)
			}
			tick(ctx)
			continue
		}
		select {
		case m := <-frames:
			if m.eventType() != "event" {
				t.Fatalf("after the restart: got %s, want a custom event", m)
			}
			return
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no push after Redis came back")
		}
	}
}

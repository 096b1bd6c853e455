package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/cluster"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"

	_ "github.com/iii-workbench/iii/engine/modules/queue"
)

// go-redis probes a pool whose dials keep failing (the Redis outage below)
// from a goroutine that returns at its next wake-up once the client closes.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

const (
	heartbeat = 100 * time.Millisecond
	ttl       = 500 * time.Millisecond
)

func clusterYAML(redisURL, name string) string {
	return fmt.Sprintf(`engine: {port: 0, invocation_timeout_ms: 8000}
redis: {url: %q}
cluster: {name: %s, heartbeat_ms: %d, ttl_ms: %d}
modules:
  - class: QueueModule
    config: {queues: {default: {concurrency: 8, max_retries: 3, backoff_ms: 50, poll_interval_ms: 20}}}
`, redisURL, name, heartbeat.Milliseconds(), ttl.Milliseconds())
}

// node is one engine of the test cluster with one Go SDK worker on it.
type node struct {
	i   int
	srv *enginetest.Server
	w   *sdk.Worker

	mu    sync.Mutex
	calls map[string]int // "fn|key" -> times invoked
	hang  chan struct{}  // closed at the end: releases e<i>::hang
}

func (n *node) record(fn, key string) {
	n.mu.Lock()
	n.calls[fn+"|"+key]++
	n.mu.Unlock()
}

func (n *node) count(fn, key string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[fn+"|"+key]
}

type in struct {
	Key string `json:"key"`
}

func startNode(t *testing.T, ctx context.Context, i int, redisURL, name string) *node {
	t.Helper()
	srv := enginetest.Start(t, ctx, clusterYAML(redisURL, name))
	n := &node{i: i, srv: srv, calls: map[string]int{}, hang: make(chan struct{})}
	w, err := sdk.Connect(ctx, srv.URL(), sdk.WithName(fmt.Sprintf("w%d", i)), sdk.WithTelemetry(false),
		sdk.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	n.w = w
	t.Cleanup(func() {
		close(n.hang)
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w.Close(cctx)
	})
	p := fmt.Sprintf("e%d::", i)
	must(t, w.RegisterFunction(p+"echo", sdk.Typed(func(_ context.Context, x in) (map[string]any, error) {
		n.record("echo", x.Key)
		return map[string]any{"by": i, "key": x.Key}, nil
	})))
	must(t, w.RegisterFunction(p+"fail", func(context.Context, json.RawMessage) (any, error) {
		return nil, sdk.Errorf("boom", "failed on engine %d", i)
	}))
	must(t, w.RegisterFunction(p+"record", sdk.Typed(func(_ context.Context, x in) (any, error) {
		n.record("record", x.Key)
		return nil, nil
	})))
	must(t, w.RegisterFunction(p+"hang", func(ctx context.Context, _ json.RawMessage) (any, error) {
		select {
		case <-n.hang:
		case <-ctx.Done():
		}
		return nil, nil
	}))
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func invoke(ctx context.Context, e *engine.Engine, fn string, data any) (json.RawMessage, error) {
	b, _ := json.Marshal(data)
	return e.Invoke(ctx, engine.Request{FunctionID: fn, Data: b})
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func errCode(err error) string {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		return eb.Code
	}
	if err != nil {
		return "go:" + err.Error()
	}
	return ""
}

// sees reports whether engine e lists every function id.
func sees(ctx context.Context, e *engine.Engine, ids ...string) bool {
	res, err := invoke(ctx, e, "engine::functions::list", map[string]any{})
	if err != nil {
		return false
	}
	for _, id := range ids {
		if !strings.Contains(string(res), `"function_id":"`+id+`"`) {
			return false
		}
	}
	return true
}

func TestThreeEngines(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	rs := storetest.StartServer(t)
	name := fmt.Sprintf("t%d", time.Now().UnixNano())
	nodes := []*node{startNode(t, ctx, 0, rs.URL(), name), startNode(t, ctx, 1, rs.URL(), name), startNode(t, ctx, 2, rs.URL(), name)}
	for _, n := range nodes {
		waitFor(t, ctx, fmt.Sprintf("engine %d to see every engine's functions", n.i), func() bool {
			return sees(ctx, n.srv.Engine(), "e0::echo", "e1::echo", "e2::echo")
		})
	}

	t.Run("calls in every direction", func(t *testing.T) {
		for _, from := range nodes {
			for _, to := range nodes {
				key := fmt.Sprintf("%d->%d", from.i, to.i)
				r, err := sdk.Call[map[string]any](ctx, from.w, fmt.Sprintf("e%d::echo", to.i), in{Key: key})
				if err != nil || r["by"] != float64(to.i) || r["key"] != key {
					t.Fatalf("%s: %v, %v", key, r, err)
				}
				// And the engine's own in-process callers (modules) alike.
				res, err := invoke(ctx, from.srv.Engine(), fmt.Sprintf("e%d::echo", to.i), in{Key: key + "/engine"})
				if err != nil || !strings.Contains(string(res), `"by":`+fmt.Sprint(to.i)) {
					t.Fatalf("%s from the engine: %s, %v", key, res, err)
				}
			}
		}
	})

	t.Run("errors pass through", func(t *testing.T) {
		_, err := sdk.Call[any](ctx, nodes[0].w, "e2::fail", nil)
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != "boom" || eb.Message != "failed on engine 2" {
			t.Fatalf("err = %#v", err)
		}
		_, err = sdk.Call[any](ctx, nodes[0].w, "nowhere::fn", nil)
		if errCode(err) != engine.CodeFunctionNotFound {
			t.Fatalf("unknown function: %v", err)
		}
	})

	t.Run("void and enqueue", func(t *testing.T) {
		for _, to := range nodes[1:] {
			fn := fmt.Sprintf("e%d::record", to.i)
			if _, err := nodes[0].w.Trigger(ctx, sdk.TriggerRequest{FunctionID: fn, Payload: in{Key: "void"}, Action: sdk.Void()}); err != nil {
				t.Fatal(err)
			}
			res, err := nodes[0].w.Trigger(ctx, sdk.TriggerRequest{FunctionID: fn, Payload: in{Key: "enq"}, Action: sdk.Enqueue("default")})
			if err != nil || !strings.Contains(string(res), "messageReceiptId") {
				t.Fatalf("enqueue: %s, %v", res, err)
			}
			waitFor(t, ctx, fn+" to run the void and the queued call", func() bool {
				return to.count("record", "void") == 1 && to.count("record", "enq") >= 1
			})
		}
		// Every engine consumes the queue, two of them without a worker for
		// the function: without forwarding, a message has a (2/3)^3 chance
		// to meet only those in its max_retries (3) attempts and be
		// dead-lettered. None may be.
		for k := range 30 {
			if _, err := nodes[0].w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "e2::record", Payload: in{Key: fmt.Sprint("m", k)},
				Action: sdk.Enqueue("default")}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, ctx, "all 30 queued calls to run on engine 2", func() bool {
			for k := range 30 {
				if nodes[2].count("record", fmt.Sprint("m", k)) == 0 {
					return false
				}
			}
			return true
		})
		res, err := invoke(ctx, nodes[1].srv.Engine(), "engine::queue::topic_stats", map[string]any{"queue": "default"})
		if err != nil || !strings.Contains(string(res), `"dlq_depth":0`) {
			t.Fatalf("queue stats %s, %v; want an empty dead-letter queue", res, err)
		}
	})

	t.Run("durable publish reaches subscribers on every engine once", func(t *testing.T) {
		for _, n := range nodes[1:] {
			if _, err := n.w.RegisterTrigger(sdk.Trigger{Type: "durable:subscriber", FunctionID: fmt.Sprintf("e%d::record", n.i),
				Config: map[string]any{"topic": "orders"}}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, ctx, "engine 0 to learn the subscribers", func() bool {
			return len(nodes[0].srv.Engine().ClusterBindings("durable:subscriber")) == 2
		})
		if _, err := sdk.Call[any](ctx, nodes[0].w, "iii::durable::publish", map[string]any{"topic": "orders", "data": in{Key: "pub"}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "both subscribers", func() bool {
			return nodes[1].count("record", "pub") == 1 && nodes[2].count("record", "pub") == 1
		})
		time.Sleep(300 * time.Millisecond) // a duplicate would arrive within this
		if a, b := nodes[1].count("record", "pub"), nodes[2].count("record", "pub"); a != 1 || b != 1 {
			t.Fatalf("deliveries: engine 1 %d, engine 2 %d; want 1 each", a, b)
		}
	})

	t.Run("one view", func(t *testing.T) {
		res, err := invoke(ctx, nodes[0].srv.Engine(), "engine::workers::list", map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		var wl struct {
			Workers []struct {
				Name   string `json:"name"`
				Engine string `json:"engine"`
			} `json:"workers"`
		}
		json.Unmarshal(res, &wl)
		engines := map[string]string{}
		for _, w := range wl.Workers {
			engines[w.Name] = w.Engine
		}
		for _, n := range nodes {
			if got := engines[fmt.Sprintf("w%d", n.i)]; got != n.srv.Cluster().EngineName() {
				t.Errorf("worker w%d listed with engine %q, want %q (%s)", n.i, got, n.srv.Cluster().EngineName(), res)
			}
		}
		res, _ = invoke(ctx, nodes[1].srv.Engine(), "engine::functions::list", map[string]any{"prefix": "e2::echo"})
		if want := `"engines":["` + nodes[2].srv.Cluster().EngineName() + `"]`; !strings.Contains(string(res), want) {
			t.Errorf("functions::list = %s, want %s", res, want)
		}
	})

	t.Run("a hung engine: its calls end, its functions go", func(t *testing.T) {
		calls := make(chan error, 5)
		for range cap(calls) {
			go func() {
				_, err := nodes[0].w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "e2::hang", Payload: in{}, Timeout: 20 * time.Second})
				calls <- err
			}()
		}
		waitFor(t, ctx, "the calls to reach engine 2", func() bool {
			f, _ := nodes[2].srv.Engine().InFlight(nodes[2].w.ID())
			return f == int64(cap(calls))
		})
		frozeAt := time.Now()
		cluster.Freeze(nodes[2].srv.Cluster())
		// The advertisement carries its expiry: at most ttl from the last
		// heartbeat, never renewed from now on.
		rdb := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(rs.URL(), "redis://")})
		defer rdb.Close()
		adKey := "iii:cluster:" + name + ":engine:" + nodes[2].srv.Cluster().ID()
		if pttl, err := rdb.PTTL(ctx, adKey).Result(); err != nil || pttl <= 0 || pttl > ttl {
			t.Errorf("PTTL %s = %v, %v; want an expiry within ttl (%v)", adKey, pttl, err, ttl)
		}
		for range cap(calls) {
			select {
			case err := <-calls:
				if errCode(err) != engine.CodeInvocationStopped {
					t.Fatalf("call to a lapsed engine: %v", err)
				}
			case <-ctx.Done():
				t.Fatal("a call to the lapsed engine never ended")
			}
		}
		// Within ttl + heartbeat, with a second of slack for a loaded
		// machine (a hang that never ends fails the wait above instead).
		if d := time.Since(frozeAt); d > ttl+heartbeat+time.Second {
			t.Errorf("calls ended %v after the last heartbeat; want within ttl+heartbeat (%v)", d, ttl+heartbeat)
		}
		// Every survivor drops engine 2 within ttl + heartbeat of its last
		// heartbeat (the slack is for a loaded machine).
		waitFor(t, ctx, "the survivors to drop engine 2", func() bool {
			return !sees(ctx, nodes[0].srv.Engine(), "e2::echo") && !sees(ctx, nodes[1].srv.Engine(), "e2::echo") &&
				sees(ctx, nodes[0].srv.Engine(), "e1::echo") && sees(ctx, nodes[1].srv.Engine(), "e0::echo")
		})
		if d := time.Since(frozeAt); d > ttl+heartbeat+time.Second {
			t.Errorf("engine 2 was listed %v after its last heartbeat; want at most ttl+heartbeat (%v)", d, ttl+heartbeat)
		}
		if n, err := rdb.Exists(ctx, adKey).Result(); err != nil || n != 0 {
			t.Errorf("%s still in Redis %v after the last heartbeat (%d, %v); want expired within ttl", adKey, time.Since(frozeAt), n, err)
		}
		// The survivors keep serving each other.
		if _, err := sdk.Call[any](ctx, nodes[0].w, "e1::echo", in{Key: "after"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("redis outage", func(t *testing.T) {
		stoppedAt := time.Now()
		rs.Stop()
		waitFor(t, ctx, "cross-engine calls to fail with cluster_unavailable", func() bool {
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			defer ccancel()
			_, err := sdk.Call[any](cctx, nodes[0].w, "e1::echo", in{Key: "outage"})
			return errCode(err) == engine.CodeClusterUnavailable
		})
		// Noticed at the next heartbeat or registry read, each bounded by
		// max(heartbeat, 500 ms); the slack is for a loaded machine.
		if d := time.Since(stoppedAt); d > heartbeat+2*time.Second {
			t.Errorf("the outage was noticed after %v; want within a heartbeat and one Redis timeout", d)
		}
		start := time.Now()
		_, err := sdk.Call[any](ctx, nodes[0].w, "e1::echo", in{Key: "outage"})
		if errCode(err) != engine.CodeClusterUnavailable || time.Since(start) > 100*time.Millisecond {
			t.Fatalf("during the outage: %v after %v; want cluster_unavailable at once", err, time.Since(start))
		}
		if _, err := sdk.Call[any](ctx, nodes[0].w, "e0::echo", in{Key: "local"}); err != nil {
			t.Fatalf("local call during the outage: %v", err)
		}
		// The table changes while Redis is away: engine 1 gains a function.
		must(t, nodes[1].w.RegisterFunction("e1::late", func(context.Context, json.RawMessage) (any, error) { return "late", nil }))
		// Redis comes back empty (no persistence): every engine must
		// advertise again. Until the table is rebuilt, a call for a
		// function a peer served before the outage must not be told that
		// no engine serves it.
		rs.Restart()
		codes := map[string]int{}
		waitFor(t, ctx, "forwarding to resume after Redis returns", func() bool {
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			defer ccancel()
			_, err := sdk.Call[any](cctx, nodes[0].w, "e1::echo", in{Key: "back"})
			codes[errCode(err)]++
			return err == nil
		})
		if n := codes[engine.CodeFunctionNotFound]; n > 0 {
			t.Errorf("%d calls after Redis returned failed with function_not_found (codes %v); a rebuilding table must not say no engine serves a known function", n, codes)
		}
		waitFor(t, ctx, "engine 0 to learn the function engine 1 registered during the outage", func() bool {
			r, err := sdk.Call[string](ctx, nodes[0].w, "e1::late", nil)
			return err == nil && r == "late"
		})
	})
}

// With an auth token, links present it and refuse peers that do not.
func TestLinksNeedTheEngineToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	rs := storetest.StartServer(t)
	yaml := fmt.Sprintf("engine: {port: 0, auth_token: s3cret}\nredis: {url: %q}\ncluster: {name: auth%d, heartbeat_ms: 100}\n",
		rs.URL(), time.Now().UnixNano())
	a := enginetest.Start(t, ctx, yaml)
	b := enginetest.Start(t, ctx, yaml)
	connect := func(url string) *sdk.Worker {
		w, err := sdk.Connect(ctx, url, sdk.WithBearerToken("s3cret"), sdk.WithTelemetry(false), sdk.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close(context.Background()) })
		return w
	}
	must(t, connect(b.URL()).RegisterFunction("b::hello", func(context.Context, json.RawMessage) (any, error) { return "hi", nil }))
	wa := connect(a.URL())
	waitFor(t, ctx, "a forwarded call with tokens", func() bool {
		r, err := sdk.Call[string](ctx, wa, "b::hello", nil)
		return err == nil && r == "hi"
	})
	for _, hdr := range []http.Header{nil, {"Authorization": {"Bearer wrong"}}} {
		_, resp, err := websocket.Dial(ctx, "ws://"+b.Cluster().LinkAddr()+"/", &websocket.DialOptions{HTTPHeader: hdr})
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("link dial with %v: %v, %v; want 401", hdr, resp, err)
		}
	}
}

// TestOnMiniredis: the registry runs on miniredis as well (a single engine
// test setup, or an embedded store shared over TCP): three engines call
// each other's functions in every direction, and an engine that stops
// leaves the others' tables at once.
func TestOnMiniredis(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	mr := storetest.Mini(t)
	name := fmt.Sprintf("mini%d", time.Now().UnixNano())
	nodes := []*node{startNode(t, ctx, 0, mr.URL, name), startNode(t, ctx, 1, mr.URL, name), startNode(t, ctx, 2, mr.URL, name)}
	for _, n := range nodes {
		waitFor(t, ctx, fmt.Sprintf("engine %d to see every engine's functions", n.i), func() bool {
			return sees(ctx, n.srv.Engine(), "e0::echo", "e1::echo", "e2::echo")
		})
	}
	for _, from := range nodes {
		for _, to := range nodes {
			key := fmt.Sprintf("%d->%d", from.i, to.i)
			r, err := sdk.Call[map[string]any](ctx, from.w, fmt.Sprintf("e%d::echo", to.i), in{Key: key})
			if err != nil || r["by"] != float64(to.i) {
				t.Fatalf("%s: %v, %v", key, r, err)
			}
		}
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := nodes[2].srv.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "engines 0 and 1 to drop the engine that stopped", func() bool {
		return !sees(ctx, nodes[0].srv.Engine(), "e2::echo") && !sees(ctx, nodes[1].srv.Engine(), "e2::echo")
	})
	if _, err := sdk.Call[any](ctx, nodes[0].w, "e2::echo", in{}); errCode(err) != engine.CodeFunctionNotFound {
		t.Errorf("a call for the stopped engine's function: %v, want function_not_found", err)
	}
}

// TestOversizedCallFailsAlone: a call or a result too large for a link
// fails alone with payload_too_large; the link and the calls in flight on
// it go on.
func TestOversizedCallFailsAlone(t *testing.T) {
	// Restored after the engines' cleanups have stopped them (cleanups run
	// last-registered first), not while their links still read it.
	t.Cleanup(cluster.SetLinkLineLimit(64 << 10))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	mr := storetest.Mini(t)
	yaml := fmt.Sprintf("engine: {port: 0}\nredis: {url: %q}\ncluster: {name: big%d, heartbeat_ms: 100}\n", mr.URL, time.Now().UnixNano())
	a := enginetest.Start(t, ctx, yaml)
	b := enginetest.Start(t, ctx, yaml)
	connect := func(url string) *sdk.Worker {
		w, err := sdk.Connect(ctx, url, sdk.WithTelemetry(false), sdk.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close(context.Background()) })
		return w
	}
	release := make(chan struct{})
	wb := connect(b.URL())
	must(t, wb.RegisterFunction("b::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }))
	must(t, wb.RegisterFunction("b::big", func(context.Context, json.RawMessage) (any, error) {
		return strings.Repeat("x", 1<<20), nil // over the link's read limit too
	}))
	must(t, wb.RegisterFunction("b::hold", func(ctx context.Context, _ json.RawMessage) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "held", nil
	}))
	wa := connect(a.URL())
	waitFor(t, ctx, "a forwarded call", func() bool {
		_, err := sdk.Call[json.RawMessage](ctx, wa, "b::echo", 1)
		return err == nil
	})
	held := make(chan error, 1)
	go func() {
		r, err := sdk.Call[string](ctx, wa, "b::hold", nil)
		if err == nil && r != "held" {
			err = fmt.Errorf("b::hold = %q", r)
		}
		held <- err
	}()
	waitFor(t, ctx, "b::hold to be in flight on b", func() bool {
		n, _ := b.Engine().InFlight(wb.ID())
		return n == 1
	})
	if _, err := sdk.Call[json.RawMessage](ctx, wa, "b::echo", map[string]string{"p": strings.Repeat("y", 1<<20)}); errCode(err) != engine.CodePayloadTooLarge {
		t.Errorf("a 1 MiB call over a 64 KiB link: %v, want payload_too_large", err)
	}
	if _, err := sdk.Call[string](ctx, wa, "b::big", nil); errCode(err) != engine.CodePayloadTooLarge {
		t.Errorf("a 1 MiB result over a 64 KiB link: %v, want payload_too_large", err)
	}
	if r, err := sdk.Call[int](ctx, wa, "b::echo", 7); err != nil || r != 7 {
		t.Errorf("a small call after them: %v, %v", r, err)
	}
	close(release)
	select {
	case err := <-held:
		if err != nil {
			t.Errorf("the call in flight during the oversized ones: %v, want its result", err)
		}
	case <-ctx.Done():
		t.Fatal("the held call never ended")
	}
}

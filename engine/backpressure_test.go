package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/internal/slowlink"
)

// smallSocketBuffer is the socket buffer size of the test's slow readers
// and of the engine's side of their sockets: backpressure shows after a
// few KiB instead of megabytes of kernel buffers.
const smallSocketBuffer = slowlink.SocketBuffer

// smallBuffers gives the engine's accepted sockets small send buffers.
func smallBuffers(ln net.Listener) net.Listener { return smallBufferListener{ln} }

type smallBufferListener struct{ net.Listener }

func (l smallBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(smallSocketBuffer)
	}
	return c, err
}

// smallBufferDial is a websocket dial option whose socket has a small
// receive buffer (see smallSocketBuffer).
func smallBufferDial() *websocket.DialOptions {
	var d net.Dialer
	return &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(smallSocketBuffer)
			}
			return c, err
		},
	}}}
}

// disconnects counts worker disconnections on the engine's bus.
func disconnects(t *testing.T, eng *engine.Engine) (count func() ([]time.Time, []string), stop func()) {
	sub := eng.Events().Subscribe(1024)
	var mu sync.Mutex
	var reasons []string
	var at []time.Time
	done, quit := make(chan struct{}), make(chan struct{})
	// Exits when stop closes quit.
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case ev := <-sub.C():
				if d, ok := ev.(event.WorkerDisconnected); ok {
					mu.Lock()
					reasons = append(reasons, d.Reason)
					at = append(at, d.At)
					mu.Unlock()
				}
			}
		}
	}()
	return func() ([]time.Time, []string) {
			mu.Lock()
			defer mu.Unlock()
			return append([]time.Time(nil), at...), append([]string(nil), reasons...)
		}, func() {
			sub.Close()
			close(quit)
			<-done
		}
}

// TestVoidBurstIntoSlowWorker: 100,000 fire-and-forget calls into one SDK
// worker that reads slowly are all delivered; the worker stays connected,
// the caller is slowed down instead (its reader pauses), and the engine's
// memory stays bounded.
func TestVoidBurstIntoSlowWorker(t *testing.T) {
	calls := 100_000
	if raceEnabled {
		calls = 5_000
	}
	const queueBytes = 256 << 10
	te := enginetest.New(t, engine.Options{OutboundQueueBytes: queueBytes, SlowConsumerTimeout: 10 * time.Second}, enginetest.WithListener(smallBuffers))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	w := slowlink.Connect(t, ctx, te.URL, "slow", "slow::fn", calls)
	proxy, got := w.Proxy, &w.Got
	enginetest.WaitFor(t, "slow::fn registered", func() bool {
		for _, f := range te.Snapshot().Functions {
			if f.ID == "slow::fn" {
				return true
			}
		}
		return false
	})

	caller, _, err := enginetest.DialRaw(t, te.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer caller.CloseNow()
	readDone := make(chan struct{})
	// Discards what the engine sends; exits when the socket closes.
	go func() {
		defer close(readDone)
		for {
			if _, _, err := caller.Read(ctx); err != nil {
				return
			}
		}
	}()
	defer func() { caller.CloseNow(); <-readDone }()
	proxy.Hold()
	peak := enginetest.HeapGrowth()
	sent := make(chan error, 1)
	// Exits when every call is written or the socket fails.
	go func() {
		for i := range calls {
			f := fmt.Appendf(nil, `{"type":"invokefunction","function_id":"slow::fn","data":{"i":%d},"action":{"type":"void"}}`, i)
			if err := caller.Write(ctx, websocket.MessageText, f); err != nil {
				sent <- fmt.Errorf("call %d: %w", i, err)
				return
			}
		}
		sent <- nil
	}()
	// The worker reads nothing until the engine has held the caller back.
	for held := time.Now(); te.Stats().Stalls == 0; time.Sleep(5 * time.Millisecond) {
		if time.Since(held) > 20*time.Second {
			t.Fatalf("the caller was never held back; delivered %d, stats %+v", got.Load(), te.Stats())
		}
	}
	t.Logf("held back after %d delivered", got.Load())
	opened := time.Now()
	proxy.Open()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for got.Load() < int64(calls) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	grew := peak()
	t.Logf("delivered in %v after open", time.Since(opened))
	st := te.Stats()
	t.Logf("delivered %d/%d, stalls %d, heap growth peak %.1f MiB, dropped %v", got.Load(), calls, st.Stalls, float64(grew)/(1<<20), st.Dropped)
	w.Delivered(t, int64(calls), st)
	// The engine, the SDK worker and the caller share this heap; without
	// backpressure the engine alone would hold the whole burst (~30 MB of
	// frames plus a pending entry each).
	if limit := uint64(48 << 20); grew > limit {
		t.Errorf("heap grew by %d MiB, over the %d MiB bound", grew>>20, limit>>20)
	}
	for te.Stats().Pending != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d void calls still pending", te.Stats().Pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSlowConsumerIsClosed: a worker that truly stops reading is closed
// within the slow-consumer timeout, with the reason logged on the
// disconnect event; every call pending on it ends with
// invocation_stopped, and healthy workers are served meanwhile.
func TestSlowConsumerIsClosed(t *testing.T) {
	const timeout = 300 * time.Millisecond
	te := enginetest.New(t, engine.Options{OutboundQueueBytes: 64 << 10, SlowConsumerTimeout: timeout}, enginetest.WithListener(smallBuffers))
	count, stopCount := disconnects(t, te.Engine)
	defer stopCount()
	// A worker that never reads: its frames pile up in the engine.
	slow, _, err := enginetest.DialRaw(t, te.URL, smallBufferDial())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow.Write(ctx, websocket.MessageText, []byte(`{"type":"registerfunction","id":"slow::fn"}`))
	caller := enginetest.Dial(t, te.URL)
	caller.Quiet()
	fast := enginetest.Dial(t, te.URL)
	fast.Register("fast::fn")
	other := enginetest.Dial(t, te.URL)

	payload := strings.Repeat("p", 64<<10)
	const calls = 100 // 6.5 MB: more than the socket buffers hold
	start := time.Now()
	sent := make(chan struct{})
	// Exits after the last write; the engine reads on once the slow worker
	// is closed.
	go func() {
		defer close(sent)
		for range calls {
			frame, _ := json.Marshal(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "slow::fn", "data": payload})
			if err := caller.Conn.Write(ctx, websocket.MessageText, frame); err != nil {
				t.Errorf("caller write: %v", err)
				return
			}
		}
	}()
	// The caller's reader is paused; another caller is served meanwhile.
	enginetest.WaitFor(t, "the caller held back", func() bool { return te.Stats().Stalls > 0 })
	// The slow worker's writer was stuck before its queue filled up.
	stuck := time.Now()
	other.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "fast::fn", "data": 1})
	fast.ServeOnce(1, nil)
	if res := other.Expect("invocationresult"); res["result"] != float64(1) {
		t.Fatalf("healthy call: %v", res)
	}

	var slowMsg string
	for i := range calls {
		res := caller.Next(10 * time.Second)
		// Calls read after the worker was removed find no function.
		if c := enginetest.ErrCode(res); res["type"] != "invocationresult" || c != engine.CodeInvocationStopped && c != engine.CodeFunctionNotFound {
			t.Fatalf("result %d: %v, want invocation_stopped", i, res)
		}
		if msg, _ := res["error"].(map[string]any)["message"].(string); strings.Contains(msg, "slow consumer") {
			slowMsg = msg
		}
	}
	<-sent
	elapsed := time.Since(start)
	if slowMsg == "" {
		t.Error("no caller was told its call stopped because of a slow consumer")
	}
	enginetest.WaitFor(t, "the disconnect event", func() bool { n, _ := count(); return len(n) == 1 })
	closedAt, reasons := count()
	if want := "slow consumer: no read progress for 300ms"; reasons[0] != want {
		t.Errorf("close reason %q, want %q", reasons[0], want)
	}
	if d := closedAt[0].Sub(stuck); d > timeout+2*time.Second {
		t.Errorf("slow consumer closed %v after its writer was stuck (timeout %v)", d, timeout)
	}
	t.Logf("closed %v after the caller was held back; all %d calls ended in %v", closedAt[0].Sub(stuck), calls, elapsed)
	if st := te.Stats(); st.SlowConsumers != 1 || st.Pending != 0 {
		t.Errorf("slow consumers %d, pending %d; want 1, 0", st.SlowConsumers, st.Pending)
	}
	for _, f := range te.Snapshot().Functions {
		if f.ID == "slow::fn" {
			t.Error("slow::fn still registered")
		}
	}
}

// TestSlowConsumersCountsOnlyWhatItCloses: the stall check's verdict
// counts in Stats.SlowConsumers only a worker it closes itself: one
// already closing for another reason keeps its own reason, and one already
// gone is left alone.
func TestSlowConsumersCountsOnlyWhatItCloses(t *testing.T) {
	te := enginetest.New(t, engine.Options{SlowConsumerTimeout: time.Minute})
	count, stopCount := disconnects(t, te.Engine)
	defer stopCount()
	disconnected := func(n int) []string {
		t.Helper()
		enginetest.WaitFor(t, fmt.Sprintf("disconnect %d", n), func() bool { _, r := count(); return len(r) >= n })
		_, r := count()
		return r
	}

	live := enginetest.Dial(t, te.URL)
	te.SlowConsumerForTest(live.ID)()
	if r := disconnected(1); !strings.Contains(r[0], "slow consumer") || te.Stats().SlowConsumers != 1 {
		t.Fatalf("a live worker: reason %q, slow consumers %d; want closed as one, counted", r[0], te.Stats().SlowConsumers)
	}

	gone := enginetest.Dial(t, te.URL)
	verdict := te.SlowConsumerForTest(gone.ID)
	gone.Conn.Close(websocket.StatusNormalClosure, "bye")
	disconnected(2)
	verdict()
	if n := te.Stats().SlowConsumers; n != 1 {
		t.Errorf("a worker already gone was counted: slow consumers %d, want 1", n)
	}

	// A peer that never reads: the engine's close waits for its close
	// frame.
	raw, _, err := enginetest.DialRaw(t, te.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseNow()
	var id string
	enginetest.WaitFor(t, "the raw worker", func() bool {
		for _, w := range te.Snapshot().Workers {
			if !w.Internal {
				id = w.ID
			}
		}
		return id != ""
	})
	verdict = te.SlowConsumerForTest(id)
	te.CloseWorkerForTest(id, "refused for the test")
	verdict()
	if r := disconnected(3); strings.Contains(r[2], "slow consumer") {
		t.Errorf("a worker closing for another reason left with %q; want its own reason", r[2])
	}
	if n := te.Stats().SlowConsumers; n != 1 {
		t.Errorf("a worker closing for another reason was counted: slow consumers %d, want 1", n)
	}
}

// TestCallerGoneReleasesPending: a caller that disconnects, or an
// in-process caller whose context ends, releases its pending call at once;
// the target's late answer is dropped and counted.
func TestCallerGoneReleasesPending(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	target := enginetest.Dial(t, te.URL)
	target.Register("held::fn")

	caller := enginetest.Dial(t, te.URL)
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "held::fn", "data": 1})
	inv := target.Expect("invokefunction")
	if n := te.Stats().Pending; n != 1 {
		t.Fatalf("pending %d, want 1", n)
	}
	caller.Conn.CloseNow()
	enginetest.WaitFor(t, "the pending call released", func() bool { return te.Stats().Pending == 0 })
	target.Send(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": "held::fn", "result": 1})
	enginetest.WaitFor(t, "the late result counted", func() bool { return te.Stats().Dropped[engine.DropLateResult] == 1 })

	// A void call is not released when its caller leaves: fire-and-forget
	// outlives the caller (iii invoke --async sends one and exits).
	voider := enginetest.Dial(t, te.URL)
	workers := te.Stats().Workers
	voider.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "held::fn",
		"data": 3, "action": map[string]any{"type": "void"}})
	void := target.Expect("invokefunction")
	voider.Conn.CloseNow()
	enginetest.WaitFor(t, "the void caller's cleanup", func() bool { return te.Stats().Workers == workers-1 })
	if n := te.Stats().Pending; n != 1 {
		t.Fatalf("pending %d after the void caller left, want 1 (the void call)", n)
	}
	target.Send(map[string]any{"type": "invocationresult", "invocation_id": void["invocation_id"], "function_id": "held::fn", "result": nil})
	enginetest.WaitFor(t, "the void call answered", func() bool { return te.Stats().Pending == 0 })

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	// Exits when the call ends with ctx.
	go func() {
		_, err := te.Invoke(ctx, engine.Request{FunctionID: "held::fn", Data: json.RawMessage(`2`)})
		errc <- err
	}()
	target.Expect("invokefunction")
	if n := te.Stats().Pending; n != 1 {
		t.Fatalf("pending %d, want 1", n)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Invoke: %v, want context.Canceled", err)
	}
	if n := te.Stats().Pending; n != 0 {
		t.Fatalf("pending %d right after the caller gave up, want 0", n)
	}
}

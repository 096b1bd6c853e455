package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

// go-redis probes a pool whose dials keep failing (a Redis outage) from a
// goroutine that sleeps 1 s between dials and returns at its next wake-up
// once the client is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// testEngine is an engine running the queue module.
type testEngine struct {
	srv  *enginetest.Server
	logs *enginetest.Logs
	once sync.Once
}

// startEngine starts an engine on redisURL with the queue module;
// queuesYAML is the module's config as a YAML flow map ("" for none).
func startEngine(t testing.TB, ctx context.Context, redisURL, queuesYAML string) *testEngine {
	t.Helper()
	if queuesYAML == "" {
		queuesYAML = "{}"
	}
	srv := enginetest.StartModule(t, ctx, redisURL, "QueueModule", queuesYAML)
	te := &testEngine{srv: srv, logs: srv.Logs}
	// enginetest stops the engine at cleanup too; stopping twice is fine.
	t.Cleanup(func() { te.stop(t, 10*time.Second) })
	return te
}

// stop stops the engine within d; it is safe to call again.
func (te *testEngine) stop(t testing.TB, d time.Duration) {
	te.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		if err := te.srv.Stop(ctx); err != nil {
			t.Errorf("stop engine: %v", err)
		}
	})
}

func (te *testEngine) eng() *engine.Engine { return te.srv.Engine() }

// call invokes fn through the engine and fails the test on error.
func (te *testEngine) call(t *testing.T, ctx context.Context, fn string, in any) json.RawMessage {
	t.Helper()
	return enginetest.Call(t, ctx, te.eng(), fn, in)
}

func (te *testEngine) callErr(ctx context.Context, fn string, in any) (json.RawMessage, error) {
	return enginetest.CallErr(ctx, te.eng(), fn, in)
}

// enqueue puts a call to fn with data on queue through the engine's enqueue
// action and returns the receipt.
func (te *testEngine) enqueue(t *testing.T, ctx context.Context, queue, fn string, data any) string {
	t.Helper()
	res, err := te.enqueueErr(ctx, queue, fn, data)
	if err != nil {
		t.Fatalf("enqueue %s on %s: %v", fn, queue, err)
	}
	var r struct {
		MessageReceiptID string `json:"messageReceiptId"`
	}
	if err := json.Unmarshal(res, &r); err != nil || r.MessageReceiptID == "" {
		t.Fatalf("enqueue %s on %s: result %s, want {messageReceiptId}", fn, queue, res)
	}
	return r.MessageReceiptID
}

func (te *testEngine) enqueueErr(ctx context.Context, queue, fn string, data any) (json.RawMessage, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	return te.eng().Invoke(ctx, engine.Request{FunctionID: fn, Data: b,
		Action: &protocol.Action{Type: protocol.ActionEnqueue, Queue: queue}})
}

// register registers an in-process function on the engine.
func (te *testEngine) register(t testing.TB, id string, h engine.Handler) {
	t.Helper()
	if err := te.eng().RegisterFunction("queue-test", engine.Function{ID: id, Handler: h}); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// stats is engine::queue::topic_stats for one queue.
type stats struct {
	Depth    int64 `json:"depth"`
	Pending  int64 `json:"pending"`
	Delayed  int64 `json:"delayed"`
	DLQDepth int64 `json:"dlq_depth"`
}

func (te *testEngine) stats(t *testing.T, ctx context.Context, queue string) stats {
	t.Helper()
	var s stats
	res := te.call(t, ctx, "engine::queue::topic_stats", map[string]any{"queue": queue})
	if err := json.Unmarshal(res, &s); err != nil {
		t.Fatalf("topic_stats %s: %s: %v", queue, res, err)
	}
	return s
}

// waitStats polls topic_stats until pred holds.
func (te *testEngine) waitStats(t *testing.T, ctx context.Context, queue string, what string, pred func(stats) bool) stats {
	t.Helper()
	for {
		s := te.stats(t, ctx, queue)
		if pred(s) {
			return s
		}
		if !tick(ctx) {
			t.Fatalf("queue %s: %s never happened; last stats %+v", queue, what, s)
		}
	}
}

// worker connects a Go SDK worker to the engine, closed at cleanup.
func (te *testEngine) worker(t testing.TB, ctx context.Context, name string) *sdk.Worker {
	t.Helper()
	return enginetest.Connect(t, ctx, te.srv.URL(), name, sdk.WithLogger(slog.New(slog.DiscardHandler)))
}

// waitFunction waits until fn is registered on the engine.
func (te *testEngine) waitFunction(t testing.TB, ctx context.Context, fn string) {
	t.Helper()
	for {
		for _, f := range te.eng().Snapshot().Functions {
			if f.ID == fn {
				return
			}
		}
		if !tick(ctx) {
			t.Fatalf("function %s never registered", fn)
		}
	}
}

// waitBindings waits until n bindings of triggerType are active.
func (te *testEngine) waitBindings(t *testing.T, ctx context.Context, triggerType string, n int) {
	t.Helper()
	for len(te.eng().Bindings(triggerType)) < n {
		if !tick(ctx) {
			t.Fatalf("%d %s bindings never became active (have %d)", n, triggerType, len(te.eng().Bindings(triggerType)))
		}
	}
}

// tick waits a poll interval; false when ctx is done.
func tick(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(10 * time.Millisecond):
		return true
	}
}

// receive waits for one value on ch.
func receive[T any](t *testing.T, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("no %s: %v", what, ctx.Err())
		var zero T
		return zero
	}
}

// quiet asserts nothing arrives on ch for d.
func quiet[T any](t *testing.T, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	case <-time.After(d):
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// errCode is the ErrorBody code of err ("" when it is not one).
func errCode(err error) string {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		return eb.Code
	}
	return ""
}

// fields decodes a JSON object payload.
func fields(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("payload %s: %v", raw, err)
	}
	return m
}

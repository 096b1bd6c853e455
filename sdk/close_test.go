package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
)

// Close lets a running handler finish, answers calls arriving meanwhile
// with invocation_stopped, fails waiting calls with ErrClosed, delivers the
// handler's result and closes with 1000.
func TestCloseGraceful(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, err := Connect(ctx, fe.url(), fastOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	fc := fe.conn(ctx, t)

	started, release := make(chan struct{}), make(chan struct{})
	err = w.RegisterFunction("slow", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-release
		return "finished", ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	first := fc.invoke("slow", `{}`)
	<-started
	waiting := goTrigger(t, w, ctx, TriggerRequest{FunctionID: "elsewhere"})
	waitFor(ctx, t, fc, func(m protocol.InvokeFunction) bool { return m.FunctionID == "elsewhere" })

	closed := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	defer wg.Wait()
	go func() { // exits when Close returns
		defer wg.Done()
		closed <- w.Close(ctx)
	}()

	// Once closing, new calls are refused; probe until one is.
	poll(ctx, t, "worker closing", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.closing
	})
	second := fc.invoke("slow", `{}`)
	if r := resultFor(ctx, t, fc, second); r.Error == nil || r.Error.Code != CodeInvocationStopped {
		t.Errorf("call during Close: got %s %+v, want invocation_stopped", r.Result, r.Error)
	}
	if err := w.RegisterFunction("late", func(context.Context, json.RawMessage) (any, error) { return nil, nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("RegisterFunction during Close: got %v, want ErrClosed", err)
	}

	close(release)
	if r := resultFor(ctx, t, fc, first); r.Error != nil || string(r.Result) != `"finished"` {
		t.Errorf("in-flight call: got %s %+v, want \"finished\"", r.Result, r.Error)
	}
	if got := fc.closed(ctx, t); got != websocket.StatusNormalClosure {
		t.Errorf("close status %v, want 1000", got)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if r := await(ctx, t, waiting); !errors.Is(r.err, ErrClosed) {
		t.Errorf("call waiting during Close: got %v, want ErrClosed", r.err)
	}
}

// When Close's ctx ends first, handlers see their ctx cancelled, their
// results are still flushed and the socket still closes with 1000.
func TestCloseDeadline(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, err := Connect(ctx, fe.url(), fastOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	fc := fe.conn(ctx, t)
	started := make(chan struct{})
	err = w.RegisterFunction("stuck", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	id := fc.invoke("stuck", `{}`)
	<-started

	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := w.Close(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a stuck handler: got %v, want DeadlineExceeded", err)
	}
	r := resultFor(ctx, t, fc, id)
	if r.Error == nil || r.Error.Code != CodeInvocationFailed || r.Error.Message != context.Canceled.Error() {
		t.Errorf("cancelled handler result: %+v, want invocation_failed %q", r.Error, context.Canceled)
	}
	if got := fc.closed(ctx, t); got != websocket.StatusNormalClosure {
		t.Errorf("close status %v, want 1000", got)
	}
}

// Concurrent Close calls all return once the worker is closed.
func TestCloseIdempotent(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, err := Connect(ctx, fe.url())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { // exits when Close returns
			defer wg.Done()
			if err := w.Close(ctx); err != nil {
				t.Errorf("concurrent Close: %v", err)
			}
		}()
	}
	wg.Wait()
}

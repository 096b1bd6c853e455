package enginetest

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/sdk"
)

// Call invokes fn on eng in-process with in as JSON and fails the test on
// error.
func Call(t testing.TB, ctx context.Context, eng *engine.Engine, fn string, in any) json.RawMessage {
	t.Helper()
	res, err := CallErr(ctx, eng, fn, in)
	if err != nil {
		b, _ := json.Marshal(in)
		t.Fatalf("%s(%s): %v", fn, b, err)
	}
	return res
}

// CallErr invokes fn on eng in-process with in as JSON.
func CallErr(ctx context.Context, eng *engine.Engine, fn string, in any) (json.RawMessage, error) {
	data, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return eng.Invoke(ctx, engine.Request{FunctionID: fn, Data: data})
}

// Connect connects a Go SDK worker named name to url and closes it at
// cleanup.
func Connect(t testing.TB, ctx context.Context, url, name string, opts ...sdk.Option) *sdk.Worker {
	t.Helper()
	w, err := sdk.Connect(ctx, url, append([]sdk.Option{sdk.WithName(name)}, opts...)...)
	if err != nil {
		t.Fatalf("connect worker %s: %v", name, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.Close(cctx)
	})
	return w
}

// HeapGrowth samples the heap in use until the returned function is
// called, and that returns the largest growth over the starting point.
func HeapGrowth() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	// Exits when stop closes done.
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
					peak.Store(ms.HeapInuse - base)
				}
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

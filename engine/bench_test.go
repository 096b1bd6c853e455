package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/sdk"
)

// BenchmarkCall measures a cross-worker call (Go SDK caller -> router ->
// Go SDK worker -> router -> caller) through the engine, served as iii
// start serves it. Its allocs/op include both SDKs; `iii bench` measures
// the engine process alone, and against the minimal relay (--baseline).
func BenchmarkCall(b *testing.B) {
	payload := map[string]string{"p": strings.Repeat("x", 120)} // 128 B as JSON
	for _, inflight := range []int{1, 64} {
		b.Run(fmt.Sprintf("engine/inflight=%d", inflight), func(b *testing.B) {
			benchCall(b, inflight, payload)
		})
	}
}

func benchCall(b *testing.B, inflight int, payload any) {
	eng, err := engine.New(engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	serves := func() bool {
		for _, f := range eng.Snapshot().Functions {
			if f.ID == "bench::echo" {
				return true
			}
		}
		return false
	}
	// Served as iii start serves it (Engine.Serve), with its socket
	// handling, not through httptest.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	url := "ws://" + ln.Addr().String()
	sctx, cancelServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	// Exits when stop cancels sctx (Serve then shuts the engine down).
	go func() { served <- eng.Serve(sctx, ln) }()
	stop := func() {
		cancelServe()
		<-served
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	worker, err := sdk.Connect(ctx, url, sdk.WithName("bench-worker"), sdk.WithTelemetry(false))
	if err != nil {
		b.Fatal(err)
	}
	worker.RegisterFunction("bench::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil })
	caller, err := sdk.Connect(ctx, url, sdk.WithName("bench-caller"), sdk.WithTelemetry(false))
	if err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !serves(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("bench::echo never registered")
		}
	}
	call := func() (time.Duration, error) {
		start := time.Now()
		_, err := caller.Trigger(ctx, sdk.TriggerRequest{FunctionID: "bench::echo", Payload: payload})
		return time.Since(start), err
	}
	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, 1<<16)
		errs      int
	)
	record := func(d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs++
		}
		if len(latencies) < cap(latencies) {
			latencies = append(latencies, d)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	if inflight == 1 {
		for b.Loop() {
			record(call())
		}
	} else {
		b.SetParallelism(max(1, inflight/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				record(call())
			}
		})
	}
	b.StopTimer()
	if errs > 0 {
		b.Errorf("%d of %d calls failed", errs, b.N)
	}
	slices.Sort(latencies)
	if n := len(latencies); n > 0 {
		b.ReportMetric(float64(latencies[n/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(latencies[n*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	caller.Close(ctx)
	worker.Close(ctx)
	stop()
}

// BenchmarkDispatchInProcess is the router's own cost per call: lookup,
// span ids, pending bookkeeping and the outcome, with an in-process
// handler and no sockets.
func BenchmarkDispatchInProcess(b *testing.B) {
	eng, err := engine.New(engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eng.Shutdown(ctx)
	}()
	result := json.RawMessage(`{"ok":true}`)
	eng.RegisterFunction("bench", engine.Function{ID: "bench::noop",
		Handler: func(context.Context, *engine.Call) (json.RawMessage, error) { return result, nil }})
	ctx := context.Background()
	req := engine.Request{FunctionID: "bench::noop", Data: json.RawMessage(`{"p":"xxxxxxxxxxxxxxxx"}`),
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eng.Invoke(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

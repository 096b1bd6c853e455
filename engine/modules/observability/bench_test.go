package observability_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/sdk"
)

// BenchmarkTracingOverhead measures cross-worker calls (Go SDK caller ->
// engine -> Go SDK worker -> engine -> caller) on an engine without the
// observability module ("off") and with it ("on": every call an engine
// span in the store, Prometheus counters and histogram), in the same run:
// the overhead is 1 - on/off in calls/s.
func BenchmarkTracingOverhead(b *testing.B) {
	payload := map[string]string{"p": strings.Repeat("x", 120)}
	for _, inflight := range []int{1, 64} {
		for _, mode := range []string{"off", "on"} {
			b.Run(fmt.Sprintf("tracing=%s/inflight=%d", mode, inflight), func(b *testing.B) {
				benchCalls(b, mode == "on", inflight, payload)
			})
		}
	}
}

func benchCalls(b *testing.B, tracing bool, inflight int, payload any) {
	yaml := "engine: {host: 127.0.0.1, port: 0}\nmodules: []\n"
	if tracing {
		yaml = "engine: {host: 127.0.0.1, port: 0}\nmodules:\n  - class: iii-observability\n    config: {metrics_port: 0}\n"
	}
	cfg, err := config.Parse("config.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := enginetest.StartConfig(b, ctx, cfg)
	worker, err := sdk.Connect(ctx, s.URL(), sdk.WithName("bench-worker"))
	if err != nil {
		b.Fatal(err)
	}
	defer worker.Close(ctx)
	worker.RegisterFunction("bench::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil })
	caller, err := sdk.Connect(ctx, s.URL(), sdk.WithName("bench-caller"))
	if err != nil {
		b.Fatal(err)
	}
	defer caller.Close(ctx)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := caller.Trigger(ctx, sdk.TriggerRequest{FunctionID: "bench::echo", Payload: payload}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("bench::echo never answered")
		}
	}
	var errs int
	call := func() {
		if _, err := caller.Trigger(ctx, sdk.TriggerRequest{FunctionID: "bench::echo", Payload: payload}); err != nil {
			errs++
		}
	}
	b.ResetTimer()
	if inflight == 1 {
		for b.Loop() {
			call()
		}
	} else {
		b.SetParallelism(max(1, inflight/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := caller.Trigger(ctx, sdk.TriggerRequest{FunctionID: "bench::echo", Payload: payload}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	if errs > 0 {
		b.Errorf("%d calls failed", errs)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

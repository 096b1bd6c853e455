package cluster_test

// Cluster benchmarks (BENCHMARKS.md): two engines on a real redis-server,
// Go SDK workers, everything in this process.
//
//	go test -run '^$' -bench Cluster -benchtime 5s ./engine/cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

type benchCluster struct {
	a, b     *enginetest.Server
	callA    *sdk.Worker // caller on engine a
	callA2   *sdk.Worker // second caller on engine a (the one-engine run)
	callB    *sdk.Worker // caller on engine b
	fnA, fnB string      // served by a worker on a, on b
}

func benchWorker(b *testing.B, ctx context.Context, url, name string) *sdk.Worker {
	w, err := sdk.Connect(ctx, url, sdk.WithName(name), sdk.WithTelemetry(false), sdk.WithLogger(slog.New(slog.DiscardHandler)),
		sdk.WithQueueLimit(1<<16))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close(context.Background()) })
	return w
}

func startBenchCluster(b *testing.B, ctx context.Context) *benchCluster {
	rs := storetest.StartServer(b)
	name := fmt.Sprintf("bench%d", time.Now().UnixNano())
	cfg := fmt.Sprintf("engine: {port: 0}\nredis: {url: %q}\ncluster: {name: %s}\n", rs.URL(), name)
	bc := &benchCluster{fnA: "a::echo", fnB: "b::echo"}
	bc.a = enginetest.Start(b, ctx, cfg)
	bc.b = enginetest.Start(b, ctx, cfg)
	echo := func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }
	if err := benchWorker(b, ctx, bc.a.URL(), "srv-a").RegisterFunction(bc.fnA, echo); err != nil {
		b.Fatal(err)
	}
	if err := benchWorker(b, ctx, bc.b.URL(), "srv-b").RegisterFunction(bc.fnB, echo); err != nil {
		b.Fatal(err)
	}
	bc.callA = benchWorker(b, ctx, bc.a.URL(), "call-a")
	bc.callA2 = benchWorker(b, ctx, bc.a.URL(), "call-a2")
	bc.callB = benchWorker(b, ctx, bc.b.URL(), "call-b")
	for ctx.Err() == nil {
		_, e1 := sdk.Call[json.RawMessage](ctx, bc.callA, bc.fnB, 1)
		_, e2 := sdk.Call[json.RawMessage](ctx, bc.callB, bc.fnA, 1)
		if e1 == nil && e2 == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return bc
}

// BenchmarkClusterLatency: one call at a time from a worker on engine a,
// alternating a local call (callee on a) and a cross-engine one (callee on
// b, forwarded), so both see the same machine load.
func BenchmarkClusterLatency(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bc := startBenchCluster(b, ctx)
	payload := map[string]any{"n": 1, "s": "hello"}
	local := make([]time.Duration, 0, b.N)
	cross := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		for _, fn := range []string{bc.fnA, bc.fnB} {
			t := time.Now()
			if _, err := sdk.Call[json.RawMessage](ctx, bc.callA, fn, payload); err != nil {
				b.Fatal(err)
			}
			if fn == bc.fnA {
				local = append(local, time.Since(t))
			} else {
				cross = append(cross, time.Since(t))
			}
		}
	}
	b.StopTimer()
	for _, l := range []struct {
		name string
		lat  []time.Duration
	}{{"local", local}, {"cross", cross}} {
		slices.Sort(l.lat)
		b.ReportMetric(float64(l.lat[len(l.lat)/2].Microseconds()), l.name+"-p50-µs")
		b.ReportMetric(float64(l.lat[len(l.lat)*99/100].Microseconds()), l.name+"-p99-µs")
	}
}

// BenchmarkClusterThroughput: 64 concurrent callers split over two caller
// workers and two serving workers, for 1 s per case, cases alternated for
// -benchtime rounds (run it with -benchtime 5x), medians reported:
//   - one: both callers and both servers (a::echo, a2::echo) on engine a;
//   - local2: a caller and a server on each engine, every call local;
//   - half: the same, half of each caller's calls to the other engine.
func BenchmarkClusterThroughput(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bc := startBenchCluster(b, ctx)
	echo := func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }
	if err := benchWorker(b, ctx, bc.a.URL(), "srv-a2").RegisterFunction("a2::echo", echo); err != nil {
		b.Fatal(err)
	}
	for ctx.Err() == nil {
		if _, err := sdk.Call[json.RawMessage](ctx, bc.callA2, "a2::echo", 1); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	type route struct {
		w   *sdk.Worker
		fns []string // alternated
	}
	cases := []struct {
		name   string
		routes []route
	}{
		{"one", []route{{bc.callA, []string{bc.fnA}}, {bc.callA2, []string{"a2::echo"}}}},
		{"local2", []route{{bc.callA, []string{bc.fnA}}, {bc.callB, []string{bc.fnB}}}},
		{"half", []route{{bc.callA, []string{bc.fnA, bc.fnB}}, {bc.callB, []string{bc.fnB, bc.fnA}}}},
	}
	rates := map[string][]float64{}
	b.ResetTimer()
	for range b.N {
		for _, tc := range cases {
			var n atomic.Int64
			var wg sync.WaitGroup
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			start := time.Now()
			for i := range 64 {
				r := tc.routes[i%len(tc.routes)]
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := i; rctx.Err() == nil; k++ {
						if _, err := sdk.Call[json.RawMessage](ctx, r.w, r.fns[k%len(r.fns)], i); err != nil {
							b.Error(err)
							return
						}
						n.Add(1)
					}
				}()
			}
			wg.Wait()
			rcancel()
			rates[tc.name] = append(rates[tc.name], float64(n.Load())/time.Since(start).Seconds())
		}
	}
	b.StopTimer()
	for _, tc := range cases {
		r := rates[tc.name]
		slices.Sort(r)
		b.ReportMetric(r[len(r)/2], tc.name+"-calls/s")
	}
}

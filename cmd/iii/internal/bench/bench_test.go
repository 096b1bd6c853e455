package bench_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/cmd/iii/internal/bench"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// buildIII builds the iii binary: bench starts the engine and the relay as
// children of it.
func buildIII(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "iii")
	out, err := exec.Command("go", "build", "-o", exe, "github.com/iii-workbench/iii/cmd/iii").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

func TestRunWithBaseline(t *testing.T) {
	exe := buildIII(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{Executable: exe, Workers: 2, Concurrency: 8,
		Duration: 300 * time.Millisecond, Payload: 256, Baseline: true, Rounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*bench.Result{&rep.Engine, rep.Baseline} {
		if r == nil || r.Calls == 0 || r.Errors != 0 || r.P50 <= 0 || r.P99 < r.P50 || r.Max < r.P99 {
			t.Fatalf("result %+v", r)
		}
	}
	if rep.Ratio == nil || *rep.Ratio <= 0 || rep.Rounds != 2 {
		t.Errorf("ratio %v over %d rounds", rep.Ratio, rep.Rounds)
	}
	if rep.Engine.RSSBytes == 0 {
		t.Error("engine RSS not measured")
	}
	if runtime.GOOS == "linux" {
		for _, r := range []*bench.Result{&rep.Engine, rep.Baseline} {
			if r.CPUPerCall <= 0 || r.AllocsPerCall <= 0 || r.AllocBytesPerCall < r.AllocsPerCall {
				t.Errorf("%s: CPU per call %.1fµs, %.1f allocs (%.0f B) per call; want all measured",
					r.Target, r.CPUPerCall, r.AllocsPerCall, r.AllocBytesPerCall)
			}
		}
	}
}

func TestRunChecksOptions(t *testing.T) {
	ctx := context.Background()
	for _, o := range []bench.Options{
		{Function: "x::y"}, // needs --address
		{Function: "x::y", Address: "ws://x", Baseline: true}, // baseline is echo only
		{Payload: -1},
	} {
		if _, err := bench.Run(ctx, o); err == nil {
			t.Errorf("Run(%+v) accepted bad options", o)
		}
	}
}

func TestConns(t *testing.T) {
	exe := buildIII(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench.Conns(ctx, bench.ConnsOptions{N: 200, CallFor: 300 * time.Millisecond, Executable: exe})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Held != 200 || rep.DialErrors != 0 || rep.RSSAfter <= rep.RSSBefore || rep.Call.Calls == 0 || rep.Call.Errors != 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestHTTPWithBaseline(t *testing.T) {
	exe := buildIII(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench.HTTP(ctx, bench.HTTPOptions{Executable: exe, Duration: 500 * time.Millisecond,
		Connections: 4, Baseline: true, Loader: "go"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*bench.HTTPResult{&rep.Engine, rep.Baseline} {
		if r == nil || r.Requests == 0 || r.Errors != 0 || r.P50 <= 0 {
			t.Fatalf("result %+v", r)
		}
	}
	if rep.Ratio == nil {
		t.Error("no ratio")
	}
}

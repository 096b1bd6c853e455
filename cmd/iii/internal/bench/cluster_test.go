package bench_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/iii-workbench/iii/cmd/iii/internal/bench"
)

// TestCluster runs `iii bench cluster` briefly: both engines serve, the
// cross-engine calls cross without error, every case is measured. It
// checks the harness, not the figures.
func TestCluster(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	exe := buildIII(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := bench.Cluster(ctx, bench.ClusterOptions{Executable: exe, Concurrency: 8, Duration: 300 * time.Millisecond,
		Latency: 300 * time.Millisecond, Rounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []bench.Result{rep.LocalCall, rep.CrossCall} {
		if r.Calls == 0 || r.Errors != 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Errorf("%s: %+v; want calls, no errors, p99 >= p50 > 0", r.Target, r)
		}
	}
	want := []string{bench.CaseOneEngine, bench.CaseTwoLocal, bench.CaseTwoHalfCross}
	if len(rep.Cases) != len(want) {
		t.Fatalf("%d cases, want %d", len(rep.Cases), len(want))
	}
	for i, c := range rep.Cases {
		if c.Target != want[i] || c.Calls == 0 || c.Errors != 0 || c.CallsPerSec <= 0 || len(c.Rounds) != 1 {
			t.Errorf("case %d: %+v; want %q with calls and no errors", i, c, want[i])
		}
		if i > 0 && (c.EngineCPU[0] <= 0 || c.EngineCPU[1] <= 0) {
			t.Errorf("%s: engine CPU %v; both engines should have worked", c.Target, c.EngineCPU)
		}
	}
	if rep.LoadBefore == [3]float64{} {
		t.Error("no load average recorded")
	}
}

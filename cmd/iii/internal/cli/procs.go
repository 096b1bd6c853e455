package cli

import (
	"log/slog"
	"runtime"
)

// engineProcs sets how many OS threads run the engine's Go code at once
// (GOMAXPROCS) when the environment does not: half the CPUs the process
// may use, at least one. A router is I/O-bound and shares its host with
// the workers it serves; with a processor per CPU, each frame that wakes a
// goroutine also wakes and parks an idle processor, which under the
// benchmarks' load was most of the difference in CPU per call against the
// Rust engine (see BENCHMARKS.md). GOMAXPROCS in the environment wins.
func engineProcs(env Env, log *slog.Logger) {
	if v, ok := env.Getenv("GOMAXPROCS"); ok && v != "" {
		return
	}
	runtime.SetDefaultGOMAXPROCS() // the CPUs (or cgroup quota) available, so a second call does not halve again
	n := max(1, runtime.GOMAXPROCS(0)/2)
	runtime.GOMAXPROCS(n)
	log.Debug("engine processors", "gomaxprocs", n, "cpus", runtime.NumCPU())
}

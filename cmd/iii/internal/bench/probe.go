package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime/metrics"
	"strings"
)

// EnvProbe, set to 1 in the environment of a child the bench starts (the
// engine, the relay), makes it answer probes: on SIGUSR1 it prints one
// line, ProbePrefix and then its heap allocation counters as JSON, so the
// bench can report allocations per call of the serving process alone.
const EnvProbe = "III_BENCH_PROBE"

// ProbePrefix starts a child's answer to a probe.
const ProbePrefix = "bench probe "

// allocCounts are a Go process's cumulative heap allocations.
type allocCounts struct {
	Objects uint64 `json:"objects"`
	Bytes   uint64 `json:"bytes"`
}

// readAllocs reads this process's allocation counters (without stopping
// the world, unlike runtime.ReadMemStats).
func readAllocs() allocCounts {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	var a allocCounts
	if s[0].Value.Kind() == metrics.KindUint64 {
		a.Objects = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		a.Bytes = s[1].Value.Uint64()
	}
	return a
}

func writeProbe(w io.Writer) {
	b, _ := json.Marshal(readAllocs())
	fmt.Fprintf(w, "%s%s\n", ProbePrefix, b)
}

// probeAnswer parses a child's output line as a probe answer.
func probeAnswer(line string) (allocCounts, bool) {
	rest, ok := strings.CutPrefix(line, ProbePrefix)
	if !ok {
		return allocCounts{}, false
	}
	var a allocCounts
	return a, json.Unmarshal([]byte(rest), &a) == nil
}

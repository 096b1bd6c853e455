package observability

import (
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"testing"
	"time"
)

func TestRing(t *testing.T) {
	r := newRing[int](3)
	var evicted []int
	r.onEvict = func(v int) { evicted = append(evicted, v) }
	for i := 1; i <= 5; i++ {
		r.add(i)
	}
	var got []int
	r.newest(func(v int) bool { got = append(got, v); return true })
	if want := []int{5, 4, 3}; !equal(got, want) || !equal(evicted, []int{1, 2}) {
		t.Errorf("newest %v evicted %v; want %v and [1 2]", got, evicted, want)
	}
	got = got[:0]
	r.newest(func(v int) bool { got = append(got, v); return len(got) < 2 })
	if !equal(got, []int{5, 4}) {
		t.Errorf("stopping early: %v", got)
	}
	if n := r.clear(); n != 3 || r.len() != 0 || !equal(evicted, []int{1, 2, 5, 4, 3}) {
		t.Errorf("clear: %d, len %d, evicted %v", n, r.len(), evicted)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRateWindow(t *testing.T) {
	var w rateWindow
	now := time.Unix(1000, 0)
	for i := range maxFiringsPerSecond {
		if !w.allow(now) {
			t.Fatalf("delivery %d refused", i)
		}
	}
	if w.allow(now.Add(500 * time.Millisecond)) {
		t.Error("delivery over the limit allowed")
	}
	if !w.allow(now.Add(time.Second)) {
		t.Error("next second refused")
	}
}

func TestSampled(t *testing.T) {
	kept := 0
	for i := range 1000 {
		id := "0000000000000000" + hexN(uint64(i)*0x9e3779b97f4a7c15)
		if sampled(id, 0.25) {
			kept++
		}
		// The same decision as OpenTelemetry's ratio sampler, so a trace
		// an SDK keeps at this ratio is kept here too.
		tid, _ := trace.TraceIDFromHex(id)
		otel := sdktrace.TraceIDRatioBased(0.25).ShouldSample(sdktrace.SamplingParameters{TraceID: tid})
		if want := otel.Decision == sdktrace.RecordAndSample; sampled(id, 0.25) != want {
			t.Fatalf("sampled(%s, 0.25) = %v, OpenTelemetry's TraceIDRatioBased says %v", id, !want, want)
		}
	}
	if kept < 150 || kept > 350 {
		t.Errorf("ratio 0.25 kept %d of 1000", kept)
	}
	if !sampled("x", 1) || sampled("x", 0) {
		t.Error("ratios 1 and 0")
	}
}

func hexN(v uint64) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b)
}

func TestLevels(t *testing.T) {
	tests := []struct {
		n     int32
		level string
		text  string
	}{
		{1, "trace", "TRACE"}, {4, "trace", "TRACE"}, {5, "debug", "DEBUG"}, {9, "info", "INFO"},
		{13, "warn", "WARN"}, {17, "error", "ERROR"}, {21, "error", "FATAL"}, {0, "", ""},
	}
	for _, tt := range tests {
		if got := levelOf(tt.n); got != tt.level {
			t.Errorf("levelOf(%d) = %q, want %q", tt.n, got, tt.level)
		}
		if got := severityText(tt.n); got != tt.text {
			t.Errorf("severityText(%d) = %q, want %q", tt.n, got, tt.text)
		}
	}
}

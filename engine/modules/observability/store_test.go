package observability_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/modules/observability"
)

func TestSpanStoreIsBounded(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "memory_max_spans: 5\nlogs_max_count: 3", nil)
	eng := s.Engine()
	for i := range 8 {
		// Unknown functions still make (failed) spans: a worker asked for them.
		eng.Invoke(ctx, engine.Request{FunctionID: fmt.Sprintf("gone::%d", i), Trigger: "http"})
		call(t, ctx, eng, engine.Request{FunctionID: "engine::log::info", Data: data(map[string]string{"message": fmt.Sprint(i)})}, nil)
	}
	var l spanList
	waitFor(t, ctx, "the last span", func() (bool, string) {
		l = spans(t, ctx, eng, nil)
		return len(l.Spans) > 0 && l.Spans[0].Name == "gone::7", fmt.Sprint(len(l.Spans))
	})
	var names []string
	for _, sp := range l.Spans {
		names = append(names, sp.Name)
		if sp.Status != "error" || sp.Attributes["error.type"] != engine.CodeFunctionNotFound {
			t.Errorf("span %s: status %s error.type %v", sp.Name, sp.Status, sp.Attributes["error.type"])
		}
	}
	if got, want := strings.Join(names, ","), "gone::7,gone::6,gone::5,gone::4,gone::3"; got != want {
		t.Errorf("spans %s, want the 5 newest %s", got, want)
	}
	if got := logs(t, ctx, eng, nil); got.Total != 3 || got.Logs[0].Body != "7" {
		t.Errorf("logs: %d, newest %q; want 3, newest 7", got.Total, got.Logs[0].Body)
	}
	filters := []struct {
		filter map[string]any
		want   int
	}{
		{map[string]any{"function_id": "gone::4"}, 1},
		{map[string]any{"status": "error"}, 5},
		{map[string]any{"status": "ok"}, 0},
		{map[string]any{"name": "GONE"}, 5},
		{map[string]any{"service_name": "iii"}, 5},
		{map[string]any{"source": "worker"}, 0},
		{map[string]any{"until": time.Now().Add(-time.Hour).UnixMilli()}, 0},
		{map[string]any{"since": time.Now().Add(-time.Hour).UnixMilli()}, 5},
		{map[string]any{"trace_id": l.Spans[2].TraceID}, 1},
	}
	for _, f := range filters {
		if got := spans(t, ctx, eng, f.filter).Total; got != f.want {
			t.Errorf("traces::list %v: %d spans, want %d", f.filter, got, f.want)
		}
	}
	if got := spans(t, ctx, eng, map[string]any{"limit": 2, "offset": 1}); len(got.Spans) != 2 || got.Spans[0].Name != "gone::6" {
		t.Errorf("limit 2 offset 1: %v", got.Spans)
	}
	call(t, ctx, eng, engine.Request{FunctionID: "engine::traces::clear"}, nil)
	if got := spans(t, ctx, eng, nil).Total; got != 0 {
		t.Errorf("after clear: %d spans", got)
	}
}

// TestWhatIsTraced: the module's own functions never become spans, nor do
// in-process calls that start a trace of their own (polls); calls of
// worker functions always do.
func TestWhatIsTraced(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	const tp = "00-abababababababababababababababab-abababababababab-01"
	calls := []engine.Request{
		{FunctionID: "engine::traces::list", Traceparent: tp},
		{FunctionID: "engine::logs::list"},
		{FunctionID: "engine::log::info", Data: data(map[string]string{"message": "x"}), Traceparent: tp},
		{FunctionID: "engine::workers::list"},                    // a poll: not traced
		{FunctionID: "engine::functions::list", Traceparent: tp}, // inside a trace
		{FunctionID: "engine::triggers::list", Trigger: "cron"},  // fired by a trigger
	}
	for _, c := range calls {
		call(t, ctx, eng, c, nil)
	}
	call(t, ctx, eng, engine.Request{FunctionID: "engine::registered-triggers::list", Trigger: "http"}, nil) // sentinel
	var l spanList
	waitFor(t, ctx, "the sentinel span", func() (bool, string) {
		l = spans(t, ctx, eng, nil)
		return len(l.Spans) > 0 && l.Spans[0].Name == "engine::registered-triggers::list", fmt.Sprint(len(l.Spans))
	})
	var names []string
	for _, sp := range l.Spans {
		names = append(names, sp.Name)
	}
	if got, want := strings.Join(names, ","), "engine::registered-triggers::list,engine::triggers::list,engine::functions::list"; got != want {
		t.Errorf("traced: %s; want %s", got, want)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name, cfg string
		want      error // nil = starts
	}{
		{"defaults", "metrics_enabled: false", nil},
		{"every key", "enabled: true\nservice_name: x\nservice_version: '1'\nservice_namespace: ns\nexporter: memory\n" +
			"endpoint: http://127.0.0.1:1\nsampling_ratio: 0.5\nmemory_max_spans: 10\nlogs_enabled: true\nlogs_max_count: 10\n" +
			"logs_batch_size: 5\nlogs_flush_interval_ms: 100\nmetrics_enabled: true\nmetrics_host: 127.0.0.1\nmetrics_port: 0\n" +
			"metrics_max_count: 10", nil},
		{"unknown key", "metrics_enabled: false\nexporters: otlp", config.ErrConfigUnknownKey},
		{"bad exporter", "metrics_enabled: false\nexporter: zipkin", errConfig},
		{"bad endpoint", "metrics_enabled: false\nendpoint: localhost:4318", errConfig},
		{"bad ratio", "metrics_enabled: false\nsampling_ratio: 2", errConfig},
		{"no spans", "metrics_enabled: false\nmemory_max_spans: 0", errConfig},
		{"bad port", "metrics_port: 70000", errConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tryStart(t, tt.cfg)
			switch {
			case tt.want == nil && err != nil:
				t.Errorf("config %q: %v", tt.cfg, err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Errorf("config %q: %v, want %v", tt.cfg, err, tt.want)
			}
		})
	}
}

var errConfig = observability.ErrConfig

// tryStart starts and stops a server with the module's config block.
func tryStart(t *testing.T, cfg string) error {
	t.Helper()
	var b strings.Builder
	b.WriteString("engine: {port: 0}\nmodules:\n  - class: OtelModule\n    config:\n")
	for _, line := range strings.Split(cfg, "\n") {
		b.WriteString("      " + line + "\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return enginetest.TryStart(ctx, b.String())
}

func TestMetricsPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	err = tryStart(t, fmt.Sprintf("metrics_port: %d", port))
	if err == nil || !strings.Contains(err.Error(), "metrics_port") {
		t.Errorf("metrics_port %d taken: %v; want an error naming metrics_port", port, err)
	}
}

// TestDefaultMetricsPortTaken: without metrics_port in config.yaml, a
// taken 9464 turns Prometheus off instead of failing startup.
func TestDefaultMetricsPortTaken(t *testing.T) {
	if ln, err := net.Listen("tcp", "127.0.0.1:9464"); err == nil {
		defer ln.Close()
	} // else someone else holds it: the same case
	s := startServer(t, "metrics_host: 127.0.0.1 #default-port", nil)
	if addr := s.mod.MetricsAddr(); addr != "" {
		t.Errorf("metrics on %s although 9464 is taken", addr)
	}
}

func TestSampling(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "sampling_ratio: 0", nil)
	eng := s.Engine()
	eng.Invoke(ctx, engine.Request{FunctionID: "nope::x", Trigger: "http"})
	eng.Invoke(ctx, engine.Request{FunctionID: "nope::y", Trigger: "http"})
	waitFor(t, ctx, "two calls sampled out", func() (bool, string) {
		c := engineCounters(t, ctx, eng)
		return c["spans_sampled_out"] == 2, fmt.Sprint(c)
	})
	if got := spans(t, ctx, eng, nil).Total; got != 0 {
		t.Errorf("%d spans stored with sampling_ratio 0", got)
	}
}

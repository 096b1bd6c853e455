package observability_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/modules/observability"
	_ "github.com/iii-workbench/iii/engine/modules/queue"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

// families scrapes and parses the exposition.
func families(t *testing.T, ctx context.Context, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(scrape(t, ctx, addr)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample finds the metric of a family whose labels include want; ok false
// when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	f := fams[name]
	if f == nil {
		return nil, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// value is a counter's or gauge's value (-1 when absent).
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m, ok := sample(fams, name, labels)
	if !ok {
		return -1
	}
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return -1
}

func TestPrometheusCountsCompletedCalls(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	if s.mod.MetricsAddr() == "" {
		t.Fatal("no metrics address")
	}
	w := enginetest.Connect(t, ctx, s.URL(), "metrics-worker")
	w.RegisterFunction("m::ok", func(context.Context, json.RawMessage) (any, error) { return "fine", nil })
	w.RegisterFunction("m::fail", func(context.Context, json.RawMessage) (any, error) {
		return nil, sdk.Errorf("boom_code", "it broke")
	})
	waitFunctions(t, ctx, eng, "m::ok", "m::fail")

	const okCalls, failCalls = 7, 3
	for range okCalls {
		call(t, ctx, eng, engine.Request{FunctionID: "m::ok"}, nil)
	}
	for range failCalls {
		if _, err := eng.Invoke(ctx, engine.Request{FunctionID: "m::fail"}); err == nil {
			t.Fatal("m::fail succeeded")
		}
	}
	// An HTTP module reports its requests as events.
	eng.Events().Publish(event.HTTPRequestServed{Route: "/orders/:id", Method: "GET", Status: 200})
	eng.Events().Publish(event.HTTPRequestServed{Route: "/orders/:id", Method: "GET", Status: 404})

	var fams map[string]*dto.MetricFamily
	waitFor(t, ctx, "the calls counted", func() (bool, string) {
		fams = families(t, ctx, s.mod.MetricsAddr())
		got := value(fams, "iii_invocations_total", map[string]string{"function_id": "m::fail", "status": "error"})
		return got == failCalls && value(fams, "iii_http_requests_total", map[string]string{"status": "404"}) == 1,
			fmt.Sprint("m::fail errors ", got)
	})
	counters := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"iii_invocations_total", map[string]string{"function_id": "m::ok", "status": "ok"}, okCalls},
		{"iii_invocations_total", map[string]string{"function_id": "m::fail", "status": "error"}, failCalls},
		{"iii_invocation_errors_total", map[string]string{"function_id": "m::fail", "error_code": "boom_code"}, failCalls},
		{"iii_workers_active", nil, 1},
		{"iii_workers_spawns_total", nil, 1},
		{"iii_workers_deaths_total", nil, 0},
		{"iii_http_requests_total", map[string]string{"route": "/orders/:id", "method": "GET", "status": "200"}, 1},
		{"iii_events_dropped_total", nil, 0},
	}
	for _, c := range counters {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := sample(fams, "iii_invocations_total", map[string]string{"function_id": "m::ok", "status": "error"}); ok {
		t.Error("m::ok has an error series; want none")
	}
	for fn, want := range map[string]uint64{"m::ok": okCalls, "m::fail": failCalls} {
		m, ok := sample(fams, "iii_invocation_duration_seconds", map[string]string{"function_id": fn})
		if !ok || m.GetHistogram().GetSampleCount() != want {
			t.Errorf("iii_invocation_duration_seconds_count{function_id=%q} = %d, want %d", fn, m.GetHistogram().GetSampleCount(), want)
		}
	}
	if got := value(fams, "iii_functions_registered", nil); got < 2 {
		t.Errorf("iii_functions_registered = %v, want at least m::ok and m::fail", got)
	}
	if got := value(fams, "iii_functions_registered_total", nil); got < 2 {
		t.Errorf("iii_functions_registered_total = %v, want at least 2", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("runtime metric %s missing", name)
		}
	}
}

func TestPrometheusFunctionLabelCap(t *testing.T) {
	const limit = 3
	old := observability.SetFunctionLabelLimit(limit)
	defer observability.SetFunctionLabelLimit(old)
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	const calls = 10
	for i := range calls {
		// Unknown functions: each call completes at once with function_not_found.
		eng.Invoke(ctx, engine.Request{FunctionID: fmt.Sprintf("card::%d", i)})
	}
	var fams map[string]*dto.MetricFamily
	var labels []string
	// A call's invocation and its error are two counters, added one after
	// the other: wait for both.
	waitFor(t, ctx, "every call counted", func() (bool, string) {
		fams = families(t, ctx, s.mod.MetricsAddr())
		total, errs := 0.0, 0.0
		labels = labels[:0]
		for _, m := range fams["iii_invocations_total"].GetMetric() {
			total += m.GetCounter().GetValue()
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "function_id" {
					labels = append(labels, lp.GetValue())
				}
			}
		}
		for _, m := range fams["iii_invocation_errors_total"].GetMetric() {
			errs += m.GetCounter().GetValue()
		}
		return total == calls && errs == calls, fmt.Sprint(total, " counted, ", errs, " errors")
	})
	sort.Strings(labels)
	if len(labels) != limit+1 || labels[len(labels)-1] != observability.OtherLabel {
		t.Errorf("function_id labels %v; want %d ids plus %q", labels, limit, observability.OtherLabel)
	}
	if got := value(fams, "iii_invocations_total", map[string]string{"function_id": "other", "status": "error"}); got != calls-limit {
		t.Errorf("other = %v, want %d", got, calls-limit)
	}
	if got := value(fams, "iii_invocation_errors_total", map[string]string{"function_id": "other", "error_code": "function_not_found"}); got != calls-limit {
		t.Errorf("errors of other = %v, want %d", got, calls-limit)
	}
}

func TestMetricsDisabled(t *testing.T) {
	s := startServer(t, "metrics_enabled: false", nil)
	if addr := s.mod.MetricsAddr(); addr != "" {
		t.Errorf("metrics address %q with metrics_enabled: false", addr)
	}
}

func TestPrometheusQueueGauges(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServerWith(t, "  - class: QueueModule\n", "", nil)
	eng := s.Engine()
	w := enginetest.Connect(t, ctx, s.URL(), "queue-worker")
	release := make(chan struct{})
	w.RegisterFunction("q::hold", func(ctx context.Context, _ json.RawMessage) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	defer close(release)
	waitFunctions(t, ctx, eng, "q::hold")
	if _, err := eng.Invoke(ctx, engine.Request{FunctionID: "q::hold", Data: data(map[string]int{"n": 1}),
		Action: &protocol.Action{Type: protocol.ActionEnqueue, Queue: "default"}}); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	waitFor(t, ctx, "queue gauges", func() (bool, string) {
		fams := families(t, ctx, s.mod.MetricsAddr())
		depth := value(fams, "iii_queue_depth", map[string]string{"queue": "default"})
		dlq := value(fams, "iii_queue_dlq_size", map[string]string{"queue": "default"})
		return depth == 1 && dlq == 0, fmt.Sprint("depth ", depth, " dlq ", dlq)
	})
	// Scrapes call the queue module; those calls are neither counted nor traced.
	fams := families(t, ctx, s.mod.MetricsAddr())
	if _, ok := sample(fams, "iii_invocations_total", map[string]string{"function_id": "engine::queue::topic_stats"}); ok {
		t.Error("scrape-time queue stats calls are counted as invocations")
	}
	if got := spans(t, ctx, eng, map[string]any{"function_id": "engine::queue::topic_stats"}).Total; got != 0 {
		t.Errorf("%d spans of scrape-time queue stats calls", got)
	}
}

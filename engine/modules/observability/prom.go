package observability

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/event"
)

// OtherLabel replaces label values past a label's cardinality cap.
const OtherLabel = "other"

// labelCap admits the first max distinct values of a label and folds the
// rest into OtherLabel, so user-chosen ids cannot grow the series count
// without bound.
type labelCap struct {
	mu   sync.Mutex
	max  int
	seen map[string]struct{}
}

func newLabelCap(max int) *labelCap {
	return &labelCap{max: max, seen: make(map[string]struct{})}
}

func (c *labelCap) value(v string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if len(c.seen) >= c.max {
		return OtherLabel
	}
	c.seen[v] = struct{}{}
	return v
}

// durationBuckets suit calls from sub-millisecond in-process functions to
// slow workers (seconds).
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// promMetrics is the module's Prometheus registry and instruments.
type promMetrics struct {
	reg *prometheus.Registry

	invocations   *prometheus.CounterVec   // function_id, status
	duration      *prometheus.HistogramVec // function_id
	errors        *prometheus.CounterVec   // function_id, error_code
	spawns        prometheus.Counter
	deaths        prometheus.Counter
	registrations prometheus.Counter
	httpRequests  *prometheus.CounterVec   // route, method, status
	httpDuration  *prometheus.HistogramVec // route, method
	frames        *prometheus.CounterVec   // kind, result

	fnLabels, codeLabels, routeLabels *labelCap
	byFunction                        map[string]*fnSeries // by function label; event loop only

	totalsMu sync.Mutex
	byStatus map[string]uint64
}

// functionLabelLimit is how many distinct function_id label values the
// metrics keep before folding new ones into "other".
var functionLabelLimit = DefaultFunctionLabels

func newPromMetrics(m *Module) *promMetrics {
	p := &promMetrics{
		reg: prometheus.NewRegistry(),
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iii_invocations_total",
			Help: "Invocations the engine routed, counted when they complete, by function and status (ok, error, timeout)."},
			[]string{"function_id", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "iii_invocation_duration_seconds",
			Help: "Duration of completed invocations, from dispatch to result.", Buckets: durationBuckets},
			[]string{"function_id"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iii_invocation_errors_total",
			Help: "Invocations that failed, by function and error code."}, []string{"function_id", "error_code"}),
		spawns: prometheus.NewCounter(prometheus.CounterOpts{Name: "iii_workers_spawns_total",
			Help: "Worker connections accepted."}),
		deaths: prometheus.NewCounter(prometheus.CounterOpts{Name: "iii_workers_deaths_total",
			Help: "Worker connections closed."}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "iii_functions_registered_total",
			Help: "Function registrations (by workers and in-process modules)."}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iii_http_requests_total",
			Help: "HTTP trigger requests served, by route, method and status code."}, []string{"route", "method", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "iii_http_request_duration_seconds",
			Help: "HTTP trigger request duration.", Buckets: durationBuckets}, []string{"route", "method"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "iii_telemetry_frames_total",
			Help: "Worker telemetry frames by kind (OTLP, MTRC, LOGS) and result (ok, malformed, too_large, dropped)."},
			[]string{"kind", "result"}),
		fnLabels:    newLabelCap(functionLabelLimit),
		codeLabels:  newLabelCap(errorCodeLabels),
		routeLabels: newLabelCap(routeLabels),
		byStatus:    map[string]uint64{},
		byFunction:  map[string]*fnSeries{},
	}
	eng := m.h.Engine
	p.reg.MustRegister(p.invocations, p.duration, p.errors, p.spawns, p.deaths, p.registrations,
		p.httpRequests, p.httpDuration, p.frames,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iii_workers_active", Help: "Connected workers."},
			func() float64 { return float64(eng.Stats().Workers) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iii_functions_registered", Help: "Function ids currently registered."},
			func() float64 { return float64(eng.Stats().Functions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iii_slow_consumers_total", Help: "Workers closed because they stopped reading."},
			func() float64 { return float64(eng.Stats().SlowConsumers) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iii_engine_telemetry_dropped_total", Help: "Telemetry frames the engine dropped (no sink or no valid prefix)."},
			func() float64 { return float64(eng.Stats().TelemetryDropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iii_events_dropped_total", Help: "Engine events the observability module missed because its buffer was full."},
			func() float64 {
				if m.sub == nil {
					return 0
				}
				return float64(m.sub.Dropped())
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iii_spans_stored", Help: "Spans in the in-memory store."},
			func() float64 { return float64(m.spans.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iii_logs_stored", Help: "Log records in the in-memory store."},
			func() float64 { return float64(m.logs.len()) }),
		&queueCollector{eng: eng},
		&dropCollector{eng: eng},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return p
}

// dropCollector exports the engine's drop counters by reason.
type dropCollector struct{ eng *engine.Engine }

var dropDesc = prometheus.NewDesc("iii_engine_dropped_total",
	"Frames and calls the engine dropped, by reason (undecodable_frame, late_result, caller_gone, connection_closed, telemetry).",
	[]string{"reason"}, nil)

func (d *dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dropDesc }

func (d *dropCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range d.eng.Dropped() {
		ch <- prometheus.MustNewConstMetric(dropDesc, prometheus.CounterValue, float64(n), reason)
	}
}

func (p *promMetrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return mux
}

// fnSeries are one function_id's series, looked up once.
type fnSeries struct {
	byStatus map[string]prometheus.Counter
	duration prometheus.Observer
}

// series returns a function label's series; only the event loop calls it.
func (p *promMetrics) series(fn string) *fnSeries {
	s := p.byFunction[fn]
	if s == nil {
		s = &fnSeries{byStatus: map[string]prometheus.Counter{}, duration: p.duration.WithLabelValues(fn)}
		p.byFunction[fn] = s
	}
	return s
}

// invocation counts a completed call.
func (p *promMetrics) invocation(e event.InvocationFinished) {
	fn := p.fnLabels.value(e.FunctionID)
	s := p.series(fn)
	c := s.byStatus[e.Status]
	if c == nil {
		c = p.invocations.WithLabelValues(fn, e.Status)
		s.byStatus[e.Status] = c
	}
	c.Inc()
	s.duration.Observe(e.Duration.Seconds())
	if e.Status != event.StatusOK {
		p.errors.WithLabelValues(fn, p.codeLabels.value(e.ErrorCode)).Inc()
	}
	p.totalsMu.Lock()
	p.byStatus[e.Status]++
	p.totalsMu.Unlock()
}

// totals are the invocation counts by status.
func (p *promMetrics) totals() map[string]uint64 {
	p.totalsMu.Lock()
	defer p.totalsMu.Unlock()
	out := make(map[string]uint64, len(p.byStatus))
	for k, v := range p.byStatus {
		out[k] = v
	}
	return out
}

func (p *promMetrics) httpRequest(e event.HTTPRequestServed) {
	route := p.routeLabels.value(e.Route)
	p.httpRequests.WithLabelValues(route, e.Method, strconv.Itoa(e.Status)).Inc()
	p.httpDuration.WithLabelValues(route, e.Method).Observe(e.Duration.Seconds())
}

// Queue metrics are read from the queue module at scrape time.
const (
	queueStatsFunction = "engine::queue::topic_stats"
	queueScrapeTimeout = 2 * time.Second
	queueScrapeMax     = 200 // queues reported per scrape
)

var (
	queueDepthDesc = prometheus.NewDesc("iii_queue_depth", "Messages in a queue: waiting plus in flight.", []string{"queue"}, nil)
	queueDLQDesc   = prometheus.NewDesc("iii_queue_dlq_size", "Messages in a queue's dead-letter queue.", []string{"queue"}, nil)
)

// queueCollector asks the queue module, when one runs, for every queue's
// depth and dead-letter count: engine::queue::topic_stats {} ->
// {"queues": [{queue, depth, dlq_depth, ...}]}.
type queueCollector struct{ eng *engine.Engine }

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- queueDLQDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), queueScrapeTimeout)
	defer cancel()
	raw, err := c.eng.Invoke(ctx, engine.Request{FunctionID: queueStatsFunction, Data: json.RawMessage(`{}`),
		Trigger: triggerKindInternal})
	if err != nil {
		return // no queue module, or it did not answer in time
	}
	var out struct {
		Queues []struct {
			Queue    string  `json:"queue"`
			Depth    float64 `json:"depth"`
			DLQDepth float64 `json:"dlq_depth"`
		} `json:"queues"`
	}
	if json.Unmarshal(raw, &out) != nil {
		return
	}
	for i, q := range out.Queues {
		if i == queueScrapeMax {
			break
		}
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, q.Depth, q.Queue)
		ch <- prometheus.MustNewConstMetric(queueDLQDesc, prometheus.GaugeValue, q.DLQDepth, q.Queue)
	}
}

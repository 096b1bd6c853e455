// Package observability is the engine's observability module (OtelModule,
// worker "iii-observability"): it records every call the engine routes as
// a span, decodes the OTLP/JSON telemetry frames workers send (spans,
// logs, metrics) into bounded in-memory stores, serves the queries the
// console and TUI read (engine::traces::*, engine::logs::*,
// engine::metrics::list), the engine::log::* functions and the log and
// trace trigger types, exports spans and logs over OTLP (HTTP or gRPC) when asked,
// and serves Prometheus metrics on 127.0.0.1:9464/metrics.
//
// config.yaml (strict: an unknown key fails startup):
//
//	modules:
//	  - class: iii-observability
//	    config:
//	      enabled: true            # record spans (engine and worker)
//	      service_name: iii        # service.name of the engine's spans ($OTEL_SERVICE_NAME)
//	      service_version: ""      # resource attributes of exported engine spans and logs
//	      service_namespace: ""
//	      exporter: memory         # memory | otlp (export only) | both; unset = both when an OTLP endpoint is in the environment
//	      endpoint: ""             # OTLP base URL; default $OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318
//	      sampling_ratio: 1.0      # share of engine traces kept (by trace id)
//	      memory_max_spans: 10000
//	      logs_enabled: true
//	      logs_max_count: 10000
//	      logs_batch_size: 100     # export batch size of logs (spans: 512)
//	      logs_flush_interval_ms: 5000 # export interval of spans and logs
//	      metrics_enabled: true    # Prometheus /metrics
//	      metrics_host: 127.0.0.1
//	      metrics_port: 9464       # 0 = any free port; unset and taken = Prometheus off, with a warning
//	      metrics_max_count: 10000 # worker metric points kept
//
// Export is OTLP/HTTP protobuf (<endpoint>/v1/traces and /v1/logs, or
// OTEL_EXPORTER_OTLP_{TRACES,LOGS}_ENDPOINT as given), or OTLP/gRPC with
// OTEL_EXPORTER_OTLP_PROTOCOL=grpc or an endpoint on port 4317;
// OTEL_EXPORTER_OTLP_HEADERS are sent with every export.
//
// Queries (in-process functions of worker iii-observability; times in
// Unix milliseconds, lists newest first, limit 100 by default):
//
//	engine::traces::list  {trace_id?, function_id?, service_name?, worker?, name?, status?, source?, since?, until?, limit?, offset?}
//	                      -> {spans: [Span], total}
//	engine::traces::tree  {trace_id} -> {trace_id, span_count, start_time_unix_nano, end_time_unix_nano, duration_ms,
//	                      roots: [Span + children: [...]]} (spans whose parent is not stored are roots)
//	engine::traces::clear {} -> {success, cleared}
//	engine::logs::list    {worker?, level?, severity_min?, trace_id?, span_id?, service_name?, source?, search?, since?, until?, limit?, offset?}
//	                      -> {logs: [LogRecord], total}
//	engine::logs::clear   {} -> {success, cleared}
//	engine::metrics::list {metric_name?, worker?, service_name?, since?, until?, limit?} -> {engine: {counters}, metrics: [MetricPoint]}
//	engine::log::info|warn|error|debug|trace {message, data?, trace_id?, span_id?, service_name?} -> no result
//	engine::baggage::get {key} | get_all {} | set {key, value}
//
// Engine spans are named after the function, kind SERVER, status ok, error
// or timeout, with attributes function_id, iii.invocation.id, iii.trigger,
// iii.caller.worker(_id), iii.worker(_id), error.type, error.message.
// Worker spans keep their OTLP name, kind, status (ok, error, unset) and
// attributes. The module's own functions are never traced, nor are calls
// of in-process functions that start a trace of their own (polls).
package observability

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/module"
)

// WorkerName is the in-process worker serving the module's functions.
const WorkerName = "iii-observability"

// Exporter settings.
const (
	ExporterMemory = "memory"
	ExporterOTLP   = "otlp"
	ExporterBoth   = "both"
)

// Defaults.
const (
	DefaultServiceName    = "iii"
	DefaultMaxSpans       = 10000
	DefaultMaxLogs        = 10000
	DefaultMaxMetrics     = 10000
	DefaultMetricsHost    = "127.0.0.1"
	DefaultMetricsPort    = 9464
	DefaultOTLPEndpoint   = "http://localhost:4318"
	DefaultBatchSize      = 512
	DefaultFlushInterval  = 5 * time.Second
	DefaultMaxFrameBytes  = 4 << 20
	DefaultEventBuffer    = 65536
	DefaultFunctionLabels = 500
)

// Limits that are not configurable.
const (
	telemetryQueueFrames = 1024     // frames waiting to be decoded
	telemetryQueueBytes  = 64 << 20 // bytes waiting to be decoded
	exportQueueLimit     = 8192     // spans or logs waiting to be exported
	errorCodeLabels      = 100      // distinct error_code label values
	routeLabels          = 200      // distinct HTTP route label values
	suppressedTraces     = 4096     // trace ids of trigger deliveries remembered
)

// ErrConfig is wrapped by configuration errors.
var ErrConfig = errors.New("observability: invalid config")

// Module is the observability module. Its exported fields are its
// config.yaml keys (spec §5.3 names).
//
// Goroutines: the event loop, the telemetry decoder, the exporter (with
// otlp) and the Prometheus server; Stop waits for all of them.
//
// Lock order: a store ring's mu, then traceIndex.mu (the span ring's
// add/evict hooks). Every other mutex (workerNames, triggers, labelCap,
// exporter, promMetrics.totalsMu, mu) is a leaf: nothing else is taken
// while it is held, and no I/O happens under any of them.
type Module struct {
	Enabled          bool    `yaml:"enabled"`
	ServiceName      string  `yaml:"service_name"`
	ServiceVersion   string  `yaml:"service_version"`
	ServiceNamespace string  `yaml:"service_namespace"`
	Exporter         string  `yaml:"exporter"`
	Endpoint         string  `yaml:"endpoint"`
	SamplingRatio    float64 `yaml:"sampling_ratio"`
	MemoryMaxSpans   int     `yaml:"memory_max_spans"`
	LogsEnabled      bool    `yaml:"logs_enabled"`
	LogsMaxCount     int     `yaml:"logs_max_count"`
	LogsBatchSize    int     `yaml:"logs_batch_size"`
	LogsFlushMS      int     `yaml:"logs_flush_interval_ms"`
	MetricsEnabled   bool    `yaml:"metrics_enabled"`
	MetricsHost      string  `yaml:"metrics_host"`
	// MetricsPort nil means the default, 9464; when that port is taken
	// the module runs without Prometheus (and says so). A port set in
	// config.yaml must be free, or startup fails.
	MetricsPort     *int `yaml:"metrics_port"`
	MetricsMaxCount int  `yaml:"metrics_max_count"`

	// getenv reads OTEL_* fallbacks; tests replace it.
	getenv func(string) (string, bool)

	h   *module.Host
	log *slog.Logger

	spans   *ring[*Span]
	logs    *ring[*LogRecord]
	metrics *ring[*MetricPoint]
	traces  *traceIndex
	names   workerNames
	prom    *promMetrics
	exp     *exporter
	trig    triggers

	metricsLn  net.Listener
	metricsSrv *http.Server

	sub    *event.Subscription
	frames chan frame
	queued atomic.Int64 // payload bytes in frames

	stats counters

	life module.Lifecycle
	ctx  context.Context // the module's lifetime, cancelled by Stop (life's)
}

// counters are the module's own tallies, shown by engine::metrics::list
// and Prometheus.
type counters struct {
	framesOK, framesMalformed, framesTooLarge, framesDropped atomic.Uint64
	spansSampledOut                                          atomic.Uint64
	triggerFirings, triggerFiringsDropped                    atomic.Uint64
}

// lookupEnv reads the environment; tests replace it.
var lookupEnv = os.LookupEnv

func init() {
	module.Register(module.Info{ID: config.ModuleObservability, New: func() module.Module { return New() }})
}

// New returns a module holding the default configuration.
func New() *Module {
	return &Module{
		Enabled:         true,
		ServiceName:     DefaultServiceName,
		SamplingRatio:   1,
		MemoryMaxSpans:  DefaultMaxSpans,
		LogsEnabled:     true,
		LogsMaxCount:    DefaultMaxLogs,
		LogsBatchSize:   100,
		LogsFlushMS:     int(DefaultFlushInterval / time.Millisecond),
		MetricsEnabled:  true,
		MetricsHost:     DefaultMetricsHost,
		MetricsMaxCount: DefaultMaxMetrics,
		getenv:          lookupEnv,
	}
}

// ID is the module's canonical ID.
func (m *Module) ID() string { return config.ModuleObservability }

var (
	_ module.Module        = (*Module)(nil)
	_ module.Provisioner   = (*Module)(nil)
	_ module.Validator     = (*Module)(nil)
	_ engine.TelemetrySink = (*Module)(nil)
)

// env reads an environment fallback.
func (m *Module) env(key string) string {
	if m.getenv == nil {
		return ""
	}
	v, _ := m.getenv(key)
	return strings.TrimSpace(v)
}

// Provision resolves the OTEL_* fallbacks and opens the metrics listener,
// so a taken port fails startup.
func (m *Module) Provision(ctx context.Context, h *module.Host) error {
	if m.ServiceName == DefaultServiceName {
		if v := m.env("OTEL_SERVICE_NAME"); v != "" {
			m.ServiceName = v
		}
	}
	if m.Endpoint == "" {
		m.Endpoint = m.env("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if m.Exporter == "" {
		m.Exporter = ExporterMemory
		if m.Endpoint != "" || m.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			m.Exporter = ExporterBoth
		}
	}
	if !m.MetricsEnabled {
		return nil
	}
	port := DefaultMetricsPort
	if m.MetricsPort != nil {
		port = *m.MetricsPort
	}
	if port < 0 || port > 65535 {
		return nil // Validate says why
	}
	addr := net.JoinHostPort(m.MetricsHost, strconv.Itoa(port))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil && m.MetricsPort == nil {
		if h.Logger != nil {
			h.Logger.Warn("Prometheus metrics off: cannot listen on the default port (set metrics_port, 0 for any free port)",
				"addr", addr, "err", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("observability: Prometheus listener on %s: %w (set metrics_port, 0 for any free port, or metrics_enabled: false)", addr, err)
	}
	m.metricsLn = ln
	return nil
}

// Validate checks the decoded config.
func (m *Module) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	switch m.Exporter {
	case "", ExporterMemory, ExporterOTLP, ExporterBoth:
	default:
		bad("exporter %q: want memory, otlp or both", m.Exporter)
	}
	if m.Endpoint != "" {
		if u, err := url.Parse(m.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("endpoint %q: want an http(s) URL such as http://localhost:4318", m.Endpoint)
		}
	}
	if m.SamplingRatio < 0 || m.SamplingRatio > 1 {
		bad("sampling_ratio %v: want 0 to 1", m.SamplingRatio)
	}
	if m.MemoryMaxSpans < 1 {
		bad("memory_max_spans %d: want at least 1", m.MemoryMaxSpans)
	}
	if m.LogsMaxCount < 1 {
		bad("logs_max_count %d: want at least 1", m.LogsMaxCount)
	}
	if m.MetricsMaxCount < 1 {
		bad("metrics_max_count %d: want at least 1", m.MetricsMaxCount)
	}
	if m.LogsBatchSize < 1 {
		bad("logs_batch_size %d: want at least 1", m.LogsBatchSize)
	}
	if m.LogsFlushMS < 1 {
		bad("logs_flush_interval_ms %d: want at least 1", m.LogsFlushMS)
	}
	if p := m.MetricsPort; p != nil && (*p < 0 || *p > 65535) {
		bad("metrics_port %d: want 0 to 65535", *p)
	}
	return errors.Join(errs...)
}

// MetricsAddr is the Prometheus listener's host:port ("" when metrics are
// off).
func (m *Module) MetricsAddr() string {
	if m.metricsLn == nil {
		return ""
	}
	return m.metricsLn.Addr().String()
}

// Start builds the stores, registers the functions and trigger types,
// subscribes to the engine's events, installs the telemetry sink and
// starts the exporter and the metrics server.
func (m *Module) Start(ctx context.Context, h *module.Host) error {
	m.h = h
	m.log = h.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.ctx = m.life.Begin(ctx, h.Engine)
	m.spans = newRing[*Span](m.MemoryMaxSpans)
	m.traces = newTraceIndex()
	m.spans.onAdd = func(s *Span) { m.traces.add(s.TraceID) }
	m.spans.onEvict = func(s *Span) { m.traces.remove(s.TraceID) }
	m.logs = newRing[*LogRecord](m.LogsMaxCount)
	m.metrics = newRing[*MetricPoint](m.MetricsMaxCount)
	m.names.init()
	m.frames = make(chan frame, telemetryQueueFrames)

	if m.Exporter == ExporterOTLP || m.Exporter == ExporterBoth {
		exp, err := newExporter(m.exportOptions(), m.log)
		if err != nil {
			return fmt.Errorf("observability: exporter: %w", err)
		}
		m.exp = exp
	}
	if m.MetricsEnabled {
		m.prom = newPromMetrics(m)
	}
	m.sub = h.Engine.Events().Subscribe(DefaultEventBuffer)
	if err := m.register(); err != nil {
		m.Stop(ctx)
		if m.exp != nil && m.exp.grpc != nil {
			m.exp.grpc.close()
		}
		return err
	}
	// Exits when Stop cancels m.ctx.
	m.life.Go(m.eventLoop)
	// Exits when Stop cancels m.ctx.
	m.life.Go(m.telemetryLoop)
	if m.exp != nil {
		// Exits when Stop cancels m.ctx, after a last flush.
		m.life.Go(func() { m.exp.run(m.ctx) })
	}
	if m.metricsLn != nil {
		m.metricsSrv = &http.Server{Handler: m.prom.handler(), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)}
		ln := m.metricsLn
		// Exits when Stop shuts the server down.
		m.life.Go(func() {
			if err := m.metricsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.log.Error("Prometheus server stopped", "err", err)
			}
		})
		m.log.Info("Prometheus metrics", "url", "http://"+m.MetricsAddr()+"/metrics")
	}
	h.Engine.SetTelemetrySink(m)
	return nil
}

// Stop removes the telemetry sink, the functions and the subscription,
// flushes the exporter and stops the metrics server, within ctx.
func (m *Module) Stop(ctx context.Context) error {
	if m.h != nil && !m.life.Stopping() {
		m.h.Engine.SetTelemetrySink(nil)
	}
	return m.life.Stop(ctx, func() error {
		if m.sub != nil {
			m.sub.Close()
		}
		if m.metricsSrv != nil {
			if err := m.metricsSrv.Shutdown(ctx); err != nil {
				return fmt.Errorf("observability: metrics server: %w", err)
			}
		} else if m.metricsLn != nil {
			m.metricsLn.Close() // provisioned, never started
		}
		return nil
	})
}

package observability

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/event"
)

// Engine span attribute keys.
const (
	attrFunctionID     = "function_id"
	attrInvocationID   = "iii.invocation.id"
	attrTrigger        = "iii.trigger"
	attrCallerWorker   = "iii.caller.worker"
	attrCallerWorkerID = "iii.caller.worker_id"
	attrWorker         = "iii.worker"
	attrWorkerID       = "iii.worker_id"
	attrErrorType      = "error.type"
	attrErrorMessage   = "error.message"
)

// Trigger kinds of the calls this module makes to deliver log and trace
// trigger firings.
const (
	triggerKindLog   = "log"
	triggerKindTrace = "trace"
	// triggerKindInternal marks the module's own calls (queue stats at
	// scrape time): they are neither metrics nor spans.
	triggerKindInternal = "observability"
)

// eventLoop consumes the engine's events until the module stops.
func (m *Module) eventLoop() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case ev := <-m.sub.C():
			m.handleEvent(ev)
		}
	}
}

func (m *Module) handleEvent(ev event.Event) {
	switch e := ev.(type) {
	case event.InvocationStarted:
		m.traces.started(e.Span.TraceID)
		if e.Trigger == triggerKindLog || e.Trigger == triggerKindTrace {
			// A trigger delivery: what it causes must not fire triggers again.
			m.trig.suppress(e.Span.TraceID)
		}
	case event.InvocationFinished:
		m.traces.finished(e.Span.TraceID)
		if e.Trigger == triggerKindInternal {
			return
		}
		if m.prom != nil {
			m.prom.invocation(e)
		}
		m.engineSpan(e)
	case event.WorkerConnected:
		if m.prom != nil {
			m.prom.spawns.Inc()
		}
	case event.WorkerUpdated:
		m.names.set(e.WorkerID, e.Name)
	case event.WorkerDisconnected:
		m.names.remove(e.WorkerID)
		if m.prom != nil {
			m.prom.deaths.Inc()
		}
	case event.FunctionRegistered:
		if m.prom != nil {
			m.prom.registrations.Inc()
		}
	case event.LogLine:
		m.logLine(e)
	case barrier:
		close(e.done)
	case event.HTTPRequestServed:
		if m.prom != nil {
			m.prom.httpRequest(e)
		}
	}
}

// traced reports whether a finished call becomes a stored span. The
// module's own functions never do (a console polling traces would fill
// the store with its own reads), nor do calls of in-process functions
// that start a trace of their own from a worker or the engine (list
// polls); those made inside a trace, or by a trigger (http, cron, queue,
// ...), do.
func (m *Module) traced(e event.InvocationFinished) bool {
	if !m.Enabled || isOwnFunction(e.FunctionID) {
		return false
	}
	inProcess := e.TargetWorkerID == "" && e.Worker != ""
	if inProcess && e.Span.ParentSpanID == "" &&
		(e.Trigger == engine.TriggerKindEngine || e.Trigger == engine.TriggerKindWorker || e.Trigger == "") {
		return false
	}
	return true
}

// isOwnFunction reports whether id is one of the observability functions.
func isOwnFunction(id string) bool {
	return strings.HasPrefix(id, "engine::log::") || strings.HasPrefix(id, "engine::traces::") ||
		strings.HasPrefix(id, "engine::logs::") || strings.HasPrefix(id, "engine::metrics::") ||
		strings.HasPrefix(id, "engine::baggage::")
}

// engineSpan records a finished call as a SERVER span.
func (m *Module) engineSpan(e event.InvocationFinished) {
	if !m.traced(e) {
		return
	}
	if !sampled(e.Span.TraceID, m.SamplingRatio) {
		m.stats.spansSampledOut.Add(1)
		return
	}
	start := e.At.Add(-e.Duration)
	c := &callInfo{functionID: e.FunctionID, invocationID: e.InvocationID, trigger: e.Trigger,
		callerWorkerID: e.CallerWorkerID, worker: e.Worker, workerID: e.TargetWorkerID}
	if e.CallerWorkerID != "" {
		c.callerWorker = m.names.get(e.CallerWorkerID)
	}
	s := &Span{
		TraceID: e.Span.TraceID, SpanID: e.Span.SpanID, ParentSpanID: e.Span.ParentSpanID,
		Name: e.FunctionID, Kind: "SERVER", ServiceName: m.ServiceName, Worker: e.Worker,
		Source: SourceEngine, StartTimeUnixNano: unixNano(start), EndTimeUnixNano: unixNano(e.At),
		DurationMS: float64(e.Duration) / float64(time.Millisecond), Status: e.Status, call: c,
	}
	if e.Status != event.StatusOK {
		c.failed, c.errorType, c.errorMessage = true, e.ErrorCode, e.ErrorMessage
		s.StatusDescription = e.ErrorMessage
	}
	// Nothing a trigger delivery causes fires triggers again (no loops).
	m.addSpan(s, e.Trigger == triggerKindTrace || m.trig.suppressed(s.TraceID))
}

// addSpan stores, exports and announces a span. noFire skips the trace
// triggers (for spans of trigger deliveries).
func (m *Module) addSpan(s *Span, noFire bool) {
	if m.Exporter != ExporterOTLP {
		m.spans.add(s)
	}
	if m.exp != nil {
		m.exp.span(s)
	}
	if !noFire {
		m.fireTrace(s)
	}
}

// logLine stores a line of a managed worker's output as a log record.
func (m *Module) logLine(e event.LogLine) {
	if !m.LogsEnabled {
		return
	}
	src := LogSourceStdout
	switch e.Stream {
	case "stderr":
		src = LogSourceStderr
	case "install":
		src = LogSourceInstall
	}
	at := unixNano(e.At)
	attrs := map[string]any{"log.iostream": e.Stream}
	if e.PID != 0 {
		attrs["process.pid"] = e.PID
	}
	m.addLog(&LogRecord{
		TimestampUnixNano: at, ObservedTimestampUnixNano: at,
		SeverityNumber: SeverityInfo, SeverityText: "INFO", Body: e.Line,
		Attributes: attrs, Resource: map[string]any{"service.name": e.Worker},
		ServiceName: e.Worker, Worker: e.Worker, Source: src,
	})
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

// sampled decides by trace id, like OpenTelemetry's TraceIdRatioBased
// sampler: the same trace is kept or dropped everywhere.
func sampled(traceID string, ratio float64) bool {
	if ratio >= 1 {
		return true
	}
	if ratio <= 0 {
		return false
	}
	b, err := hex.DecodeString(traceID)
	if err != nil || len(b) != 16 {
		return true
	}
	bound := uint64(ratio * (1 << 63))
	return binary.BigEndian.Uint64(b[8:16])>>1 < bound
}

// workerNames maps worker ids to the names they reported.
type workerNames struct {
	mu sync.RWMutex
	m  map[string]string
}

func (w *workerNames) init() { w.m = make(map[string]string) }

func (w *workerNames) set(id, name string) {
	if id == "" || name == "" {
		return
	}
	w.mu.Lock()
	w.m[id] = name
	w.mu.Unlock()
}

func (w *workerNames) remove(id string) {
	w.mu.Lock()
	delete(w.m, id)
	w.mu.Unlock()
}

func (w *workerNames) get(id string) string {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.m[id]
}

// workerName is the name of a worker id: from the events seen so far, or
// from a registry snapshot for a worker whose update is still in flight.
func (m *Module) workerName(id string) string {
	if id == "" {
		return ""
	}
	if n := m.names.get(id); n != "" {
		return n
	}
	for _, w := range m.h.Engine.Snapshot().Workers {
		if w.ID == id {
			m.names.set(id, w.Name)
			return w.Name
		}
	}
	return ""
}

// traceIndex knows which trace ids are live (a call in flight) or stored,
// so that a log written during a call can be tied to its trace.
type traceIndex struct {
	mu     sync.Mutex
	stored map[string]int // trace id -> spans in the store
	live   map[string]int // trace id -> calls in flight
}

// maxLive bounds the live table: events lost to a full buffer could
// otherwise leave entries behind forever.
const maxLive = 1 << 16

func newTraceIndex() *traceIndex {
	return &traceIndex{stored: make(map[string]int), live: make(map[string]int)}
}

func (t *traceIndex) started(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.live) >= maxLive {
		clear(t.live)
	}
	t.live[id]++
}

func (t *traceIndex) finished(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.live[id] <= 1 {
		delete(t.live, id)
	} else {
		t.live[id]--
	}
}

func (t *traceIndex) add(id string) {
	t.mu.Lock()
	t.stored[id]++
	t.mu.Unlock()
}

// remove is called by the span ring under its lock; it only takes t.mu.
func (t *traceIndex) remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stored[id] <= 1 {
		delete(t.stored, id)
	} else {
		t.stored[id]--
	}
}

func (t *traceIndex) known(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.live[id] > 0 || t.stored[id] > 0
}

package observability

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Query limits.
const (
	defaultListLimit = 100
)

// register installs the module's functions and trigger types.
func (m *Module) register() error {
	fns := []engine.Function{
		{ID: "engine::traces::list", Description: "List stored spans, newest first (filters: trace_id, function_id, service_name, name, status, since, until, limit, offset)", Handler: m.fnTracesList},
		{ID: "engine::traces::tree", Description: "One trace as a parent/child tree of spans with timings", Handler: m.fnTracesTree},
		{ID: "engine::traces::clear", Description: "Drop every stored span", Handler: m.fnTracesClear},
		{ID: "engine::logs::list", Description: "List stored log records, newest first (filters: worker, level, severity_min, trace_id, span_id, service_name, search, since, until, limit, offset)", Handler: m.fnLogsList},
		{ID: "engine::logs::clear", Description: "Drop every stored log record", Handler: m.fnLogsClear},
		{ID: "engine::metrics::list", Description: "Engine counters and stored worker metric points (filters: metric_name, worker, service_name, since, until, limit)", Handler: m.fnMetricsList},
	}
	for _, lv := range []struct {
		name string
		num  int32
	}{{"info", SeverityInfo}, {"warn", SeverityWarn}, {"error", SeverityError}, {"debug", SeverityDebug}, {"trace", SeverityTrace}} {
		fns = append(fns, engine.Function{ID: "engine::log::" + lv.name,
			Description: "Store a " + lv.name + " log record ({message, data?, trace_id?, span_id?, service_name?})",
			Handler:     m.logFunction(lv.num, strings.ToUpper(lv.name))})
	}
	fns = append(fns,
		engine.Function{ID: "engine::baggage::get", Description: "The value of a W3C baggage entry the call carries ({key})", Handler: fnBaggageGet},
		engine.Function{ID: "engine::baggage::set", Description: "Diagnostic: baggage is not propagated back to the caller", Handler: fnBaggageSet},
		engine.Function{ID: "engine::baggage::get_all", Description: "Every W3C baggage entry the call carries", Handler: fnBaggageGetAll},
	)
	for _, fn := range fns {
		if err := m.life.RegisterFunction(WorkerName, fn); err != nil {
			return fmt.Errorf("observability: %w", err)
		}
	}
	types := []engine.TriggerType{
		{ID: "log", Description: "Fires for each new log record (config: level = info|warn|error|debug|trace, optional)", Provider: logProvider{&m.trig}},
		{ID: "trace", Description: "Fires for each new span (config: service_name, status, optional)", Provider: traceProvider{&m.trig}},
	}
	for _, tt := range types {
		if err := m.h.Engine.RegisterTriggerType(WorkerName, tt); err != nil {
			return fmt.Errorf("observability: trigger type %s: %w", tt.ID, err)
		}
	}
	return nil
}

// decodeInput decodes a function's input; null or absent is {}.
func decodeInput(call *engine.Call, v any) error {
	if err := decodeConfig(call.Data, v); err != nil {
		return &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: fmt.Sprintf("%s: invalid input: %v", call.FunctionID, err)}
	}
	return nil
}

func result(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("observability: encode result: %w", err)
	}
	return b, nil
}

// msRange is a since/until filter in Unix milliseconds (0 = open).
type msRange struct {
	Since int64 `json:"since"`
	Until int64 `json:"until"`
	// iii's console names them start_time/end_time.
	StartTime int64 `json:"start_time"`
	EndTime   int64 `json:"end_time"`
}

func (r msRange) contains(unixNano uint64) bool {
	since, until := r.Since, r.Until
	if since == 0 {
		since = r.StartTime
	}
	if until == 0 {
		until = r.EndTime
	}
	ms := int64(unixNano / 1e6)
	return (since == 0 || ms >= since) && (until == 0 || ms <= until)
}

// page applies offset and limit (default 100, at most max).
func page(limit, offset, max int) (int, int) {
	if limit <= 0 {
		limit = defaultListLimit
	}
	if limit > max {
		limit = max
	}
	return limit, offset
}

type tracesListInput struct {
	msRange
	TraceID     string `json:"trace_id"`
	FunctionID  string `json:"function_id"`
	ServiceName string `json:"service_name"`
	Worker      string `json:"worker"`
	Name        string `json:"name"`
	Status      string `json:"status"`
	Source      string `json:"source"`
	Limit       int    `json:"limit"`
	Offset      int    `json:"offset"`
}

func (in *tracesListInput) match(s *Span) bool {
	switch {
	case in.TraceID != "" && !strings.EqualFold(in.TraceID, s.TraceID):
		return false
	case in.FunctionID != "" && in.FunctionID != s.functionID():
		return false
	case in.ServiceName != "" && !strings.EqualFold(in.ServiceName, s.ServiceName):
		return false
	case in.Worker != "" && in.Worker != s.Worker:
		return false
	case in.Name != "" && !strings.Contains(strings.ToLower(s.Name), strings.ToLower(in.Name)):
		return false
	case in.Status != "" && !strings.EqualFold(in.Status, s.Status):
		return false
	case in.Source != "" && in.Source != s.Source:
		return false
	}
	return in.contains(s.StartTimeUnixNano)
}

// fnTracesList lists spans newest first (by arrival).
func (m *Module) fnTracesList(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	if err := m.memoryTraces(); err != nil {
		return nil, err
	}
	var in tracesListInput
	if err := decodeInput(call, &in); err != nil {
		return nil, err
	}
	limit, offset := page(in.Limit, in.Offset, m.MemoryMaxSpans)
	out := make([]*Span, 0, min(limit, 256))
	total := 0
	m.spans.newest(func(s *Span) bool {
		if !in.match(s) {
			return true
		}
		total++
		if total > offset && len(out) < limit {
			out = append(out, s)
		}
		return true
	})
	return result(struct {
		Spans []*Span `json:"spans"`
		Total int     `json:"total"`
	}{out, total})
}

// CodeMemoryExporterOff is the error of the trace queries when spans are
// only exported (exporter: otlp), as iii names it.
const CodeMemoryExporterOff = "memory_exporter_not_enabled"

// memoryTraces fails the trace queries when spans are not kept in memory.
func (m *Module) memoryTraces() error {
	if m.Exporter == ExporterOTLP {
		return &protocol.ErrorBody{Code: CodeMemoryExporterOff,
			Message: "In-memory span storage is not available. Set exporter: memory or both in config."}
	}
	return nil
}

// SpanNode is a span with its children, for engine::traces::tree.
type SpanNode struct {
	*Span
	Children []*SpanNode `json:"children"`
}

// MarshalJSON encodes the span's fields and its children.
func (n *SpanNode) MarshalJSON() ([]byte, error) {
	b, err := n.Span.MarshalJSON()
	if err != nil {
		return nil, err
	}
	children := n.Children
	if children == nil {
		children = []*SpanNode{}
	}
	c, err := json.Marshal(children)
	if err != nil {
		return nil, err
	}
	b = append(b[:len(b)-1], `,"children":`...)
	b = append(b, c...)
	return append(b, '}'), nil
}

// fnTracesTree returns one trace as a tree. Spans whose parent is not
// stored are roots; siblings are ordered by start time.
func (m *Module) fnTracesTree(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	if err := m.memoryTraces(); err != nil {
		return nil, err
	}
	var in struct {
		TraceID string `json:"trace_id"`
	}
	if err := decodeInput(call, &in); err != nil {
		return nil, err
	}
	in.TraceID = strings.ToLower(strings.TrimSpace(in.TraceID))
	if in.TraceID == "" {
		return nil, &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: "engine::traces::tree: trace_id is required"}
	}
	var spans []*Span
	m.spans.newest(func(s *Span) bool {
		if s.TraceID == in.TraceID {
			spans = append(spans, s)
		}
		return true
	})
	roots := buildTree(spans)
	var start, end uint64
	for _, s := range spans {
		if start == 0 || s.StartTimeUnixNano < start {
			start = s.StartTimeUnixNano
		}
		end = max(end, s.EndTimeUnixNano)
	}
	dur := 0.0
	if end > start {
		dur = float64(end-start) / 1e6
	}
	return result(struct {
		TraceID           string      `json:"trace_id"`
		SpanCount         int         `json:"span_count"`
		StartTimeUnixNano uint64      `json:"start_time_unix_nano"`
		EndTimeUnixNano   uint64      `json:"end_time_unix_nano"`
		DurationMS        float64     `json:"duration_ms"`
		Roots             []*SpanNode `json:"roots"`
	}{in.TraceID, len(spans), start, end, dur, roots})
}

// buildTree links spans to their parents. A span id seen twice (a worker
// resending) keeps its first copy.
func buildTree(spans []*Span) []*SpanNode {
	nodes := make(map[string]*SpanNode, len(spans))
	order := make([]*SpanNode, 0, len(spans))
	for _, s := range spans {
		if _, dup := nodes[s.SpanID]; dup {
			continue
		}
		n := &SpanNode{Span: s, Children: []*SpanNode{}}
		nodes[s.SpanID] = n
		order = append(order, n)
	}
	var roots []*SpanNode
	for _, n := range order {
		p := nodes[n.ParentSpanID]
		if n.ParentSpanID == "" || p == nil || p == n {
			roots = append(roots, n)
			continue
		}
		p.Children = append(p.Children, n)
	}
	// A worker span nests under the engine span of the call it serves:
	// it runs on that call's worker.
	var fill func(n *SpanNode, worker string)
	fill = func(n *SpanNode, worker string) {
		if n.Worker == "" && worker != "" && n.Source == SourceWorker {
			cp := *n.Span
			cp.Worker = worker
			n.Span = &cp
		}
		sortByStart(n.Children)
		for _, c := range n.Children {
			fill(c, n.Worker)
		}
	}
	sortByStart(roots)
	for _, r := range roots {
		fill(r, "")
	}
	if roots == nil {
		roots = []*SpanNode{}
	}
	return roots
}

func sortByStart(ns []*SpanNode) {
	sort.SliceStable(ns, func(i, j int) bool { return ns[i].StartTimeUnixNano < ns[j].StartTimeUnixNano })
}

func (m *Module) fnTracesClear(context.Context, *engine.Call) (json.RawMessage, error) {
	if err := m.memoryTraces(); err != nil {
		return nil, err
	}
	return result(map[string]any{"success": true, "cleared": m.spans.clear()})
}

type logsListInput struct {
	msRange
	Worker       string `json:"worker"`
	Level        string `json:"level"`
	Severity     string `json:"severity"`
	SeverityText string `json:"severity_text"`
	SeverityMin  int32  `json:"severity_min"`
	TraceID      string `json:"trace_id"`
	SpanID       string `json:"span_id"`
	ServiceName  string `json:"service_name"`
	Source       string `json:"source"`
	Search       string `json:"search"`
	Limit        int    `json:"limit"`
	Offset       int    `json:"offset"`
}

func (in *logsListInput) match(r *LogRecord) bool {
	level := in.Level
	if level == "" {
		level = in.Severity
	}
	if level == "" {
		level = in.SeverityText
	}
	switch {
	case in.Worker != "" && in.Worker != r.Worker:
		return false
	case level != "" && !strings.EqualFold(level, "all") && !strings.EqualFold(level, r.SeverityText) &&
		levelOf(severityOf(level)) != levelOf(r.SeverityNumber):
		return false
	case in.SeverityMin > 0 && r.SeverityNumber < in.SeverityMin:
		return false
	case in.TraceID != "" && !strings.EqualFold(in.TraceID, r.TraceID):
		return false
	case in.SpanID != "" && !strings.EqualFold(in.SpanID, r.SpanID):
		return false
	case in.ServiceName != "" && !strings.EqualFold(in.ServiceName, r.ServiceName):
		return false
	case in.Source != "" && in.Source != r.Source:
		return false
	case in.Search != "" && !strings.Contains(strings.ToLower(r.Body), strings.ToLower(in.Search)):
		return false
	}
	return in.contains(r.TimestampUnixNano)
}

func (m *Module) fnLogsList(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var in logsListInput
	if err := decodeInput(call, &in); err != nil {
		return nil, err
	}
	limit, offset := page(in.Limit, in.Offset, m.LogsMaxCount)
	out := make([]*LogRecord, 0, min(limit, 256))
	total := 0
	m.logs.newest(func(r *LogRecord) bool {
		if !in.match(r) {
			return true
		}
		total++
		if total > offset && len(out) < limit {
			out = append(out, r)
		}
		return true
	})
	return result(struct {
		Logs  []*LogRecord `json:"logs"`
		Total int          `json:"total"`
	}{out, total})
}

func (m *Module) fnLogsClear(context.Context, *engine.Call) (json.RawMessage, error) {
	return result(map[string]any{"success": true, "cleared": m.logs.clear()})
}

func (m *Module) fnMetricsList(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var in struct {
		msRange
		MetricName  string `json:"metric_name"`
		Worker      string `json:"worker"`
		ServiceName string `json:"service_name"`
		Limit       int    `json:"limit"`
	}
	if err := decodeInput(call, &in); err != nil {
		return nil, err
	}
	limit, _ := page(in.Limit, 0, m.MetricsMaxCount)
	out := make([]*MetricPoint, 0, min(limit, 256))
	m.metrics.newest(func(p *MetricPoint) bool {
		switch {
		case in.MetricName != "" && in.MetricName != p.Name:
		case in.Worker != "" && in.Worker != p.Worker:
		case in.ServiceName != "" && !strings.EqualFold(in.ServiceName, p.ServiceName):
		case !in.contains(p.TimeUnixNano):
		default:
			out = append(out, p)
		}
		return len(out) < limit
	})
	st := m.h.Engine.Stats()
	eng := map[string]any{
		"workers_active":              st.Workers,
		"functions_registered":        st.Functions,
		"slow_consumers_total":        st.SlowConsumers,
		"dropped_total":               st.Dropped,
		"telemetry_frames_dropped":    st.TelemetryDropped,
		"telemetry_frames_ok":         m.stats.framesOK.Load(),
		"telemetry_frames_malformed":  m.stats.framesMalformed.Load(),
		"telemetry_frames_too_large":  m.stats.framesTooLarge.Load(),
		"telemetry_frames_queue_full": m.stats.framesDropped.Load(),
		"events_dropped_total":        m.sub.Dropped(),
		"spans_stored":                m.spans.len(),
		"spans_sampled_out":           m.stats.spansSampledOut.Load(),
		"logs_stored":                 m.logs.len(),
		"metric_points_stored":        m.metrics.len(),
		"trigger_firings_total":       m.stats.triggerFirings.Load(),
		"trigger_firings_dropped":     m.stats.triggerFiringsDropped.Load(),
	}
	if m.prom != nil {
		eng["invocations_total"] = m.prom.totals()
	}
	return result(struct {
		Engine  map[string]any `json:"engine"`
		Metrics []*MetricPoint `json:"metrics"`
	}{eng, out})
}

// logFunction serves engine::log::<level>.
func (m *Module) logFunction(severity int32, text string) engine.Handler {
	return func(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
		var in struct {
			Message     *string         `json:"message"`
			Data        json.RawMessage `json:"data"`
			TraceID     string          `json:"trace_id"`
			SpanID      string          `json:"span_id"`
			ServiceName string          `json:"service_name"`
			CallerID    string          `json:"_caller_worker_id"`
		}
		if err := decodeInput(call, &in); err != nil {
			return nil, err
		}
		if in.Message == nil {
			return nil, &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: call.FunctionID + ": message is required"}
		}
		if !m.LogsEnabled {
			return nil, nil
		}
		callerID := call.CallerWorkerID
		if callerID == "" {
			callerID = in.CallerID
		}
		now := unixNano(time.Now())
		rec := &LogRecord{
			TimestampUnixNano: now, ObservedTimestampUnixNano: now,
			SeverityNumber: severity, SeverityText: text, Body: *in.Message,
			Attributes: map[string]any{}, TraceID: strings.ToLower(in.TraceID), SpanID: strings.ToLower(in.SpanID),
			ServiceName: in.ServiceName, Worker: m.workerName(callerID), Source: LogSourceFunction,
			ScopeName: WorkerName,
		}
		if rec.TraceID == "" {
			// The caller's trace, if the call came from inside one.
			rec.TraceID = m.callerTrace(ctx, call.Traceparent)
		}
		if len(in.Data) > 0 && string(in.Data) != "null" {
			var data any
			if json.Unmarshal(in.Data, &data) == nil {
				if obj, ok := data.(map[string]any); ok {
					for k, v := range obj {
						rec.Attributes[k] = v
					}
				} else {
					rec.Attributes["data"] = data
				}
			}
		}
		if rec.ServiceName == "" {
			rec.ServiceName = rec.Worker
		}
		if rec.ServiceName == "" {
			rec.ServiceName = m.ServiceName
		}
		rec.Resource = map[string]any{"service.name": rec.ServiceName}
		if callerID != "" {
			rec.Attributes["iii.worker_id"] = callerID
		}
		m.addLog(rec)
		return nil, nil
	}
}

// callerTrace is the trace id of a call's traceparent when the call was
// made inside a trace (a call the engine has seen start, or stored spans);
// "" when the engine started a new trace for the call itself. The call's
// caller was dispatched (and its start published) before this call was
// made, so once the event loop has caught up the answer is certain: a
// barrier event tells when it has.
func (m *Module) callerTrace(ctx context.Context, traceparent string) string {
	id := traceIDOf(traceparent)
	if id == "" {
		return ""
	}
	if m.traces.known(id) {
		return id
	}
	b := barrier{done: make(chan struct{})}
	m.h.Engine.Events().Publish(b)
	t := time.NewTimer(barrierWait)
	defer t.Stop()
	select {
	case <-b.done:
	case <-t.C:
	case <-ctx.Done():
	}
	if m.traces.known(id) {
		return id
	}
	return ""
}

// barrierWait bounds how long a log call waits for the event loop.
const barrierWait = 200 * time.Millisecond

// barrier is an event the module publishes to itself: the event loop
// closes done when it gets there, after every event published before it.
type barrier struct{ done chan struct{} }

// Kind names the event for other subscribers, which ignore it.
func (barrier) Kind() string { return "observability.barrier" }

// traceIDOf is the trace id of a W3C traceparent, "" if malformed.
func traceIDOf(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' {
		return ""
	}
	return strings.ToLower(tp[3:35])
}

// parseBaggage reads a W3C baggage header: "k=v;prop,k2=v2" with
// percent-encoded values; malformed members are skipped.
func parseBaggage(h string) map[string]string {
	out := map[string]string{}
	for _, member := range strings.Split(h, ",") {
		kv, _, _ := strings.Cut(member, ";")
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		v = strings.TrimSpace(v)
		if dv, err := url.PathUnescape(v); err == nil {
			v = dv
		}
		out[k] = v
	}
	return out
}

func fnBaggageGet(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var in struct {
		Key *string `json:"key"`
	}
	if err := decodeInput(call, &in); err != nil {
		return nil, err
	}
	if in.Key == nil {
		return nil, &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: "engine::baggage::get: key is required"}
	}
	var v *string
	if s, ok := parseBaggage(call.Baggage)[*in.Key]; ok {
		v = &s
	}
	return result(map[string]*string{"value": v})
}

func fnBaggageSet(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var in struct {
		Key   *string `json:"key"`
		Value *string `json:"value"`
	}
	if err := decodeInput(call, &in); err != nil {
		return nil, err
	}
	if in.Key == nil || in.Value == nil {
		return nil, &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: "engine::baggage::set: key and value are required"}
	}
	return result(map[string]any{"success": true,
		"note": "Baggage set in a new context only. For propagation, use SDK-level baggage headers."})
}

func fnBaggageGetAll(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	return result(map[string]any{"baggage": parseBaggage(call.Baggage)})
}

package observability

import (
	"encoding/hex"
	"encoding/json"
	"strings"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// Span sources.
const (
	SourceEngine = "engine" // a call the engine routed
	SourceWorker = "worker" // a span a worker sent (OTLP frame)
)

// Span statuses. Engine spans use the invocation status (ok, error,
// timeout); worker spans the OTLP status (ok, error, unset).
const (
	StatusOK      = "ok"
	StatusError   = "error"
	StatusTimeout = "timeout"
	StatusUnset   = "unset"
)

// Span is one stored span. It is immutable once stored.
type Span struct {
	TraceID           string         `json:"trace_id"`
	SpanID            string         `json:"span_id"`
	ParentSpanID      string         `json:"parent_span_id,omitempty"`
	Name              string         `json:"name"`
	Kind              string         `json:"kind"`
	ServiceName       string         `json:"service_name"`
	Worker            string         `json:"worker,omitempty"`
	Source            string         `json:"source"`
	StartTimeUnixNano uint64         `json:"start_time_unix_nano"`
	EndTimeUnixNano   uint64         `json:"end_time_unix_nano"`
	DurationMS        float64        `json:"duration_ms"`
	Status            string         `json:"status"`
	StatusDescription string         `json:"status_description,omitempty"`
	Attributes        map[string]any `json:"attributes,omitempty"`
	Events            []SpanEvent    `json:"events,omitempty"`
	ScopeName         string         `json:"instrumentation_scope_name,omitempty"`
	ScopeVersion      string         `json:"instrumentation_scope_version,omitempty"`

	// For export: a worker span's own OTLP form, resource and scope.
	otlp     *tracepb.Span
	resource *resourcepb.Resource
	scope    *commonpb.InstrumentationScope
	// An engine span's call; its attributes are built from it when asked,
	// which keeps the store small (and the garbage collector's work).
	call *callInfo
}

// callInfo is what an engine span records of its call.
type callInfo struct {
	functionID, invocationID, trigger         string
	callerWorkerID, callerWorker              string
	worker, workerID, errorType, errorMessage string
	failed                                    bool
}

// attributes are the span's attributes (for an engine span: function_id,
// iii.invocation.id, iii.trigger, iii.caller.worker(_id), iii.worker(_id),
// error.type, error.message).
func (s *Span) attributes() map[string]any {
	c := s.call
	if c == nil {
		return s.Attributes
	}
	a := map[string]any{attrFunctionID: c.functionID, attrInvocationID: c.invocationID, attrTrigger: c.trigger}
	add := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	add(attrCallerWorkerID, c.callerWorkerID)
	add(attrCallerWorker, c.callerWorker)
	add(attrWorker, c.worker)
	add(attrWorkerID, c.workerID)
	if c.failed {
		a[attrErrorType] = c.errorType
		add(attrErrorMessage, c.errorMessage)
	}
	return a
}

// MarshalJSON encodes the span with its attributes.
func (s *Span) MarshalJSON() ([]byte, error) {
	type plain Span
	if s.call == nil {
		return json.Marshal((*plain)(s))
	}
	cp := *s
	cp.Attributes = s.attributes()
	return json.Marshal((*plain)(&cp))
}

// SpanEvent is an event recorded on a span.
type SpanEvent struct {
	Name         string         `json:"name"`
	TimeUnixNano uint64         `json:"timestamp_unix_nano"`
	Attributes   map[string]any `json:"attributes,omitempty"`
}

// functionID is the function a span is about: the engine's function_id
// attribute, the iii.function.id baggage attribute workers copy onto
// their spans, or the span name.
func (s *Span) functionID() string {
	if s.call != nil {
		return s.call.functionID
	}
	for _, k := range []string{attrFunctionID, "iii.function.id"} {
		if v, ok := s.Attributes[k].(string); ok && v != "" {
			return v
		}
	}
	return s.Name
}

// LogRecord is one stored log record (spec §3.2 shape, plus the worker
// that produced it and where it came from).
type LogRecord struct {
	TimestampUnixNano         uint64         `json:"timestamp_unix_nano"`
	ObservedTimestampUnixNano uint64         `json:"observed_timestamp_unix_nano"`
	SeverityNumber            int32          `json:"severity_number"`
	SeverityText              string         `json:"severity_text"`
	Body                      string         `json:"body"`
	Attributes                map[string]any `json:"attributes"`
	TraceID                   string         `json:"trace_id"`
	SpanID                    string         `json:"span_id"`
	Resource                  map[string]any `json:"resource"`
	ServiceName               string         `json:"service_name"`
	ScopeName                 string         `json:"instrumentation_scope_name"`
	ScopeVersion              string         `json:"instrumentation_scope_version"`
	Worker                    string         `json:"worker,omitempty"`
	Source                    string         `json:"source"`

	otlp     *logspb.LogRecord
	resource *resourcepb.Resource
	scope    *commonpb.InstrumentationScope
}

// Log sources.
const (
	LogSourceFunction = "function" // engine::log::*
	LogSourceOTLP     = "otlp"     // a worker's LOGS frame
	LogSourceStdout   = "stdout"   // a managed worker's output
	LogSourceStderr   = "stderr"
	LogSourceInstall  = "install"
)

// Severity numbers of the engine::log::* functions (OTLP's first number of
// each range).
const (
	SeverityTrace = 1
	SeverityDebug = 5
	SeverityInfo  = 9
	SeverityWarn  = 13
	SeverityError = 17
	SeverityFatal = 21
)

// levelOf maps an OTLP severity number to the level names of the log
// trigger (trace, debug, info, warn, error); fatal counts as error.
func levelOf(n int32) string {
	switch {
	case n <= 0:
		return ""
	case n < SeverityDebug:
		return "trace"
	case n < SeverityInfo:
		return "debug"
	case n < SeverityWarn:
		return "info"
	case n < SeverityError:
		return "warn"
	}
	return "error"
}

// severityOf is the severity number of a level name or severity text
// (TRACE, DEBUG, INFO, WARN/WARNING, ERROR, FATAL), 0 if unknown.
func severityOf(level string) int32 {
	switch strings.ToLower(strings.TrimSpace(level)) {
	case "trace":
		return SeverityTrace
	case "debug":
		return SeverityDebug
	case "info":
		return SeverityInfo
	case "warn", "warning":
		return SeverityWarn
	case "error":
		return SeverityError
	case "fatal":
		return SeverityFatal
	}
	return 0
}

// MetricPoint is one data point of a metric a worker sent.
type MetricPoint struct {
	Name              string         `json:"name"`
	Description       string         `json:"description,omitempty"`
	Unit              string         `json:"unit,omitempty"`
	Type              string         `json:"type"` // gauge, sum, histogram, exponential_histogram, summary
	IsMonotonic       bool           `json:"is_monotonic,omitempty"`
	ServiceName       string         `json:"service_name"`
	Worker            string         `json:"worker,omitempty"`
	Attributes        map[string]any `json:"attributes,omitempty"`
	StartTimeUnixNano uint64         `json:"start_time_unix_nano,omitempty"`
	TimeUnixNano      uint64         `json:"time_unix_nano"`
	Value             any            `json:"value,omitempty"` // gauge and sum
	Count             uint64         `json:"count,omitempty"` // histograms and summaries
	Sum               any            `json:"sum,omitempty"`
	Min               any            `json:"min,omitempty"`
	Max               any            `json:"max,omitempty"`
	BucketCounts      []uint64       `json:"bucket_counts,omitempty"`
	ExplicitBounds    []float64      `json:"explicit_bounds,omitempty"`
}

// hexID is the lowercase hex of an OTLP id, "" for none or all zeros.
func hexID(b []byte) string {
	for _, c := range b {
		if c != 0 {
			return hex.EncodeToString(b)
		}
	}
	return ""
}

// spanKinds names OTLP span kinds.
var spanKinds = map[tracepb.Span_SpanKind]string{
	tracepb.Span_SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
	tracepb.Span_SPAN_KIND_INTERNAL:    "INTERNAL",
	tracepb.Span_SPAN_KIND_SERVER:      "SERVER",
	tracepb.Span_SPAN_KIND_CLIENT:      "CLIENT",
	tracepb.Span_SPAN_KIND_PRODUCER:    "PRODUCER",
	tracepb.Span_SPAN_KIND_CONSUMER:    "CONSUMER",
}

// bodyText is a log body as text: strings as they are, anything else as
// JSON.
func bodyText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

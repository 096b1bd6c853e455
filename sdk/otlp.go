package sdk

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/iii-workbench/iii/engine/protocol"
)

// spanExporter queues finished spans as binary "OTLP" frames on the
// worker's socket (spec §7.1), as the Node SDK sends them on /otel. It never
// blocks: without a connection, or with the telemetry queue full, the
// spans are dropped and counted (TelemetryStats).
type spanExporter struct {
	out *outbox
}

var _ sdktrace.SpanExporter = (*spanExporter)(nil)

// ExportSpans encodes spans into as few frames of at most
// maxTelemetryFrame bytes as halving the batch gives, and queues them.
func (e *spanExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.send(spans)
	return nil
}

func (e *spanExporter) send(spans []sdktrace.ReadOnlySpan) {
	if len(spans) == 0 {
		return
	}
	frame, err := encodeSpans(spans)
	switch {
	case err == nil && len(frame) <= maxTelemetryFrame:
		_ = e.out.push(entry{frame: frame, kind: kindTelemetry, spans: len(spans)})
	case len(spans) > 1:
		e.send(spans[:len(spans)/2])
		e.send(spans[len(spans)/2:])
	default:
		e.out.dropSpans(1)
	}
}

// Shutdown has nothing to release: the worker owns the socket.
func (e *spanExporter) Shutdown(context.Context) error { return nil }

// encodeSpans is the telemetry frame of spans: "OTLP" and the OTLP/JSON
// ExportTraceServiceRequest, with camelCase keys, lowercase hex trace and
// span ids and 64-bit integers as strings, grouped by resource and
// instrumentation scope in the order the spans came.
func encodeSpans(spans []sdktrace.ReadOnlySpan) ([]byte, error) {
	var req otlpTraces
	resIndex := map[*sdkresource.Resource]int{}
	type scopeKey struct {
		res                      int
		name, version, schemaURL string
		attrs                    attribute.Distinct
	}
	scopeIndex := map[scopeKey]int{}
	for _, s := range spans {
		ri, ok := resIndex[s.Resource()]
		if !ok {
			ri = len(req.ResourceSpans)
			resIndex[s.Resource()] = ri
			rs := otlpResourceSpans{}
			if r := s.Resource(); r != nil {
				rs.Resource.Attributes = keyValues(r.Attributes())
				rs.SchemaURL = r.SchemaURL()
			}
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		rs := &req.ResourceSpans[ri]
		sc := s.InstrumentationScope()
		k := scopeKey{ri, sc.Name, sc.Version, sc.SchemaURL, sc.Attributes.Equivalent()}
		si, ok := scopeIndex[k]
		if !ok {
			si = len(rs.ScopeSpans)
			scopeIndex[k] = si
			rs.ScopeSpans = append(rs.ScopeSpans, otlpScopeSpans{
				Scope:     otlpScope{Name: sc.Name, Version: sc.Version, Attributes: keyValues(sc.Attributes.ToSlice())},
				SchemaURL: sc.SchemaURL,
			})
		}
		rs.ScopeSpans[si].Spans = append(rs.ScopeSpans[si].Spans, otlpSpanOf(s))
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	return append([]byte(protocol.TelemetryTraces), b...), nil
}

// OTLP span flags: the W3C trace flags in the low byte, and whether the
// parent is remote.
const (
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

func otlpSpanOf(s sdktrace.ReadOnlySpan) otlpSpan {
	sc := s.SpanContext()
	os := otlpSpan{
		TraceID:           sc.TraceID().String(),
		SpanID:            sc.SpanID().String(),
		TraceState:        sc.TraceState().String(),
		Flags:             uint32(sc.TraceFlags()) | flagHasIsRemote,
		Name:              s.Name(),
		Kind:              int(s.SpanKind()), // the OTLP enum has the same numbers
		StartTimeUnixNano: unixNanoString(s.StartTime().UnixNano()),
		EndTimeUnixNano:   unixNanoString(s.EndTime().UnixNano()),
		Attributes:        keyValues(s.Attributes()),
		DroppedAttributes: s.DroppedAttributes(),
		DroppedEvents:     s.DroppedEvents(),
		DroppedLinks:      s.DroppedLinks(),
	}
	if p := s.Parent(); p.IsValid() {
		os.ParentSpanID = p.SpanID().String()
		if p.IsRemote() {
			os.Flags |= flagIsRemote
		}
	}
	for _, ev := range s.Events() {
		os.Events = append(os.Events, otlpEvent{
			TimeUnixNano: unixNanoString(ev.Time.UnixNano()), Name: ev.Name,
			Attributes: keyValues(ev.Attributes), DroppedAttributes: ev.DroppedAttributeCount,
		})
	}
	for _, l := range s.Links() {
		os.Links = append(os.Links, otlpLink{
			TraceID: l.SpanContext.TraceID().String(), SpanID: l.SpanContext.SpanID().String(),
			TraceState: l.SpanContext.TraceState().String(), Attributes: keyValues(l.Attributes),
			DroppedAttributes: l.DroppedAttributeCount, Flags: uint32(l.SpanContext.TraceFlags()) | flagHasIsRemote,
		})
	}
	switch st := s.Status(); st.Code {
	case codes.Ok:
		os.Status = &otlpStatus{Code: 1}
	case codes.Error:
		os.Status = &otlpStatus{Code: 2, Message: st.Description}
	}
	return os
}

func unixNanoString(n int64) string {
	if n < 0 {
		n = 0
	}
	return strconv.FormatInt(n, 10)
}

// The OTLP/JSON shapes the SDK writes (opentelemetry-proto's
// trace/v1/trace.proto and common/v1/common.proto in the JSON mapping).
type (
	otlpTraces struct {
		ResourceSpans []otlpResourceSpans `json:"resourceSpans"`
	}
	otlpResourceSpans struct {
		Resource   otlpResource     `json:"resource"`
		ScopeSpans []otlpScopeSpans `json:"scopeSpans"`
		SchemaURL  string           `json:"schemaUrl,omitempty"`
	}
	otlpResource struct {
		Attributes []otlpKeyValue `json:"attributes"`
	}
	otlpScopeSpans struct {
		Scope     otlpScope  `json:"scope"`
		Spans     []otlpSpan `json:"spans"`
		SchemaURL string     `json:"schemaUrl,omitempty"`
	}
	otlpScope struct {
		Name       string         `json:"name"`
		Version    string         `json:"version,omitempty"`
		Attributes []otlpKeyValue `json:"attributes,omitempty"`
	}
	otlpSpan struct {
		TraceID           string         `json:"traceId"`
		SpanID            string         `json:"spanId"`
		TraceState        string         `json:"traceState,omitempty"`
		ParentSpanID      string         `json:"parentSpanId,omitempty"`
		Flags             uint32         `json:"flags,omitempty"`
		Name              string         `json:"name"`
		Kind              int            `json:"kind"`
		StartTimeUnixNano string         `json:"startTimeUnixNano"`
		EndTimeUnixNano   string         `json:"endTimeUnixNano"`
		Attributes        []otlpKeyValue `json:"attributes,omitempty"`
		DroppedAttributes int            `json:"droppedAttributesCount,omitempty"`
		Events            []otlpEvent    `json:"events,omitempty"`
		DroppedEvents     int            `json:"droppedEventsCount,omitempty"`
		Links             []otlpLink     `json:"links,omitempty"`
		DroppedLinks      int            `json:"droppedLinksCount,omitempty"`
		Status            *otlpStatus    `json:"status,omitempty"`
	}
	otlpEvent struct {
		TimeUnixNano      string         `json:"timeUnixNano"`
		Name              string         `json:"name"`
		Attributes        []otlpKeyValue `json:"attributes,omitempty"`
		DroppedAttributes int            `json:"droppedAttributesCount,omitempty"`
	}
	otlpLink struct {
		TraceID           string         `json:"traceId"`
		SpanID            string         `json:"spanId"`
		TraceState        string         `json:"traceState,omitempty"`
		Attributes        []otlpKeyValue `json:"attributes,omitempty"`
		DroppedAttributes int            `json:"droppedAttributesCount,omitempty"`
		Flags             uint32         `json:"flags,omitempty"`
	}
	otlpStatus struct {
		Message string `json:"message,omitempty"`
		Code    int    `json:"code,omitempty"` // 1 ok, 2 error
	}
	otlpKeyValue struct {
		Key   string       `json:"key"`
		Value otlpAnyValue `json:"value"`
	}
	// otlpAnyValue sets one field; none is an empty value.
	otlpAnyValue struct {
		StringValue *string     `json:"stringValue,omitempty"`
		BoolValue   *bool       `json:"boolValue,omitempty"`
		IntValue    string      `json:"intValue,omitempty"`    // int64 as a string
		DoubleValue any         `json:"doubleValue,omitempty"` // float64, or "NaN", "Infinity", "-Infinity"
		BytesValue  string      `json:"bytesValue,omitempty"`  // base64
		ArrayValue  *otlpValues `json:"arrayValue,omitempty"`
		KvlistValue *otlpKVList `json:"kvlistValue,omitempty"`
	}
	otlpValues struct {
		Values []otlpAnyValue `json:"values"`
	}
	otlpKVList struct {
		Values []otlpKeyValue `json:"values"`
	}
)

func keyValues(kvs []attribute.KeyValue) []otlpKeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]otlpKeyValue, len(kvs))
	for i, kv := range kvs {
		out[i] = otlpKeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)}
	}
	return out
}

// anyValue is the OTLP/JSON AnyValue of v: int64 as a string, bytes as
// base64, non-finite doubles by name.
func anyValue(v attribute.Value) otlpAnyValue {
	switch v.Type() {
	case attribute.BOOL:
		b := v.AsBool()
		return otlpAnyValue{BoolValue: &b}
	case attribute.INT64:
		return otlpAnyValue{IntValue: strconv.FormatInt(v.AsInt64(), 10)}
	case attribute.FLOAT64:
		return otlpAnyValue{DoubleValue: protocol.Float(v.AsFloat64())}
	case attribute.STRING:
		s := v.AsString()
		return otlpAnyValue{StringValue: &s}
	case attribute.BYTESLICE:
		return otlpAnyValue{BytesValue: base64.StdEncoding.EncodeToString(v.AsByteSlice())}
	case attribute.BOOLSLICE:
		return array(v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		return array(v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		return array(v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		return array(v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		return array(v.AsSlice(), func(v attribute.Value) attribute.Value { return v })
	case attribute.MAP:
		kvs := keyValues(v.AsMap())
		if kvs == nil {
			kvs = []otlpKeyValue{}
		}
		return otlpAnyValue{KvlistValue: &otlpKVList{Values: kvs}}
	}
	return otlpAnyValue{} // EMPTY
}

func array[T any](xs []T, val func(T) attribute.Value) otlpAnyValue {
	values := make([]otlpAnyValue, len(xs))
	for i, x := range xs {
		values[i] = anyValue(val(x))
	}
	return otlpAnyValue{ArrayValue: &otlpValues{Values: values}}
}

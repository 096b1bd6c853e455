package observability

import (
	"errors"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/iii-workbench/iii/engine/modules/observability/otlpjson"
	"github.com/iii-workbench/iii/engine/protocol"
)

// frame is a telemetry frame waiting to be decoded.
type frame struct {
	workerID string
	kind     string
	payload  []byte
	at       time.Time
}

// Frame outcomes, for the iii_telemetry_frames_total metric.
const (
	frameOK        = "ok"
	frameMalformed = "malformed"
	frameTooLarge  = "too_large"
	frameDropped   = "dropped" // the decode queue was full
)

// Telemetry takes a worker's OTLP/MTRC/LOGS frame. It never blocks: the
// frame is queued for the decoder, or dropped and counted when it is too
// large or the queue is full.
func (m *Module) Telemetry(workerID, kind string, payload []byte) {
	if len(payload) > DefaultMaxFrameBytes {
		m.countFrame(kind, frameTooLarge)
		return
	}
	n := int64(len(payload))
	if m.queued.Add(n) > telemetryQueueBytes {
		m.queued.Add(-n)
		m.countFrame(kind, frameDropped)
		return
	}
	select {
	case m.frames <- frame{workerID: workerID, kind: kind, payload: payload, at: time.Now()}:
	default:
		m.queued.Add(-n)
		m.countFrame(kind, frameDropped)
	}
}

func (m *Module) countFrame(kind, result string) {
	switch result {
	case frameOK:
		m.stats.framesOK.Add(1)
	case frameMalformed:
		m.stats.framesMalformed.Add(1)
	case frameTooLarge:
		m.stats.framesTooLarge.Add(1)
	case frameDropped:
		m.stats.framesDropped.Add(1)
	}
	if m.prom != nil {
		m.prom.frames.WithLabelValues(kind, result).Inc()
	}
}

// telemetryLoop decodes queued frames until the module stops.
func (m *Module) telemetryLoop() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case f := <-m.frames:
			m.queued.Add(-int64(len(f.payload)))
			err := m.ingest(f)
			switch {
			case err == nil:
				m.countFrame(f.kind, frameOK)
			case errors.Is(err, otlpjson.ErrMalformed):
				m.countFrame(f.kind, frameMalformed)
				m.log.Debug("malformed telemetry frame dropped", "kind", f.kind, "worker_id", f.workerID,
					"bytes", len(f.payload), "err", err)
			}
		}
	}
}

// ingest decodes one frame into the stores.
func (m *Module) ingest(f frame) error {
	worker := m.names.get(f.workerID)
	switch f.kind {
	case protocol.TelemetryTraces:
		req, err := otlpjson.DecodeTraces(f.payload)
		if err != nil {
			return err
		}
		if m.Enabled {
			m.workerSpans(req.ResourceSpans, worker)
		}
	case protocol.TelemetryLogs:
		req, err := otlpjson.DecodeLogs(f.payload)
		if err != nil {
			return err
		}
		if m.LogsEnabled {
			m.workerLogs(req.ResourceLogs, worker, f.at)
		}
	case protocol.TelemetryMetrics:
		req, err := otlpjson.DecodeMetrics(f.payload)
		if err != nil {
			return err
		}
		m.workerMetrics(req.ResourceMetrics, worker)
	default:
		return otlpjson.ErrMalformed
	}
	return nil
}

// serviceName is a resource's service.name, "" if none.
func serviceName(r *resourcepb.Resource) string {
	if r == nil {
		return ""
	}
	for _, kv := range r.Attributes {
		if kv.GetKey() == "service.name" {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func (m *Module) workerSpans(rss []*tracepb.ResourceSpans, worker string) {
	for _, rs := range rss {
		svc := serviceName(rs.GetResource())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s := workerSpan(sp, rs.GetResource(), ss.GetScope(), svc, worker)
				if s == nil {
					continue
				}
				if m.exp == nil {
					s.otlp, s.resource, s.scope = nil, nil, nil // only the exporter needs them
				}
				m.addSpan(s, m.trig.suppressed(s.TraceID))
			}
		}
	}
}

// workerSpan converts an OTLP span; nil when it has no valid ids.
func workerSpan(sp *tracepb.Span, res *resourcepb.Resource, scope *commonpb.InstrumentationScope, svc, worker string) *Span {
	traceID, spanID := hexID(sp.GetTraceId()), hexID(sp.GetSpanId())
	if len(traceID) != 32 || len(spanID) != 16 {
		return nil
	}
	s := &Span{
		TraceID: traceID, SpanID: spanID, ParentSpanID: hexID(sp.GetParentSpanId()),
		Name: sp.GetName(), Kind: spanKinds[sp.GetKind()], ServiceName: svc, Worker: worker, Source: SourceWorker,
		StartTimeUnixNano: sp.GetStartTimeUnixNano(), EndTimeUnixNano: sp.GetEndTimeUnixNano(),
		Status: StatusUnset, StatusDescription: sp.GetStatus().GetMessage(),
		Attributes: otlpjson.Attributes(sp.GetAttributes()),
		ScopeName:  scope.GetName(), ScopeVersion: scope.GetVersion(),
		otlp: sp, resource: res, scope: scope,
	}
	if s.Kind == "" {
		s.Kind = "UNSPECIFIED"
	}
	if s.EndTimeUnixNano > s.StartTimeUnixNano {
		s.DurationMS = float64(s.EndTimeUnixNano-s.StartTimeUnixNano) / 1e6
	}
	switch sp.GetStatus().GetCode() {
	case tracepb.Status_STATUS_CODE_OK:
		s.Status = StatusOK
	case tracepb.Status_STATUS_CODE_ERROR:
		s.Status = StatusError
	}
	for _, ev := range sp.GetEvents() {
		s.Events = append(s.Events, SpanEvent{Name: ev.GetName(), TimeUnixNano: ev.GetTimeUnixNano(),
			Attributes: otlpjson.Attributes(ev.GetAttributes())})
	}
	return s
}

func (m *Module) workerLogs(rls []*logspb.ResourceLogs, worker string, at time.Time) {
	for _, rl := range rls {
		res := rl.GetResource()
		resAttrs := otlpjson.Attributes(res.GetAttributes())
		svc := serviceName(res)
		for _, sl := range rl.GetScopeLogs() {
			scope := sl.GetScope()
			for _, lr := range sl.GetLogRecords() {
				rec := &LogRecord{
					TimestampUnixNano: lr.GetTimeUnixNano(), ObservedTimestampUnixNano: lr.GetObservedTimeUnixNano(),
					SeverityNumber: int32(lr.GetSeverityNumber()), SeverityText: lr.GetSeverityText(),
					Body: bodyText(otlpjson.Value(lr.GetBody())), Attributes: otlpjson.Attributes(lr.GetAttributes()),
					TraceID: hexID(lr.GetTraceId()), SpanID: hexID(lr.GetSpanId()),
					Resource: resAttrs, ServiceName: svc, ScopeName: scope.GetName(), ScopeVersion: scope.GetVersion(),
					Worker: worker, Source: LogSourceOTLP,
					otlp: lr, resource: res, scope: scope,
				}
				if m.exp == nil {
					rec.otlp, rec.resource, rec.scope = nil, nil, nil // only the exporter needs them
				}
				if rec.ObservedTimestampUnixNano == 0 {
					rec.ObservedTimestampUnixNano = unixNano(at)
				}
				if rec.TimestampUnixNano == 0 {
					rec.TimestampUnixNano = rec.ObservedTimestampUnixNano
				}
				// The SDKs' loggers also put the ids among the attributes.
				if rec.TraceID == "" {
					rec.TraceID, _ = rec.Attributes["trace_id"].(string)
				}
				if rec.SpanID == "" {
					rec.SpanID, _ = rec.Attributes["span_id"].(string)
				}
				if rec.SeverityText == "" {
					rec.SeverityText = severityText(rec.SeverityNumber)
				}
				m.addLog(rec)
			}
		}
	}
}

// severityText names a severity number's range (OTLP short names).
func severityText(n int32) string {
	switch levelOf(n) {
	case "trace":
		return "TRACE"
	case "debug":
		return "DEBUG"
	case "info":
		return "INFO"
	case "warn":
		return "WARN"
	case "error":
		if n >= SeverityFatal {
			return "FATAL"
		}
		return "ERROR"
	}
	return ""
}

// addLog stores, exports and announces a log record.
func (m *Module) addLog(rec *LogRecord) {
	if rec.Attributes == nil {
		rec.Attributes = map[string]any{}
	}
	if rec.Resource == nil {
		rec.Resource = map[string]any{}
	}
	m.logs.add(rec)
	if m.exp != nil {
		m.exp.log(rec)
	}
	if rec.TraceID == "" || !m.trig.suppressed(rec.TraceID) {
		m.fireLog(rec)
	}
}

func (m *Module) workerMetrics(rms []*metricspb.ResourceMetrics, worker string) {
	for _, rm := range rms {
		svc := serviceName(rm.GetResource())
		for _, sm := range rm.GetScopeMetrics() {
			for _, mt := range sm.GetMetrics() {
				for _, p := range metricPoints(mt) {
					p.ServiceName, p.Worker = svc, worker
					m.metrics.add(p)
				}
			}
		}
	}
}

// metricPoints flattens a metric into one point per data point.
func metricPoints(mt *metricspb.Metric) []*MetricPoint {
	base := MetricPoint{Name: mt.GetName(), Description: mt.GetDescription(), Unit: mt.GetUnit()}
	var out []*MetricPoint
	number := func(typ string, monotonic bool, dps []*metricspb.NumberDataPoint) {
		for _, dp := range dps {
			p := base
			p.Type, p.IsMonotonic = typ, monotonic
			p.Attributes = otlpjson.Attributes(dp.GetAttributes())
			p.StartTimeUnixNano, p.TimeUnixNano = dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano()
			switch v := dp.GetValue().(type) {
			case *metricspb.NumberDataPoint_AsInt:
				p.Value = v.AsInt
			case *metricspb.NumberDataPoint_AsDouble:
				p.Value = otlpjson.Float(v.AsDouble)
			}
			out = append(out, &p)
		}
	}
	switch d := mt.GetData().(type) {
	case *metricspb.Metric_Gauge:
		number("gauge", false, d.Gauge.GetDataPoints())
	case *metricspb.Metric_Sum:
		number("sum", d.Sum.GetIsMonotonic(), d.Sum.GetDataPoints())
	case *metricspb.Metric_Histogram:
		for _, dp := range d.Histogram.GetDataPoints() {
			p := base
			p.Type = "histogram"
			p.Attributes = otlpjson.Attributes(dp.GetAttributes())
			p.StartTimeUnixNano, p.TimeUnixNano = dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano()
			p.Count, p.BucketCounts, p.ExplicitBounds = dp.GetCount(), dp.GetBucketCounts(), dp.GetExplicitBounds()
			if dp.Sum != nil {
				p.Sum = otlpjson.Float(dp.GetSum())
			}
			if dp.Min != nil {
				p.Min = otlpjson.Float(dp.GetMin())
			}
			if dp.Max != nil {
				p.Max = otlpjson.Float(dp.GetMax())
			}
			out = append(out, &p)
		}
	case *metricspb.Metric_ExponentialHistogram:
		for _, dp := range d.ExponentialHistogram.GetDataPoints() {
			p := base
			p.Type = "exponential_histogram"
			p.Attributes = otlpjson.Attributes(dp.GetAttributes())
			p.StartTimeUnixNano, p.TimeUnixNano = dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano()
			p.Count = dp.GetCount()
			if dp.Sum != nil {
				p.Sum = otlpjson.Float(dp.GetSum())
			}
			out = append(out, &p)
		}
	case *metricspb.Metric_Summary:
		for _, dp := range d.Summary.GetDataPoints() {
			p := base
			p.Type = "summary"
			p.Attributes = otlpjson.Attributes(dp.GetAttributes())
			p.StartTimeUnixNano, p.TimeUnixNano = dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano()
			p.Count, p.Sum = dp.GetCount(), otlpjson.Float(dp.GetSum())
			out = append(out, &p)
		}
	}
	return out
}

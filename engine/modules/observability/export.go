package observability

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/iii-workbench/iii/engine/modules/observability/otlpjson"
)

// OTLP transports.
const (
	protocolHTTP = "http/protobuf"
	protocolGRPC = "grpc"
)

// exportOptions configures the OTLP exporter.
type exportOptions struct {
	protocol           string // protocolHTTP or protocolGRPC
	grpcTarget         string // host:port for gRPC
	grpcTLS            bool
	tracesURL, logsURL string // "" = do not export that signal (for gRPC: only the on/off)
	headers            map[string]string
	resource           *resourcepb.Resource // the engine's
	spanBatch          int
	logBatch           int
	interval           time.Duration
	timeout            time.Duration
}

// exportOptions resolves the exporter's settings: the endpoint from
// config or OTEL_EXPORTER_OTLP_ENDPOINT (…/v1/traces and …/v1/logs), the
// per-signal OTEL_EXPORTER_OTLP_{TRACES,LOGS}_ENDPOINT used as they are,
// and OTEL_EXPORTER_OTLP_HEADERS.
func (m *Module) exportOptions() exportOptions {
	base := strings.TrimRight(m.Endpoint, "/")
	if base == "" {
		base = DefaultOTLPEndpoint
	}
	o := exportOptions{
		tracesURL: base + "/v1/traces",
		logsURL:   base + "/v1/logs",
		headers:   parseHeaders(m.env("OTEL_EXPORTER_OTLP_HEADERS")),
		spanBatch: DefaultBatchSize,
		logBatch:  m.LogsBatchSize,
		interval:  time.Duration(m.LogsFlushMS) * time.Millisecond,
		timeout:   10 * time.Second,
	}
	if v := m.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		o.tracesURL = v
	}
	if v := m.env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"); v != "" {
		o.logsURL = v
	}
	// gRPC when asked (OTEL_EXPORTER_OTLP_PROTOCOL=grpc), or when the
	// endpoint is the OTLP/gRPC port 4317 and no protocol is named.
	o.protocol = protocolHTTP
	transport := m.env("OTEL_EXPORTER_OTLP_PROTOCOL")
	if v := m.env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"); v != "" {
		transport = v
	}
	u, err := url.Parse(base)
	if transport == protocolGRPC || (transport == "" && err == nil && u.Port() == "4317") {
		o.protocol = protocolGRPC
		if err == nil {
			o.grpcTarget, o.grpcTLS = u.Host, u.Scheme == "https"
		}
	}
	if !m.Enabled {
		o.tracesURL = ""
	}
	if !m.LogsEnabled {
		o.logsURL = ""
	}
	attrs := map[string]any{"service.name": m.ServiceName}
	if m.ServiceVersion != "" {
		attrs["service.version"] = m.ServiceVersion
	}
	if m.ServiceNamespace != "" {
		attrs["service.namespace"] = m.ServiceNamespace
	}
	o.resource = &resourcepb.Resource{Attributes: otlpjson.KeyValues(attrs)}
	return o
}

// parseHeaders reads "k1=v1,k2=v2" (values URL-encoded), as
// OTEL_EXPORTER_OTLP_HEADERS holds them.
func parseHeaders(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		if dv, err := url.QueryUnescape(strings.TrimSpace(v)); err == nil {
			v = dv
		}
		out[k] = v
	}
	return out
}

// exporter batches spans and logs and POSTs them as OTLP protobuf.
type exporter struct {
	opts   exportOptions
	logger *slog.Logger
	client *http.Client
	grpc   *grpcClients // with protocol grpc

	mu    sync.Mutex
	spans []*Span
	logs  []*LogRecord
	wake  chan struct{} // cap 1: a batch is full

	dropped, exported, failed atomic.Uint64
	lastWarn                  atomic.Int64 // unix nanos of the last failure logged
}

func newExporter(o exportOptions, log *slog.Logger) (*exporter, error) {
	x := &exporter{opts: o, logger: log, client: &http.Client{Timeout: o.timeout}, wake: make(chan struct{}, 1)}
	if o.protocol == protocolGRPC {
		g, err := newGRPCClients(o)
		if err != nil {
			return nil, err
		}
		x.grpc = g
	}
	return x, nil
}

// span queues a span for export; past exportQueueLimit it is dropped and
// counted.
func (x *exporter) span(s *Span) {
	if x.opts.tracesURL == "" {
		return
	}
	x.mu.Lock()
	full := len(x.spans) >= exportQueueLimit
	if !full {
		x.spans = append(x.spans, s)
	}
	ready := len(x.spans) >= x.opts.spanBatch
	x.mu.Unlock()
	x.after(full, ready)
}

// log queues a log record for export, like span.
func (x *exporter) log(r *LogRecord) {
	if x.opts.logsURL == "" {
		return
	}
	x.mu.Lock()
	full := len(x.logs) >= exportQueueLimit
	if !full {
		x.logs = append(x.logs, r)
	}
	ready := len(x.logs) >= x.opts.logBatch
	x.mu.Unlock()
	x.after(full, ready)
}

func (x *exporter) after(dropped, ready bool) {
	if dropped {
		x.dropped.Add(1)
	}
	if ready {
		select {
		case x.wake <- struct{}{}:
		default:
		}
	}
}

// run flushes on every interval and whenever a batch fills, until ctx
// ends; then it makes one last bounded flush.
func (x *exporter) run(ctx context.Context) {
	t := time.NewTicker(x.opts.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			x.flush(fctx)
			cancel()
			if x.grpc != nil {
				x.grpc.close()
			}
			return
		case <-t.C:
		case <-x.wake:
		}
		x.flush(ctx)
	}
}

// flush sends everything queued, in batches.
func (x *exporter) flush(ctx context.Context) {
	for {
		x.mu.Lock()
		spans := x.spans[:min(len(x.spans), x.opts.spanBatch)]
		x.spans = x.spans[len(spans):]
		logs := x.logs[:min(len(x.logs), x.opts.logBatch)]
		x.logs = x.logs[len(logs):]
		if len(x.spans) == 0 {
			x.spans = nil // let the backing array go
		}
		if len(x.logs) == 0 {
			x.logs = nil
		}
		x.mu.Unlock()
		if len(spans) == 0 && len(logs) == 0 {
			return
		}
		if len(spans) > 0 {
			req := traceRequest(spans, x.opts.resource)
			if x.grpc != nil {
				x.done(x.grpc.exportTraces(ctx, req, x.opts.timeout), x.opts.grpcTarget, len(spans))
			} else {
				x.post(ctx, x.opts.tracesURL, req, len(spans))
			}
		}
		if len(logs) > 0 {
			req := logsRequest(logs, x.opts.resource)
			if x.grpc != nil {
				x.done(x.grpc.exportLogs(ctx, req, x.opts.timeout), x.opts.grpcTarget, len(logs))
			} else {
				x.post(ctx, x.opts.logsURL, req, len(logs))
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (x *exporter) post(ctx context.Context, u string, msg proto.Message, n int) {
	err := func() error {
		body, err := proto.Marshal(msg)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-protobuf")
		for k, v := range x.opts.headers {
			req.Header.Set(k, v)
		}
		resp, err := x.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("collector answered %s", resp.Status)
		}
		return nil
	}()
	x.done(err, u, n)
}

// done counts an export's outcome and warns (at most once a minute) about
// failures.
func (x *exporter) done(err error, u string, n int) {
	if err == nil {
		x.exported.Add(uint64(n))
		return
	}
	x.failed.Add(uint64(n))
	// At most one warning per minute.
	now := time.Now().UnixNano()
	if last := x.lastWarn.Load(); now-last > int64(time.Minute) && x.lastWarn.CompareAndSwap(last, now) {
		x.logger.Warn("OTLP export failed; items dropped", "url", u, "items", n, "err", err)
	}
}

type scopeKey struct {
	res   *resourcepb.Resource
	scope *commonpb.InstrumentationScope
}

// engineScope names the engine as the instrumentation of its own spans.
var engineScope = &commonpb.InstrumentationScope{Name: "iii-engine"}

// traceRequest groups spans by resource and scope: engine spans under the
// engine's resource, worker spans under the resource they came with.
func traceRequest(spans []*Span, engineRes *resourcepb.Resource) *coltracepb.ExportTraceServiceRequest {
	req := &coltracepb.ExportTraceServiceRequest{}
	byRes := map[*resourcepb.Resource]*tracepb.ResourceSpans{}
	byScope := map[scopeKey]*tracepb.ScopeSpans{}
	for _, s := range spans {
		res, scope, sp := s.resource, s.scope, s.otlp
		if sp == nil {
			res, scope, sp = engineRes, engineScope, engineSpanProto(s)
		}
		rs := byRes[res]
		if rs == nil {
			rs = &tracepb.ResourceSpans{Resource: res}
			byRes[res] = rs
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		k := scopeKey{res, scope}
		ss := byScope[k]
		if ss == nil {
			ss = &tracepb.ScopeSpans{Scope: scope}
			byScope[k] = ss
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		ss.Spans = append(ss.Spans, sp)
	}
	return req
}

// idBytes decodes a hex id of n bytes; anything else is no id.
func idBytes(s string, n int) []byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != n {
		return nil
	}
	return b
}

// engineSpanProto is the OTLP form of an engine span.
func engineSpanProto(s *Span) *tracepb.Span {
	sp := &tracepb.Span{
		TraceId: idBytes(s.TraceID, 16), SpanId: idBytes(s.SpanID, 8), ParentSpanId: idBytes(s.ParentSpanID, 8),
		Name: s.Name, Kind: tracepb.Span_SPAN_KIND_SERVER,
		StartTimeUnixNano: s.StartTimeUnixNano, EndTimeUnixNano: s.EndTimeUnixNano,
		Attributes: otlpjson.KeyValues(s.attributes()),
		Status:     &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK},
	}
	if s.Status != StatusOK {
		sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: s.StatusDescription}
	}
	return sp
}

// logsRequest groups log records by resource and scope like traceRequest;
// records made in the engine (engine::log::*, worker output) get a
// resource per service name.
func logsRequest(recs []*LogRecord, engineRes *resourcepb.Resource) *collogspb.ExportLogsServiceRequest {
	req := &collogspb.ExportLogsServiceRequest{}
	byRes := map[*resourcepb.Resource]*logspb.ResourceLogs{}
	bySvc := map[string]*resourcepb.Resource{}
	byScope := map[scopeKey]*logspb.ScopeLogs{}
	for _, r := range recs {
		res, scope, lr := r.resource, r.scope, r.otlp
		if lr == nil {
			res, scope, lr = bySvc[r.ServiceName], engineScope, engineLogProto(r)
			if res == nil {
				res = engineRes
				if r.ServiceName != "" {
					res = &resourcepb.Resource{Attributes: otlpjson.KeyValues(r.Resource)}
				}
				bySvc[r.ServiceName] = res
			}
		}
		rl := byRes[res]
		if rl == nil {
			rl = &logspb.ResourceLogs{Resource: res}
			byRes[res] = rl
			req.ResourceLogs = append(req.ResourceLogs, rl)
		}
		k := scopeKey{res, scope}
		sl := byScope[k]
		if sl == nil {
			sl = &logspb.ScopeLogs{Scope: scope}
			byScope[k] = sl
			rl.ScopeLogs = append(rl.ScopeLogs, sl)
		}
		sl.LogRecords = append(sl.LogRecords, lr)
	}
	return req
}

func engineLogProto(r *LogRecord) *logspb.LogRecord {
	attrs := r.Attributes
	if r.Worker != "" {
		attrs = make(map[string]any, len(r.Attributes)+1)
		for k, v := range r.Attributes {
			attrs[k] = v
		}
		attrs["iii.worker"] = r.Worker
	}
	return &logspb.LogRecord{
		TimeUnixNano: r.TimestampUnixNano, ObservedTimeUnixNano: r.ObservedTimestampUnixNano,
		SeverityNumber: logspb.SeverityNumber(r.SeverityNumber), SeverityText: r.SeverityText,
		Body:       &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: r.Body}},
		Attributes: otlpjson.KeyValues(attrs), TraceId: idBytes(r.TraceID, 16), SpanId: idBytes(r.SpanID, 8),
	}
}

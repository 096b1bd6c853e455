package sdk

// Tracing with OpenTelemetry.
//
// Dependencies, kept to what spans need: the OpenTelemetry API
// (go.opentelemetry.io/otel and .../otel/trace: spans, W3C trace context
// and baggage propagation) and the OpenTelemetry SDK
// (go.opentelemetry.io/otel/sdk: the default tracer provider and its batch
// span processor). Spans are encoded as OTLP/JSON by otlp.go rather than
// through go.opentelemetry.io/proto/otlp and protobuf: `iii new worker
// --lang go` copies this package into scaffolds that build offline from
// the module cache, every module is one more entry in their go.mod and
// go.sum (templates.GoDeps), and span JSON is small. The engine decodes
// the frames with the OTLP proto types; the tests decode what otlp.go
// writes with the engine's decoder.

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/iii-workbench/iii/engine/protocol"
)

// Defaults of the default tracer provider.
const (
	// DefaultServiceName is the service.name of the worker's spans;
	// $OTEL_SERVICE_NAME overrides it (the Node SDK's is "iii-node").
	DefaultServiceName = "iii-go"
	// DefaultSpansFlushInterval is how long a finished span may wait
	// before it is sent to the engine; $OTEL_SPANS_FLUSH_INTERVAL_MS
	// overrides it, as in the Node SDK.
	DefaultSpansFlushInterval = 100 * time.Millisecond
)

const (
	// tracerName is the instrumentation scope of the SDK's own spans.
	tracerName = "github.com/iii-workbench/iii/sdk"
	// spanQueueLimit bounds the finished spans waiting for export (the
	// batch span processor drops what does not fit).
	spanQueueLimit = 2048
	// maxSpansPerFrame is the export batch size: one telemetry frame.
	maxSpansPerFrame = 512
	// maxTelemetryFrame bounds one OTLP frame; larger batches are split,
	// and a single span larger than this is dropped. The engine accepts
	// up to 4 MiB.
	maxTelemetryFrame = 1 << 20
)

// Span attributes of the SDK's spans.
const (
	attrFunctionID   = "iii.function.id"
	attrInvocationID = "iii.invocation.id"
	attrInvokedName  = "faas.invoked_name"
	attrAction       = "iii.action"
	attrQueue        = "iii.queue"
	attrErrorType    = "error.type"
)

// propagator reads and writes the traceparent and baggage strings of
// invokefunction messages.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// WithTracerProvider makes the worker create its spans (see the package
// doc, Tracing) with tp instead of its default provider, which sends them
// to the engine. The worker neither flushes nor shuts tp down. It wins over
// WithTelemetry.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// WithTelemetry turns sending spans to the engine on or off. It is on by
// default unless $OTEL_ENABLED or $III_TELEMETRY is false, 0, no or off.
// Off, the worker creates no spans and forwards the incoming trace context
// unchanged, so the engine's spans still form one trace.
func WithTelemetry(on bool) Option {
	return func(o *options) { o.telemetry = &on }
}

// telemetryEnabled applies the option, else the environment.
func telemetryEnabled(o options) bool {
	if o.telemetry != nil {
		return *o.telemetry
	}
	for _, k := range []string{"OTEL_ENABLED", "III_TELEMETRY"} {
		if v, ok := os.LookupEnv(k); ok {
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "false", "0", "no", "off":
				return false
			}
		}
	}
	return true
}

// TelemetryStats counts the spans of the default tracer provider.
type TelemetryStats struct {
	// SpansSent were written to the engine socket.
	SpansSent uint64
	// SpansDropped were not: no connection at the time, the telemetry
	// queue was full (64 frames), or a span was too large for a frame.
	SpansDropped uint64
}

// TelemetryStats reports how many spans were sent to the engine and how
// many were dropped.
func (w *Worker) TelemetryStats() TelemetryStats {
	return TelemetryStats{SpansSent: w.spansSent.Load(), SpansDropped: w.out.droppedSpans()}
}

// TracerProvider is the provider of the worker's spans: the one given to
// WithTracerProvider, the default one that sends spans to the engine, or a
// no-op one with telemetry off. Spans a handler starts with it under its
// ctx nest under the handler's execute span.
func (w *Worker) TracerProvider() trace.TracerProvider { return w.tr.provider }

// FlushTelemetry hands every finished span to the outbound queue (or, with
// WithTracerProvider, calls the provider's ForceFlush if it has one). It
// does not wait for the socket write.
func (w *Worker) FlushTelemetry(ctx context.Context) error {
	if f, ok := w.tr.provider.(interface{ ForceFlush(context.Context) error }); ok {
		return f.ForceFlush(ctx)
	}
	return nil
}

// tracing is a worker's tracer and, when the worker made it, its provider.
type tracing struct {
	provider trace.TracerProvider
	tracer   trace.Tracer
	owned    *sdktrace.TracerProvider // the default provider: shut down by Close
	off      bool                     // telemetry is off: provider is a no-op
}

// newTracing picks the worker's tracer provider. The default one batches
// finished spans (spanQueueLimit, flushed every DefaultSpansFlushInterval)
// and queues them as OTLP frames on the worker's socket.
func newTracing(o options, out *outbox) tracing {
	var t tracing
	switch {
	case o.tracerProvider != nil:
		t.provider = o.tracerProvider
	case !telemetryEnabled(o):
		t.provider, t.off = noop.NewTracerProvider(), true
	default:
		t.owned = sdktrace.NewTracerProvider(
			sdktrace.WithResource(workerResource()),
			sdktrace.WithBatcher(&spanExporter{out: out},
				sdktrace.WithBatchTimeout(flushInterval()),
				sdktrace.WithMaxQueueSize(spanQueueLimit),
				sdktrace.WithMaxExportBatchSize(maxSpansPerFrame)),
		)
		t.provider = t.owned
	}
	t.tracer = t.provider.Tracer(tracerName, trace.WithInstrumentationVersion(Version))
	return t
}

// shutdown flushes and stops the default provider, within ctx.
func (t tracing) shutdown(ctx context.Context) error {
	if t.owned == nil {
		return nil
	}
	return t.owned.Shutdown(ctx)
}

// workerResource describes the worker process, like the Node SDK's:
// service.name, service.version, service.instance.id (and namespace), over
// the OpenTelemetry defaults (telemetry.sdk.*, $OTEL_RESOURCE_ATTRIBUTES).
func workerResource() *sdkresource.Resource {
	attrs := []attribute.KeyValue{
		attribute.String("service.name", envOr("OTEL_SERVICE_NAME", DefaultServiceName)),
		attribute.String("service.version", envOr("SERVICE_VERSION", "unknown")),
		attribute.String("service.instance.id", envOr("SERVICE_INSTANCE_ID", uuid.NewString())),
	}
	if ns := os.Getenv("SERVICE_NAMESPACE"); ns != "" {
		attrs = append(attrs, attribute.String("service.namespace", ns))
	}
	r, err := sdkresource.Merge(sdkresource.Default(), sdkresource.NewSchemaless(attrs...))
	if err != nil { // only on conflicting schema URLs; ours has none
		return sdkresource.NewSchemaless(attrs...)
	}
	return r
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// flushInterval is $OTEL_SPANS_FLUSH_INTERVAL_MS, else the default.
func flushInterval() time.Duration {
	if v := strings.TrimSpace(os.Getenv("OTEL_SPANS_FLUSH_INTERVAL_MS")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	return DefaultSpansFlushInterval
}

// startExecute starts the SERVER span "execute <function>" of an incoming
// call, the child of the call's traceparent, with the call's baggage in
// ctx and, as attributes, on the span (as the Node SDK does).
func (t tracing) startExecute(ctx context.Context, m protocol.InvokeFunction) (context.Context, trace.Span) {
	if t.off && m.Traceparent == "" && m.Baggage == "" {
		return ctx, nil // a no-op span of no trace: nothing to carry
	}
	ctx = propagator.Extract(ctx, propagation.MapCarrier{"traceparent": m.Traceparent, "baggage": m.Baggage})
	members := baggage.FromContext(ctx).Members()
	attrs := make([]attribute.KeyValue, 0, len(members)+2)
	for _, mb := range members {
		attrs = append(attrs, attribute.String(mb.Key(), mb.Value()))
	}
	attrs = append(attrs, attribute.String(attrFunctionID, m.FunctionID))
	if m.InvocationID != "" {
		attrs = append(attrs, attribute.String(attrInvocationID, m.InvocationID))
	}
	return t.tracer.Start(ctx, "execute "+m.FunctionID,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// startCall starts the CLIENT span "call <function>" of an outgoing call
// and returns the traceparent and baggage the call carries. Only a call
// made inside a trace (ctx holds a span, as a handler's ctx does) gets a
// span; a call outside one carries no traceparent and the engine starts
// the trace, as for a Node worker. A nil span means there is none.
func (t tracing) startCall(ctx context.Context, fn string, act *Action) (trace.Span, string, string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// A context made from a handler's Invocation without its span.
		if inv, ok := InvocationFromContext(ctx); ok {
			ctx = propagator.Extract(ctx, propagation.MapCarrier{"traceparent": inv.Traceparent, "baggage": inv.Baggage})
		}
	}
	var span trace.Span
	if trace.SpanContextFromContext(ctx).IsValid() {
		attrs := []attribute.KeyValue{attribute.String(attrInvokedName, fn)}
		if act != nil {
			attrs = append(attrs, attribute.String(attrAction, act.typ))
			if act.queue != "" {
				attrs = append(attrs, attribute.String(attrQueue, act.queue))
			}
		}
		ctx, span = t.tracer.Start(ctx, "call "+fn,
			trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return span, c["traceparent"], c["baggage"]
}

// endSpan ends span (nil is fine) as ok, or with eb as its error: the
// code as error.type, and an exception event.
func endSpan(span trace.Span, eb *protocol.ErrorBody) {
	if span == nil {
		return
	}
	if eb == nil {
		span.SetStatus(codes.Ok, "")
		span.End()
		return
	}
	attrs := []attribute.KeyValue{
		attribute.String("exception.type", eb.Code),
		attribute.String("exception.message", eb.Message),
	}
	if eb.Stacktrace != "" {
		attrs = append(attrs, attribute.String("exception.stacktrace", eb.Stacktrace))
	}
	span.AddEvent("exception", trace.WithAttributes(attrs...))
	span.SetAttributes(attribute.String(attrErrorType, eb.Code))
	span.SetStatus(codes.Error, eb.Message)
	span.End()
}

// endCall ends a call span with the outcome of Trigger: an error that is
// not the engine's or the callee's has error.type "_OTHER".
func endCall(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err == nil {
		endSpan(span, nil)
		return
	}
	var eb *protocol.ErrorBody
	if !errors.As(err, &eb) || eb == nil {
		eb = &protocol.ErrorBody{Code: "_OTHER", Message: err.Error()}
	}
	endSpan(span, eb)
}

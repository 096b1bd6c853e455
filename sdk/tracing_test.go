package sdk

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/iii-workbench/iii/engine/modules/observability/otlpjson"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
)

// gotSpan is a span as the engine's decoder reads an OTLP frame.
type gotSpan struct {
	TraceID, SpanID, Parent string
	Name                    string
	Kind                    int32
	Status                  int32 // OTLP: 0 unset, 1 ok, 2 error
	StatusMessage           string
	Attrs                   map[string]any
	Events                  []string
	Scope                   string
	Resource                map[string]any
	Start, End              uint64
}

// decodeFrame decodes one OTLP payload with the observability module's
// decoder.
func decodeFrame(t *testing.T, payload []byte) []gotSpan {
	t.Helper()
	req, err := otlpjson.DecodeTraces(payload)
	if err != nil {
		t.Fatalf("engine decoder rejects the SDK's frame: %v\n%s", err, payload)
	}
	var out []gotSpan
	for _, rs := range req.ResourceSpans {
		res := otlpjson.Attributes(rs.GetResource().GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				g := gotSpan{
					TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					Parent: hex.EncodeToString(s.ParentSpanId), Name: s.Name, Kind: int32(s.Kind),
					Status: int32(s.GetStatus().GetCode()), StatusMessage: s.GetStatus().GetMessage(),
					Attrs: otlpjson.Attributes(s.Attributes), Scope: ss.GetScope().GetName(), Resource: res,
					Start: s.StartTimeUnixNano, End: s.EndTimeUnixNano,
				}
				for _, ev := range s.Events {
					g.Events = append(g.Events, ev.Name)
				}
				out = append(out, g)
			}
		}
	}
	return out
}

// collectSpans reads fc's OTLP frames until every name in want arrived.
func collectSpans(ctx context.Context, t *testing.T, fc *fakeConn, want ...string) map[string]gotSpan {
	t.Helper()
	got := map[string]gotSpan{}
	for {
		missing := false
		for _, n := range want {
			if _, ok := got[n]; !ok {
				missing = true
			}
		}
		if !missing {
			return got
		}
		select {
		case payload := <-fc.otlp:
			for _, s := range decodeFrame(t, payload) {
				got[s.Name] = s
			}
		case <-ctx.Done():
			t.Fatalf("spans %v: have %v: %v", want, keys(got), ctx.Err())
		}
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

const (
	testTraceID = "0af7651916cd43dd8448eb211c80319c"
	testParent  = "b7ad6b7169203331"
	testTP      = "00-" + testTraceID + "-" + testParent + "-01"
)

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`)

// A handler runs in an execute span under the incoming traceparent; a
// call it makes is a call span under that, and the call's traceparent
// names the call span; spans the handler starts itself nest too. All
// of them reach the engine in OTLP frames its decoder accepts.
func TestTracingSpans(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "")
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe, WithTelemetry(true))
	err := w.RegisterFunction("outer", func(ctx context.Context, _ json.RawMessage) (any, error) {
		_, span := w.TracerProvider().Tracer("user").Start(ctx, "work")
		span.End()
		if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "inner"}); err != nil {
			return nil, err
		}
		return w.Trigger(ctx, TriggerRequest{FunctionID: "broken"})
	})
	if err != nil {
		t.Fatal(err)
	}
	const invID = "9b2f8a1e-3c4d-4e5f-8a6b-7c8d9e0f1a2b"
	fc.send(protocol.InvokeFunction{InvocationID: invID, FunctionID: "outer", Data: []byte(`{}`),
		Traceparent: testTP, Baggage: "tenant=a,iii.function.id=outer"})

	inner := waitFor(ctx, t, fc, func(m protocol.InvokeFunction) bool { return m.FunctionID == "inner" })
	fc.send(protocol.InvocationResult{InvocationID: inner.InvocationID, FunctionID: "inner", Result: []byte(`1`)})
	broken := waitFor(ctx, t, fc, func(m protocol.InvokeFunction) bool { return m.FunctionID == "broken" })
	fc.send(protocol.InvocationResult{InvocationID: broken.InvocationID, FunctionID: "broken",
		Error: &protocol.ErrorBody{Code: "bad_input", Message: "no"}})
	if r := resultFor(ctx, t, fc, invID); r.Error == nil || r.Error.Code != "bad_input" {
		t.Fatalf("outer result: %+v, want error bad_input", r)
	}

	spans := collectSpans(ctx, t, fc, "execute outer", "call inner", "call broken", "work")
	exec, callInner, callBroken, work := spans["execute outer"], spans["call inner"], spans["call broken"], spans["work"]
	for name, s := range spans {
		if s.TraceID != testTraceID {
			t.Errorf("%s: trace %s, want %s", name, s.TraceID, testTraceID)
		}
		if s.Resource["service.name"] != DefaultServiceName || s.Resource["telemetry.sdk.language"] != "go" {
			t.Errorf("%s: resource %v, want service.name %s and the otel defaults", name, s.Resource, DefaultServiceName)
		}
		if s.Start == 0 || s.End < s.Start {
			t.Errorf("%s: times [%d, %d]", name, s.Start, s.End)
		}
	}
	if exec.Parent != testParent || exec.Kind != int32(trace.SpanKindServer) || exec.Scope != tracerName || exec.Status != 2 {
		t.Errorf("execute span %+v; want SERVER, parent %s, scope %s, status error", exec, testParent, tracerName)
	}
	wantAttrs := map[string]any{"tenant": "a", attrFunctionID: "outer", attrInvocationID: invID, attrErrorType: "bad_input"}
	if !reflect.DeepEqual(exec.Attrs, wantAttrs) {
		t.Errorf("execute span attributes %v, want %v", exec.Attrs, wantAttrs)
	}
	for _, c := range []struct {
		s    gotSpan
		fn   string
		sent protocol.InvokeFunction
	}{{callInner, "inner", inner}, {callBroken, "broken", broken}} {
		m := traceparentRE.FindStringSubmatch(c.sent.Traceparent)
		if m == nil || m[1] != testTraceID || m[2] != c.s.SpanID {
			t.Errorf("%s sent with traceparent %q; want trace %s, parent its call span %s", c.fn, c.sent.Traceparent, testTraceID, c.s.SpanID)
		}
		if !strings.Contains(c.sent.Baggage, "tenant=a") {
			t.Errorf("%s sent with baggage %q; want the caller's tenant=a", c.fn, c.sent.Baggage)
		}
		if c.s.Parent != exec.SpanID || c.s.Kind != int32(trace.SpanKindClient) || c.s.Attrs[attrInvokedName] != c.fn {
			t.Errorf("call span %+v; want CLIENT under %s, %s=%s", c.s, exec.SpanID, attrInvokedName, c.fn)
		}
	}
	if callInner.Status != 1 {
		t.Errorf("call inner: status %d, want 1 (ok)", callInner.Status)
	}
	if callBroken.Status != 2 || callBroken.StatusMessage != "no" || callBroken.Attrs[attrErrorType] != "bad_input" ||
		!reflect.DeepEqual(callBroken.Events, []string{"exception"}) {
		t.Errorf("call broken: %+v; want status error \"no\", error.type bad_input, an exception event", callBroken)
	}
	if work.Parent != exec.SpanID || work.Scope != "user" {
		t.Errorf("handler's own span %+v; want scope user under %s", work, exec.SpanID)
	}
	poll(ctx, t, "spans counted as sent", func() bool { return w.TelemetryStats().SpansSent >= 4 })
	if st := w.TelemetryStats(); st.SpansDropped != 0 {
		t.Errorf("stats %+v: want nothing dropped", st)
	}
}

// A call made outside any trace gets no span and no traceparent: the
// engine starts the trace.
func TestTracingOutsideTrace(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe, WithTelemetry(true))
	if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "f", Action: Void()}); err != nil {
		t.Fatal(err)
	}
	inv := expect[protocol.InvokeFunction](ctx, t, fc)
	if inv.FunctionID != "f" || inv.Traceparent != "" {
		t.Errorf("call outside a trace: %s with traceparent %q, want f without one", inv.FunctionID, inv.Traceparent)
	}
	// A span of the test's own, sent after the call: once it arrived,
	// everything before it did.
	_, marker := w.TracerProvider().Tracer("test").Start(ctx, "marker")
	marker.End()
	if err := w.FlushTelemetry(ctx); err != nil {
		t.Fatal(err)
	}
	spans := collectSpans(ctx, t, fc, "marker")
	if _, ok := spans["call f"]; ok || len(spans) != 1 {
		t.Errorf("spans %v; want only the marker", keys(spans))
	}

	// A span of the caller's own makes the call part of its trace.
	sctx, root := w.TracerProvider().Tracer("test").Start(ctx, "root")
	if _, err := w.Trigger(sctx, TriggerRequest{FunctionID: "g", Action: Void()}); err != nil {
		t.Fatal(err)
	}
	root.End()
	inv = expect[protocol.InvokeFunction](ctx, t, fc)
	spans = collectSpans(ctx, t, fc, "root", "call g")
	if m := traceparentRE.FindStringSubmatch(inv.Traceparent); m == nil || m[2] != spans["call g"].SpanID ||
		spans["call g"].Parent != spans["root"].SpanID || spans["call g"].Attrs[attrAction] != protocol.ActionVoid {
		t.Errorf("call g traceparent %q, spans %+v; want call g (void) under root, named by the traceparent", inv.Traceparent, spans)
	}
}

func TestTelemetryEnabled(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		env  map[string]string
		opt  *bool
		want bool
	}{
		{nil, nil, true},
		{map[string]string{"OTEL_ENABLED": "false"}, nil, false},
		{map[string]string{"OTEL_ENABLED": "0"}, nil, false},
		{map[string]string{"OTEL_ENABLED": "true"}, nil, true},
		{map[string]string{"III_TELEMETRY": "off"}, nil, false},
		{map[string]string{"III_TELEMETRY": "No"}, nil, false},
		{map[string]string{"III_TELEMETRY": "on"}, nil, true},
		{map[string]string{"OTEL_ENABLED": "false"}, &on, true},
		{nil, &off, false},
	} {
		t.Run("", func(t *testing.T) {
			t.Setenv("OTEL_ENABLED", "")
			t.Setenv("III_TELEMETRY", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if got := telemetryEnabled(options{telemetry: tc.opt}); got != tc.want {
				t.Errorf("env %v, option %v: enabled %v, want %v", tc.env, tc.opt, got, tc.want)
			}
		})
	}
}

// The environment turns telemetry off for a worker without options.
func TestTelemetryOffByEnv(t *testing.T) {
	t.Setenv("III_TELEMETRY", "off")
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, _ := connect(ctx, t, fe)
	if _, ok := w.TracerProvider().(noop.TracerProvider); !ok {
		t.Errorf("III_TELEMETRY=off: tracer provider %T, want the no-op one", w.TracerProvider())
	}
}

// WithTracerProvider: spans go to the caller's provider, none to the
// engine, and Close leaves the provider alone.
func TestWithTracerProvider(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	w, fc := connect(ctx, t, fe, WithTracerProvider(tp))
	if err := w.RegisterFunction("f", func(context.Context, json.RawMessage) (any, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	id := fc.invoke("f", `{}`)
	resultFor(ctx, t, fc, id)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	fc.closed(ctx, t)
	ended := rec.Ended()
	if len(ended) != 1 || ended[0].Name() != "execute f" {
		t.Fatalf("recorded spans %v, want execute f", ended)
	}
	if len(fc.otlp) != 0 {
		t.Errorf("%d OTLP frames sent with a provider of the caller's, want none", len(fc.otlp))
	}
	_, span := tp.Tracer("t").Start(ctx, "after close")
	span.End()
	if len(rec.Ended()) != 2 {
		t.Errorf("the caller's provider stopped working after Close")
	}
}

// Spans finished while disconnected are dropped and counted, without
// blocking; after the reconnect they flow again.
func TestTelemetryDisconnectedDrops(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe, WithTelemetry(true))
	reopen := disconnect(ctx, t, fe, fc)
	tracer := w.TracerProvider().Tracer("test")
	for range 10 {
		_, span := tracer.Start(ctx, "lost")
		span.End()
	}
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := w.FlushTelemetry(fctx); err != nil {
		t.Fatalf("FlushTelemetry while disconnected: %v", err)
	}
	if st := w.TelemetryStats(); st.SpansDropped != 10 || st.SpansSent != 0 {
		t.Errorf("stats after 10 spans while disconnected: %+v, want 10 dropped, none sent", st)
	}
	reopen()
	fc2 := fe.conn(ctx, t)
	poll(ctx, t, "reconnected", func() bool {
		w.out.mu.Lock()
		defer w.out.mu.Unlock()
		return w.out.connected
	})
	_, span := tracer.Start(ctx, "kept")
	span.End()
	spans := collectSpans(ctx, t, fc2, "kept")
	if _, ok := spans["lost"]; ok {
		t.Errorf("a dropped span arrived after the reconnect")
	}
}

// Close sends the spans still waiting in the batch processor before it
// closes the socket.
func TestCloseFlushesSpans(t *testing.T) {
	t.Setenv("OTEL_SPANS_FLUSH_INTERVAL_MS", "600000")
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe, WithTelemetry(true))
	if err := w.RegisterFunction("f", func(context.Context, json.RawMessage) (any, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	id := fc.invoke("f", `{}`)
	resultFor(ctx, t, fc, id)
	if n := len(fc.otlp); n != 0 {
		t.Fatalf("%d frames before Close with a 10 minute flush interval", n)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	collectSpans(ctx, t, fc, "execute f")
	if st := w.TelemetryStats(); st.SpansSent != 1 {
		t.Errorf("stats %+v, want 1 sent", st)
	}
}

// The telemetry queue has a limit of its own: past it frames are dropped
// and counted, calls are unaffected; a new connection drops the frames the
// old one did not send.
func TestOutboxTelemetry(t *testing.T) {
	q := newOutbox(2)
	tel := entry{frame: []byte("OTLP{}"), kind: kindTelemetry, spans: 3}
	if err := q.push(tel); !errors.Is(err, errDisconnected) || q.droppedSpans() != 3 {
		t.Fatalf("telemetry while disconnected: %v, dropped %d; want errDisconnected, 3", err, q.droppedSpans())
	}
	q.connect(nil, nil, func(entry) bool { return true })
	for i := range telemetryQueueLimit {
		if err := q.push(tel); err != nil {
			t.Fatalf("telemetry frame %d: %v", i, err)
		}
	}
	if err := q.push(tel); !errors.Is(err, ErrQueueFull) || q.droppedSpans() != 6 {
		t.Fatalf("telemetry past the limit: %v, dropped %d; want ErrQueueFull, 6", err, q.droppedSpans())
	}
	for i := range 2 {
		if err := q.push(entry{frame: []byte("call"), kind: kindCall}); err != nil {
			t.Fatalf("call %d with the telemetry queue full: %v", i, err)
		}
	}
	batch := q.take()
	q.requeue(batch)
	if q.telemetry != telemetryQueueLimit {
		t.Fatalf("telemetry count after requeue: %d, want %d", q.telemetry, telemetryQueueLimit)
	}
	q.disconnect()
	q.connect(nil, nil, func(entry) bool { return true })
	if got := frames(q.take()); !reflect.DeepEqual(got, []string{"call", "call"}) {
		t.Errorf("after reconnect: %v, want the two calls", got)
	}
	if want := uint64(6 + 3*telemetryQueueLimit); q.droppedSpans() != want {
		t.Errorf("dropped spans: %d, want %d", q.droppedSpans(), want)
	}
}

// encodeSpans writes what the engine's decoder reads: every attribute type,
// events, links, statuses, kinds, parents, resource and scopes.
func TestEncodeSpans(t *testing.T) {
	tid, _ := trace.TraceIDFromHex(testTraceID)
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	pid, _ := trace.SpanIDFromHex(testParent)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: pid, TraceFlags: trace.FlagsSampled, Remote: true})
	res := sdkresource.NewSchemaless(attribute.String("service.name", "svc"))
	start := time.Unix(1712000000, 123456789)
	a := tracetest.SpanStub{
		Name: "a", SpanContext: sc, Parent: parent, SpanKind: trace.SpanKindServer,
		StartTime: start, EndTime: start.Add(time.Millisecond),
		Attributes: []attribute.KeyValue{
			attribute.String("s", "x"), attribute.Bool("b", true), attribute.Int64("i", math.MaxInt64),
			attribute.Float64("f", 1.5), attribute.Float64("nan", math.NaN()),
			attribute.StringSlice("ss", []string{"p", "q"}), attribute.Int64Slice("is", []int64{1, -2}),
			attribute.BoolSlice("bs", []bool{false}), attribute.Float64Slice("fs", []float64{0.25}),
			attribute.String("empty", ""), attribute.Bool("no", false), attribute.Int64("zero", 0),
			attribute.Float64("fzero", 0), attribute.ByteSlice("bytes", []byte{0xab, 0x01}),
			attribute.Slice("mixed", attribute.StringValue("m"), attribute.Int64Value(2)),
			attribute.Map("obj", attribute.String("k", "v"), attribute.Bool("t", true)),
		},
		Events:   []sdktrace.Event{{Name: "ev", Time: start, Attributes: []attribute.KeyValue{attribute.Int("n", 1)}}},
		Links:    []sdktrace.Link{{SpanContext: parent, Attributes: []attribute.KeyValue{attribute.String("l", "y")}}},
		Status:   sdktrace.Status{Code: codes.Error, Description: "boom"},
		Resource: res, InstrumentationScope: instrumentation.Scope{Name: "s1", Version: "v1"},
	}
	b := a
	b.Name, b.Parent, b.SpanKind, b.Attributes, b.Events, b.Links = "b", trace.SpanContext{}, trace.SpanKindClient, nil, nil, nil
	b.Status = sdktrace.Status{Code: codes.Ok}
	c := b
	c.Name, c.SpanKind, c.Status = "c", trace.SpanKindInternal, sdktrace.Status{}
	c.InstrumentationScope = instrumentation.Scope{Name: "s2"}

	frame, err := encodeSpans([]sdktrace.ReadOnlySpan{a.Snapshot(), b.Snapshot(), c.Snapshot()})
	if err != nil {
		t.Fatal(err)
	}
	payload, ok := strings.CutPrefix(string(frame), protocol.TelemetryTraces)
	if !ok {
		t.Fatalf("frame %.20q does not start with %s", frame, protocol.TelemetryTraces)
	}
	for _, want := range []string{`"traceId":"` + testTraceID + `"`, `"parentSpanId":"` + testParent + `"`,
		`"startTimeUnixNano":"1712000000123456789"`, `"intValue":"9223372036854775807"`, `"doubleValue":"NaN"`} {
		if !strings.Contains(payload, want) {
			t.Errorf("payload lacks %s:\n%s", want, payload)
		}
	}
	req, err := otlpjson.DecodeTraces([]byte(payload))
	if err != nil {
		t.Fatalf("engine decoder: %v\n%s", err, payload)
	}
	if n := len(req.ResourceSpans); n != 1 || len(req.ResourceSpans[0].ScopeSpans) != 2 {
		t.Fatalf("grouping: %d resources; want one with two scopes:\n%s", n, payload)
	}
	got := decodeFrame(t, []byte(payload))
	if len(got) != 3 {
		t.Fatalf("%d spans decoded, want 3", len(got))
	}
	ga, gb, gc := got[0], got[1], got[2]
	wantAttrs := map[string]any{"s": "x", "b": true, "i": int64(math.MaxInt64), "f": 1.5, "nan": "NaN",
		"ss": []any{"p", "q"}, "is": []any{int64(1), int64(-2)}, "bs": []any{false}, "fs": []any{0.25},
		"empty": "", "no": false, "zero": int64(0), "fzero": 0.0, "bytes": "ab01",
		"mixed": []any{"m", int64(2)}, "obj": map[string]any{"k": "v", "t": true}}
	if !reflect.DeepEqual(ga.Attrs, wantAttrs) {
		t.Errorf("attributes\n got %#v\nwant %#v", ga.Attrs, wantAttrs)
	}
	if ga.TraceID != testTraceID || ga.SpanID != "00f067aa0ba902b7" || ga.Parent != testParent || ga.Kind != 2 ||
		ga.Status != 2 || ga.StatusMessage != "boom" || ga.Scope != "s1" || ga.Resource["service.name"] != "svc" ||
		ga.Start != uint64(start.UnixNano()) || ga.End != uint64(start.Add(time.Millisecond).UnixNano()) ||
		!reflect.DeepEqual(ga.Events, []string{"ev"}) {
		t.Errorf("span a decoded as %+v", ga)
	}
	if gb.Parent != "" || gb.Kind != 3 || gb.Status != 1 || gb.Scope != "s1" {
		t.Errorf("span b decoded as %+v; want a root CLIENT span, status ok, scope s1", gb)
	}
	if gc.Kind != 1 || gc.Status != 0 || gc.Scope != "s2" {
		t.Errorf("span c decoded as %+v; want INTERNAL, unset, scope s2", gc)
	}
	sp := req.ResourceSpans[0].ScopeSpans[0].Spans[0]
	if len(sp.Links) != 1 || hex.EncodeToString(sp.Links[0].SpanId) != testParent || sp.Flags != 0x301 {
		t.Errorf("links %v, flags %#x; want the parent link, flags 0x301 (sampled, remote parent)", sp.Links, sp.Flags)
	}
}

func BenchmarkEncodeSpans(b *testing.B) {
	tid, _ := trace.TraceIDFromHex(testTraceID)
	res := sdkresource.NewSchemaless(attribute.String("service.name", "svc"))
	var spans []sdktrace.ReadOnlySpan
	for i := range 64 {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{byte(i + 1)}, TraceFlags: trace.FlagsSampled})
		spans = append(spans, tracetest.SpanStub{Name: "execute bench::echo", SpanContext: sc, Parent: sc,
			SpanKind: trace.SpanKindServer, StartTime: time.Now(), EndTime: time.Now(), Resource: res,
			Attributes: []attribute.KeyValue{attribute.String(attrFunctionID, "bench::echo"),
				attribute.String(attrInvocationID, "9b2f8a1e-3c4d-4e5f-8a6b-7c8d9e0f1a2b")},
			Status: sdktrace.Status{Code: codes.Ok}, InstrumentationScope: instrumentation.Scope{Name: tracerName}}.Snapshot())
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeSpans(spans); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
}

// A batch too large for one frame is split; a span too large for any
// frame is dropped and counted.
func TestExporterSplitsLargeBatches(t *testing.T) {
	q := newOutbox(16)
	q.connect(nil, nil, func(entry) bool { return true })
	e := &spanExporter{out: q}
	big := strings.Repeat("x", maxTelemetryFrame/3)
	var spans []sdktrace.ReadOnlySpan
	for i := range 6 {
		tid := trace.TraceID{1}
		sid := trace.SpanID{byte(i + 1)}
		spans = append(spans, tracetest.SpanStub{Name: "s", SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: sid}), Attributes: []attribute.KeyValue{attribute.String("big", big)}}.Snapshot())
	}
	huge := tracetest.SpanStub{Name: "huge", SpanContext: spans[0].SpanContext(),
		Attributes: []attribute.KeyValue{attribute.String("big", big+big+big+big)}}.Snapshot()
	if err := e.ExportSpans(context.Background(), append(spans, huge)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, en := range q.take() {
		if len(en.frame) > maxTelemetryFrame {
			t.Errorf("frame of %d bytes, limit %d", len(en.frame), maxTelemetryFrame)
		}
		got := decodeFrame(t, en.frame[len(protocol.TelemetryTraces):])
		if len(got) != en.spans {
			t.Errorf("frame counts %d spans, holds %d", en.spans, len(got))
		}
		n += len(got)
	}
	if n != 6 || q.droppedSpans() != 1 {
		t.Errorf("%d spans queued, %d dropped; want 6 and the huge one", n, q.droppedSpans())
	}
}

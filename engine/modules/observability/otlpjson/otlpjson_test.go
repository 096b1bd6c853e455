package otlpjson_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/iii-workbench/iii/engine/modules/observability/otlpjson"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The fixtures are frames the Node iii-sdk 0.22.1 sent (captured by the
// compat suite with COMPAT_CAPTURE_OTLP).
func TestDecodeNodeTraces(t *testing.T) {
	req, err := otlpjson.DecodeTraces(fixture(t, "node-traces.json"))
	if err != nil {
		t.Fatal(err)
	}
	rs := req.GetResourceSpans()
	if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 {
		t.Fatalf("resourceSpans %d; want 1 with 1 scope", len(rs))
	}
	spans := rs[0].GetScopeSpans()[0].GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	sp := spans[0]
	if got := hex.EncodeToString(sp.GetTraceId()); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("traceId %s (hex in, bytes out)", got)
	}
	if got := hex.EncodeToString(sp.GetSpanId()); got != "f5f2231afb87f287" {
		t.Errorf("spanId %s", got)
	}
	if got := hex.EncodeToString(sp.GetParentSpanId()); got != "1070bd85755a88d1" {
		t.Errorf("parentSpanId %s", got)
	}
	if sp.GetName() != "execute nodeotel::echo" || sp.GetKind() != 1 {
		t.Errorf("name %q kind %v", sp.GetName(), sp.GetKind())
	}
	if sp.GetStartTimeUnixNano() != 1795900022873000000 || sp.GetEndTimeUnixNano() != 1795900022873882628 {
		t.Errorf("times %d..%d (64-bit strings)", sp.GetStartTimeUnixNano(), sp.GetEndTimeUnixNano())
	}
	if len(sp.GetEvents()) != 2 || sp.GetStatus().GetCode() != 1 {
		t.Errorf("events %d status %v", len(sp.GetEvents()), sp.GetStatus())
	}
	if spans[1].GetName() != "compat-span" || len(spans[1].GetParentSpanId()) != 0 {
		t.Errorf("second span %q parent %x; want root compat-span", spans[1].GetName(), spans[1].GetParentSpanId())
	}
}

func TestDecodeNodeLogs(t *testing.T) {
	req, err := otlpjson.DecodeLogs(fixture(t, "node-logs.json"))
	if err != nil {
		t.Fatal(err)
	}
	lr := req.GetResourceLogs()[0].GetScopeLogs()[0].GetLogRecords()[0]
	if lr.GetSeverityNumber() != 13 || lr.GetBody().GetStringValue() != "hello from node" {
		t.Errorf("severity %v body %v", lr.GetSeverityNumber(), lr.GetBody())
	}
	if got := hex.EncodeToString(lr.GetTraceId()); got != "d207f001ab82b5935e5ec44f6756a325" {
		t.Errorf("traceId %s", got)
	}
	attrs := otlpjson.Attributes(lr.GetAttributes())
	want := map[string]any{"trace_id": "d207f001ab82b5935e5ec44f6756a325", "span_id": "62d298d9b024f052",
		"log.data": map[string]any{"order": "o-1"}}
	if !reflect.DeepEqual(attrs, want) {
		t.Errorf("attributes %v, want %v", attrs, want)
	}
}

func TestDecodeNodeMetrics(t *testing.T) {
	req, err := otlpjson.DecodeMetrics(fixture(t, "node-metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	ms := req.GetResourceMetrics()[0].GetScopeMetrics()[0].GetMetrics()
	if len(ms) == 0 || ms[0].GetName() != "iii.worker.memory.heap_used" || len(ms[0].GetGauge().GetDataPoints()) == 0 {
		t.Fatalf("metrics %v", ms)
	}
}

func TestDecodeIntegersAsNumbersOrStrings(t *testing.T) {
	for _, v := range []string{`"1712345678901234567"`, `1712345678901234567`} {
		doc := `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"n","startTimeUnixNano":` + v + `,"attributes":[{"key":"k","value":{"intValue":` + v + `}}]}]}]}]}`
		req, err := otlpjson.DecodeTraces([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		sp := req.GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()[0]
		if sp.GetStartTimeUnixNano() != 1712345678901234567 || sp.GetAttributes()[0].GetValue().GetIntValue() != 1712345678901234567 {
			t.Errorf("%s: start %d int %d", v, sp.GetStartTimeUnixNano(), sp.GetAttributes()[0].GetValue().GetIntValue())
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name, doc string
	}{
		{"empty", ``},
		{"not json", `hello`},
		{"truncated", `{"resourceSpans":[`},
		{"array", `[1,2]`},
		{"wrong shape", `{"resourceSpans":{"a":1}}`},
		{"wrong field type", `{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":7}]}]}]}`},
		{"bad id", `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz!"}]}]}]}`},
		{"trailing data", `{"resourceSpans":[]} {}`},
		{"invalid utf-8", "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"name\":\"\xff\"}]}]}]}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := otlpjson.DecodeTraces([]byte(tt.doc))
			if !errors.Is(err, otlpjson.ErrMalformed) {
				t.Errorf("DecodeTraces(%q) = %v, want ErrMalformed", tt.doc, err)
			}
		})
	}
}

func TestUnknownFieldsIgnored(t *testing.T) {
	_, err := otlpjson.DecodeLogs([]byte(`{"resourceLogs":[{"future":true,"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"},"newThing":1}]}]}]}`))
	if err != nil {
		t.Errorf("unknown fields: %v", err)
	}
}

func TestValueRoundTrip(t *testing.T) {
	in := map[string]any{"s": "x", "b": true, "i": int64(3), "f": 1.5,
		"a": []any{"y", int64(1)}, "m": map[string]any{"k": "v"}}
	got := otlpjson.Attributes(otlpjson.KeyValues(in))
	if !reflect.DeepEqual(got, in) {
		t.Errorf("round trip %v, want %v", got, in)
	}
	if v := otlpjson.Value(&commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{1, 255}}}); v != "01ff" {
		t.Errorf("bytes value %v, want hex", v)
	}
}

// FuzzDecode: no input panics, and whatever decodes re-encodes.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"node-traces.json", "node-logs.json", "node-metrics.json"} {
		b := fixture(f, name)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00","spanId":""}]}]}]}`))
	f.Add([]byte(strings.Repeat("[", 100)))
	f.Fuzz(func(t *testing.T, b []byte) {
		otlpjson.DecodeTraces(b)
		otlpjson.DecodeLogs(b)
		if req, err := otlpjson.DecodeMetrics(b); err == nil && req == nil {
			t.Fatal("nil request without error")
		}
	})
}

package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
)

const (
	uuidA = "3f0c8a4e-2b1d-4c6e-9f7a-0123456789ab"
	uuidB = "9a1e0d2c-7b6f-4e5d-8c3b-a1b2c3d4e5f6"
)

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// samples holds, for every message type, a fully populated message and a
// minimal one. Raw JSON is compact so it survives Encode byte for byte.
var samples = []struct {
	name string
	msg  Message
}{
	{"registerfunction/full", RegisterFunction{
		ID: "orders::create", Description: "Create an order",
		RequestFormat: raw(`{"type":"object"}`), ResponseFormat: raw(`{"type":"string"}`),
		Metadata: raw(`{"internal":true}`), Invocation: raw(`{"url":"http://x","method":"POST"}`),
	}},
	{"registerfunction/min", RegisterFunction{ID: "f"}},
	{"unregisterfunction", UnregisterFunction{ID: "orders::create"}},
	{"registertriggertype/full", RegisterTriggerType{
		ID: "webhook", Description: "Webhooks",
		TriggerRequestFormat: raw(`{"path":"string"}`), CallRequestFormat: raw(`[1,2]`),
	}},
	{"registertriggertype/min", RegisterTriggerType{ID: "webhook"}},
	{"unregistertriggertype", UnregisterTriggerType{ID: "webhook"}},
	{"registertrigger/full", RegisterTrigger{
		ID: uuidA, TriggerType: "http", FunctionID: "orders::create",
		Config: raw(`{"api_path":"/orders","http_method":"POST"}`), Metadata: raw(`{"team":"a"}`),
	}},
	{"registertrigger/null config", RegisterTrigger{ID: "t", TriggerType: "cron", FunctionID: "f", Config: raw(`null`)}},
	{"unregistertrigger/full", UnregisterTrigger{ID: uuidA, TriggerType: "http"}},
	{"unregistertrigger/min", UnregisterTrigger{ID: uuidA}},
	{"triggerregistrationresult/error", TriggerRegistrationResult{
		ID: uuidA, TriggerType: "http", FunctionID: "f",
		Error: &ErrorBody{Code: "trigger_registration_failed", Message: "route taken", Stacktrace: "at x"},
	}},
	{"triggerregistrationresult/ok", TriggerRegistrationResult{ID: uuidA, TriggerType: "http", FunctionID: "f"}},
	{"invokefunction/full", InvokeFunction{
		InvocationID: uuidA, FunctionID: "orders::create", Data: raw(`{"n":1,"s":"<&>"}`),
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Baggage: "k=v,k2=v2",
		Action: &Action{Type: ActionEnqueue, Queue: "default"}, Metadata: raw(`{"m":[1]}`),
	}},
	{"invokefunction/void", InvokeFunction{FunctionID: "engine::workers::register", Data: raw(`{"runtime":"go"}`), Action: &Action{Type: ActionVoid}}},
	{"invokefunction/null data", InvokeFunction{InvocationID: uuidB, FunctionID: "f", Data: raw(`null`)}},
	{"invocationresult/result", InvocationResult{
		InvocationID: uuidA, FunctionID: "f", Result: raw(`{"ok":true}`),
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Baggage: "a=b",
	}},
	{"invocationresult/error", InvocationResult{InvocationID: uuidB, FunctionID: "f", Error: &ErrorBody{Code: "function_not_found", Message: "no f"}}},
	{"invocationresult/empty", InvocationResult{InvocationID: uuidB, FunctionID: "f"}},
	{"registerservice/full", RegisterService{ID: "orders", Name: "Orders", Description: "d", ParentServiceID: "shop"}},
	{"registerservice/min", RegisterService{ID: "orders"}},
	{"ping", Ping{}},
	{"pong", Pong{}},
	{"reattach/full", Reattach{PreviousWorkerID: uuidA, ReattachToken: uuidB}},
	{"reattach/min", Reattach{PreviousWorkerID: uuidA}},
	{"workerregistered/full", WorkerRegistered{WorkerID: uuidA, ReattachToken: uuidB}},
	{"workerregistered/min", WorkerRegistered{WorkerID: uuidA}},
}

func TestSamplesCoverEveryType(t *testing.T) {
	all := []Type{
		TypeRegisterFunction, TypeUnregisterFunction, TypeRegisterTriggerType, TypeUnregisterTriggerType,
		TypeRegisterTrigger, TypeUnregisterTrigger, TypeTriggerRegistrationResult, TypeInvokeFunction,
		TypeInvocationResult, TypeRegisterService, TypePing, TypePong, TypeReattach, TypeWorkerRegistered,
	}
	seen := map[Type]bool{}
	for _, s := range samples {
		seen[s.msg.MessageType()] = true
	}
	for _, typ := range all {
		if !seen[typ] {
			t.Errorf("no round-trip sample for %s", typ)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			frame, err := Encode(s.msg)
			if err != nil {
				t.Fatalf("Encode(%+v): %v", s.msg, err)
			}
			prefix := `{"type":"` + string(s.msg.MessageType()) + `"`
			if !bytes.HasPrefix(frame, []byte(prefix)) {
				t.Errorf("Encode(%+v) = %s; want it to start with %s", s.msg, frame, prefix)
			}
			got, err := Decode(frame)
			if err != nil {
				t.Fatalf("Decode(%s): %v", frame, err)
			}
			if !reflect.DeepEqual(got, s.msg) {
				t.Errorf("Decode(Encode(m)) for frame %s:\n got %#v\nwant %#v", frame, got, s.msg)
			}
			// Pointers encode the same as values.
			ptr := reflect.New(reflect.TypeOf(s.msg))
			ptr.Elem().Set(reflect.ValueOf(s.msg))
			pframe, err := Encode(ptr.Interface().(Message))
			if err != nil || !bytes.Equal(pframe, frame) {
				t.Errorf("Encode(&m) = %s, %v; want %s", pframe, err, frame)
			}
		})
	}
}

func TestEncodeWire(t *testing.T) {
	tests := []struct {
		msg  Message
		want string
	}{
		{Ping{}, `{"type":"ping"}`},
		{Pong{}, `{"type":"pong"}`},
		// Payloads are compacted but not HTML-escaped.
		{InvokeFunction{FunctionID: "a<b>", Data: raw("{\"html\" : \"<p>&amp;</p>\"}")}, `{"type":"invokefunction","function_id":"a<b>","data":{"html":"<p>&amp;</p>"}}`},
		{WorkerRegistered{WorkerID: uuidA, ReattachToken: uuidB}, `{"type":"workerregistered","worker_id":"` + uuidA + `","reattach_token":"` + uuidB + `"}`},
		{WorkerRegistered{WorkerID: uuidA}, `{"type":"workerregistered","worker_id":"` + uuidA + `"}`},
		// data is required: nil encodes as null, never omitted.
		{InvokeFunction{InvocationID: uuidA, FunctionID: "f"}, `{"type":"invokefunction","invocation_id":"` + uuidA + `","function_id":"f","data":null}`},
		{InvocationResult{InvocationID: uuidA, FunctionID: "f"}, `{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f"}`},
		{RegisterTrigger{ID: "t", TriggerType: "cron", FunctionID: "f"}, `{"type":"registertrigger","id":"t","trigger_type":"cron","function_id":"f","config":null}`},
		{RegisterTriggerType{ID: "x"}, `{"type":"registertriggertype","id":"x","description":""}`},
		{TriggerRegistrationResult{ID: "t", TriggerType: "http", FunctionID: "f", Error: &ErrorBody{Code: "c", Message: "m"}},
			`{"type":"triggerregistrationresult","id":"t","trigger_type":"http","function_id":"f","error":{"code":"c","message":"m"}}`},
	}
	for _, tt := range tests {
		got, err := Encode(tt.msg)
		if err != nil || string(got) != tt.want {
			t.Errorf("Encode(%#v) = %s, %v; want %s", tt.msg, got, err, tt.want)
		}
	}
}

func TestEncodeInvalidRaw(t *testing.T) {
	_, err := Encode(InvokeFunction{FunctionID: "f", Data: raw(`{`)})
	if err == nil || !strings.Contains(err.Error(), "encode invokefunction") {
		t.Errorf("Encode with invalid raw data: %v; want an encode invokefunction error", err)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  Message
	}{
		{"node worker metadata call", `{"type":"invokefunction","function_id":"engine::workers::register",
			"data":{"runtime":"node","version":"0.22.1","pid":4242,"isolation":null},
			"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","baggage":"k=v","action":{"type":"void"}}`,
			InvokeFunction{FunctionID: "engine::workers::register",
				Data:        raw(`{"runtime":"node","version":"0.22.1","pid":4242,"isolation":null}`),
				Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Baggage: "k=v",
				Action: &Action{Type: ActionVoid}}},
		{"null optionals on invoke", `{"type":"invokefunction","invocation_id":null,"function_id":"f","data":null,
			"traceparent":null,"baggage":null,"action":null,"metadata":null}`,
			InvokeFunction{FunctionID: "f", Data: raw(`null`)}},
		{"missing data is a null payload (python payload=None, node undefined)", `{"type":"invokefunction","invocation_id":"` + uuidA + `","function_id":"f"}`,
			InvokeFunction{InvocationID: uuidA, FunctionID: "f", Data: raw(`null`)}},
		{"null optionals on result", `{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f","result":null,"error":null,"traceparent":null,"baggage":null}`,
			InvocationResult{InvocationID: uuidA, FunctionID: "f"}},
		{"null optionals on registerfunction", `{"type":"registerfunction","id":"f","description":null,"request_format":null,"response_format":null,"metadata":null,"invocation":null}`,
			RegisterFunction{ID: "f"}},
		{"null optionals elsewhere", `{"type":"unregistertrigger","id":"t","trigger_type":null}`, UnregisterTrigger{ID: "t"}},
		{"null error stacktrace", `{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f","error":{"code":"c","message":"m","stacktrace":null}}`,
			InvocationResult{InvocationID: uuidA, FunctionID: "f", Error: &ErrorBody{Code: "c", Message: "m"}}},
		{"python trigger type without description", `{"type":"registertriggertype","id":"webhook"}`, RegisterTriggerType{ID: "webhook"}},
		{"null trigger config is present", `{"type":"registertrigger","id":"t","trigger_type":"x","function_id":"f","config":null}`,
			RegisterTrigger{ID: "t", TriggerType: "x", FunctionID: "f", Config: raw(`null`)}},
		{"unknown fields ignored", `{"type":"ping","extra":{"a":[1,2]},"id":5.5e3}`, Ping{}},
		{"another type's field with another JSON type", `{"type":"invokefunction","id":5,"error":"x","function_id":"f","data":1,"name":[]}`,
			InvokeFunction{FunctionID: "f", Data: raw(`1`)}},
		{"foreign fields dropped, own fields kept in order", `{"type":"registerservice","id":"a","action":"x","ID":"b","name":"n"}`,
			RegisterService{ID: "b", Name: "n"}},
		{"surrounding white space", " \r\n\t{\"type\":\"pong\"}\n ", Pong{}},
		{"upper-case uuid is canonicalised", `{"type":"invocationresult","invocation_id":"` + strings.ToUpper(uuidA) + `","function_id":"f"}`,
			InvocationResult{InvocationID: uuidA, FunctionID: "f"}},
		{"braced uuid is canonicalised", `{"type":"invokefunction","invocation_id":"{` + uuidB + `}","function_id":"f","data":1}`,
			InvokeFunction{InvocationID: uuidB, FunctionID: "f", Data: raw(`1`)}},
		{"enqueue action", `{"type":"invokefunction","function_id":"f","data":{},"action":{"type":"enqueue","queue":"emails"}}`,
			InvokeFunction{FunctionID: "f", Data: raw(`{}`), Action: &Action{Type: ActionEnqueue, Queue: "emails"}}},
		{"enqueue without queue is left to the router", `{"type":"invokefunction","function_id":"f","data":1,"action":{"type":"enqueue"}}`,
			InvokeFunction{FunctionID: "f", Data: raw(`1`), Action: &Action{Type: ActionEnqueue}}},
		{"keys match case-insensitively, as encoding/json does", `{"tYpe":"invokefunction","funCtion_id":"f","dAtA":"","ACtion":{"tYpe":"enqueue","queue":""}}`,
			InvokeFunction{FunctionID: "f", Data: raw(`""`), Action: &Action{Type: ActionEnqueue}}},
		{"reattach token null", `{"type":"reattach","previous_worker_id":"w","reattach_token":null}`, Reattach{PreviousWorkerID: "w"}},
		{"sdk unregistertriggertype", `{"type":"unregistertriggertype","id":"webhook"}`, UnregisterTriggerType{ID: "webhook"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.frame))
			if err != nil {
				t.Fatalf("Decode(%s): %v", tt.frame, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode(%s):\n got %#v\nwant %#v", tt.frame, got, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  error
	}{
		{"empty", "", ErrProtocolEmpty},
		{"white space", " \t\r\n ", ErrProtocolEmpty},
		{"not an object", `["type","ping"]`, ErrProtocolMalformed},
		{"json null", `null`, ErrProtocolMalformed},
		{"json string", `"ping"`, ErrProtocolMalformed},
		{"truncated", `{"type":"ping"`, ErrProtocolMalformed},
		{"trailing garbage", `{"type":"ping"} x`, ErrProtocolMalformed},
		{"no type", `{"id":"f"}`, ErrProtocolMalformed},
		{"null type", `{"type":null}`, ErrProtocolMalformed},
		{"numeric type", `{"type":5}`, ErrProtocolMalformed},
		{"unknown type", `{"type":"hello"}`, ErrProtocolUnknownType},
		{"type is case sensitive", `{"type":"InvokeFunction","function_id":"f","data":1}`, ErrProtocolUnknownType},
		{"engine-only error frame", `{"type":"error","error":{"code":"AUTH_ERROR","message":"no"}}`, ErrProtocolUnknownType},

		{"registerfunction without id", `{"type":"registerfunction","description":"d"}`, ErrProtocolMalformed},
		{"registerfunction null id", `{"type":"registerfunction","id":null}`, ErrProtocolMalformed},
		{"registerfunction numeric id", `{"type":"registerfunction","id":7}`, ErrProtocolMalformed},
		{"unregisterfunction without id", `{"type":"unregisterfunction"}`, ErrProtocolMalformed},
		{"registertriggertype without id", `{"type":"registertriggertype","description":"d"}`, ErrProtocolMalformed},
		{"unregistertriggertype without id", `{"type":"unregistertriggertype"}`, ErrProtocolMalformed},
		{"registertrigger without id", `{"type":"registertrigger","trigger_type":"x","function_id":"f","config":{}}`, ErrProtocolMalformed},
		{"registertrigger without trigger_type", `{"type":"registertrigger","id":"t","function_id":"f","config":{}}`, ErrProtocolMalformed},
		{"registertrigger with type instead of trigger_type", `{"type":"registertrigger","id":"t","function_id":"f","config":{}}`, ErrProtocolMalformed},
		{"registertrigger without function_id", `{"type":"registertrigger","id":"t","trigger_type":"x","config":{}}`, ErrProtocolMalformed},
		{"registertrigger without config", `{"type":"registertrigger","id":"t","trigger_type":"x","function_id":"f"}`, ErrProtocolMalformed},
		{"unregistertrigger without id", `{"type":"unregistertrigger","trigger_type":"x"}`, ErrProtocolMalformed},
		{"triggerregistrationresult without id", `{"type":"triggerregistrationresult","trigger_type":"x","function_id":"f"}`, ErrProtocolMalformed},
		{"triggerregistrationresult without trigger_type", `{"type":"triggerregistrationresult","id":"t","function_id":"f"}`, ErrProtocolMalformed},
		{"triggerregistrationresult without function_id", `{"type":"triggerregistrationresult","id":"t","trigger_type":"x"}`, ErrProtocolMalformed},
		{"triggerregistrationresult error without code", `{"type":"triggerregistrationresult","id":"t","trigger_type":"x","function_id":"f","error":{"message":"m"}}`, ErrProtocolMalformed},
		{"invokefunction without function_id", `{"type":"invokefunction","data":1}`, ErrProtocolMalformed},
		{"invokefunction non-uuid invocation_id", `{"type":"invokefunction","invocation_id":"42","function_id":"f","data":1}`, ErrProtocolMalformed},
		{"invokefunction empty invocation_id", `{"type":"invokefunction","invocation_id":"","function_id":"f","data":1}`, ErrProtocolMalformed},
		{"invokefunction numeric invocation_id", `{"type":"invokefunction","invocation_id":42,"function_id":"f","data":1}`, ErrProtocolMalformed},
		{"invokefunction unknown action", `{"type":"invokefunction","function_id":"f","data":1,"action":{"type":"later"}}`, ErrProtocolMalformed},
		{"invokefunction action without type", `{"type":"invokefunction","function_id":"f","data":1,"action":{}}`, ErrProtocolMalformed},
		{"own field of the wrong type after a foreign one", `{"type":"invokefunction","id":5,"function_id":7,"data":1}`, ErrProtocolMalformed},
		{"nested own field of the wrong type", `{"type":"invocationresult","action":1,"invocation_id":"` + uuidA + `","function_id":"f","error":{"code":1,"message":"m"}}`, ErrProtocolMalformed},
		{"invokefunction action is a string", `{"type":"invokefunction","function_id":"f","data":1,"action":"void"}`, ErrProtocolMalformed},
		{"invocationresult without invocation_id", `{"type":"invocationresult","function_id":"f","result":1}`, ErrProtocolMalformed},
		{"invocationresult null invocation_id", `{"type":"invocationresult","invocation_id":null,"function_id":"f"}`, ErrProtocolMalformed},
		{"invocationresult non-uuid invocation_id", `{"type":"invocationresult","invocation_id":"not-a-uuid","function_id":"f"}`, ErrProtocolMalformed},
		{"invocationresult without function_id", `{"type":"invocationresult","invocation_id":"` + uuidA + `","result":1}`, ErrProtocolMalformed},
		{"invocationresult error without message", `{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f","error":{"code":"c"}}`, ErrProtocolMalformed},
		{"invocationresult error is a string", `{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f","error":"boom"}`, ErrProtocolMalformed},
		{"registerservice without id", `{"type":"registerservice","name":"n"}`, ErrProtocolMalformed},
		{"reattach without previous_worker_id", `{"type":"reattach","reattach_token":"t"}`, ErrProtocolMalformed},
		{"workerregistered without worker_id", `{"type":"workerregistered"}`, ErrProtocolMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode([]byte(tt.frame))
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode(%q) = %#v, %v; want %v", tt.frame, m, err, tt.want)
			}
			if m != nil {
				t.Errorf("Decode(%q) returned message %#v with error %v; want nil", tt.frame, m, err)
			}
		})
	}
}

func TestTelemetryKind(t *testing.T) {
	tests := []struct {
		frame string
		kind  string
		ok    bool
	}{
		{`OTLP{"resourceSpans":[]}`, TelemetryTraces, true},
		{`MTRC{"resourceMetrics":[]}`, TelemetryMetrics, true},
		{`LOGS{"resourceLogs":[]}`, TelemetryLogs, true},
		{`OTLP`, TelemetryTraces, true},
		{`OTL`, "", false},
		{``, "", false},
		{`otlp{}`, "", false},
		{`{"type":"ping"}`, "", false},
		{` OTLP{}`, "", false},
	}
	for _, tt := range tests {
		kind, ok := TelemetryKind([]byte(tt.frame))
		if kind != tt.kind || ok != tt.ok {
			t.Errorf("TelemetryKind(%q) = %q, %v; want %q, %v", tt.frame, kind, ok, tt.kind, tt.ok)
		}
	}
}

func TestErrorBodyError(t *testing.T) {
	tests := []struct {
		e    ErrorBody
		want string
	}{
		{ErrorBody{Code: "timeout", Message: "took too long"}, "timeout: took too long"},
		{ErrorBody{Code: "timeout"}, "timeout"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

var (
	benchInvoke = []byte(`{"type":"invokefunction","invocation_id":"` + uuidA + `","function_id":"orders::create",` +
		`"data":{"customer":"c-42","items":[{"sku":"a","qty":2},{"sku":"b","qty":1}],"note":"leave at door"},` +
		`"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","baggage":"iii.function.id=orders::create"}`)
	benchResult = InvocationResult{
		InvocationID: uuidA, FunctionID: "orders::create",
		Result:      raw(`{"order_id":"o-1001","total":{"amount":4250,"currency":"EUR"},"status":"created"}`),
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	sinkMsg   Message
	sinkBytes []byte
)

func BenchmarkDecodeInvoke(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchInvoke)))
	for b.Loop() {
		m, err := Decode(benchInvoke)
		if err != nil {
			b.Fatal(err)
		}
		sinkMsg = m
	}
}

func BenchmarkEncodeResult(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		out, err := Encode(benchResult)
		if err != nil {
			b.Fatal(err)
		}
		sinkBytes = out
	}
}

// TestNeedsLook checks the eight-byte test against the byte table for
// every byte value at every position of a word of plain text.
func TestNeedsLook(t *testing.T) {
	base := []byte("abcdefgh")
	for pos := range 8 {
		for c := range 256 {
			w := bytes.Clone(base)
			w[pos] = byte(c)
			got := needsLook(binary.LittleEndian.Uint64(w))
			if want := !asciiText[c]; got != want {
				t.Fatalf("byte %#x at %d: needsLook = %v, want %v", c, pos, got, want)
			}
		}
	}
	// Two special bytes next to each other, and borrows across bytes.
	for _, w := range []string{"\x00\x00aaaaaa", "a\"\\aaaaa", "\x1f\x20\x21aaaaa", "~~~~~~~\x7f", "        "} {
		want := false
		for _, c := range []byte(w) {
			want = want || !asciiText[c]
		}
		if got := needsLook(binary.LittleEndian.Uint64([]byte(w))); got != want {
			t.Errorf("%q: needsLook = %v, want %v", w, got, want)
		}
	}
}

// isCanonicalUUID agrees with the uuid package (a UUID of 36 characters,
// no upper case) on canonical ids, every other spelling, and each byte
// value at each place.
func TestIsCanonicalUUID(t *testing.T) {
	ref := func(v string) bool {
		_, err := uuid.Parse(v)
		return len(v) == 36 && err == nil && strings.ToLower(v) == v
	}
	cases := []string{uuidA, uuidB, strings.ToUpper(uuidA), "{" + uuidA + "}", "urn:uuid:" + uuidA,
		strings.ReplaceAll(uuidA, "-", ""), uuidA[:35], uuidA + "0", "", uuid.NewString()}
	for i := range 36 {
		for c := range 256 {
			b := []byte(uuidA)
			b[i] = byte(c)
			cases = append(cases, string(b))
		}
	}
	for _, v := range cases {
		if got, want := isCanonicalUUID(v), ref(v); got != want {
			t.Errorf("isCanonicalUUID(%q) = %v, want %v", v, got, want)
		}
	}
}

func BenchmarkIsCanonicalUUID(b *testing.B) {
	for b.Loop() {
		if !isCanonicalUUID(uuidA) {
			b.Fatal("not canonical")
		}
	}
}

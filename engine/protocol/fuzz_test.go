package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecode checks that Decode never panics and that whatever it accepts
// survives Encode and a second Decode unchanged. The corpus holds one valid
// frame of every message type, each also split at several points, since a
// frame cut short (or its tail alone) is what a broken stream delivers.
func FuzzDecode(f *testing.F) {
	for _, s := range samples {
		frame, err := Encode(s.msg)
		if err != nil {
			f.Fatalf("Encode(%+v): %v", s.msg, err)
		}
		f.Add(frame)
		for _, cut := range []int{1, len(frame) / 3, len(frame) / 2, len(frame) - 1} {
			f.Add(frame[:cut])
			f.Add(frame[cut:])
		}
	}
	f.Add([]byte(" \n"))
	f.Add([]byte(`{"type":"invokefunction","invocation_id":null,"function_id":"f","data":null,"action":{"type":"enqueue","queue":"q"}}`))
	f.Add([]byte(`{"type":"invocationresult","invocation_id":"{3F0C8A4E-2B1D-4C6E-9F7A-0123456789AB}","function_id":"f","result":{"a" : [1, 2.50, "<>"]}}`))
	f.Add([]byte(`OTLP{"resourceSpans":[]}`))

	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Decode(frame)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode(%q) = %#v with error %v; want a nil message", frame, m, err)
			}
			return
		}
		out, err := Encode(m)
		if err != nil {
			t.Fatalf("Decode(%q) = %#v, but Encode fails: %v", frame, m, err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("Decode(%q) = %#v; Encode = %s; decoding that fails: %v", frame, m, out, err)
		}
		if !equalMessages(m, again) {
			t.Fatalf("round trip changed the message:\nframe  %q\nfirst  %#v\nencode %s\nsecond %#v", frame, m, out, again)
		}
	})
}

var rawType = reflect.TypeFor[json.RawMessage]()

// equalMessages compares two messages field by field, raw JSON fields by
// meaning: Encode compacts raw JSON and escapes <, > and &, neither of which
// changes the value.
func equalMessages(a, b Message) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() {
		return false
	}
	for i := range va.NumField() {
		fa, fb := va.Field(i), vb.Field(i)
		if fa.Type() == rawType {
			if !sameJSON(fa.Bytes(), fb.Bytes()) {
				return false
			}
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			// Raw JSON nested in a struct or list (observe messages) is
			// compacted by Encode too: compare those by meaning.
			ja, errA := json.Marshal(fa.Interface())
			jb, errB := json.Marshal(fb.Interface())
			if errA != nil || errB != nil || !sameJSON(ja, jb) {
				return false
			}
		}
	}
	return true
}

func sameJSON(a, b []byte) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	va, errA := decodeAny(a)
	vb, errB := decodeAny(b)
	return errA == nil && errB == nil && reflect.DeepEqual(va, vb)
}

func decodeAny(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// FuzzDecodeCall checks the fast decoder of the call messages against the
// general one (encoding/json): for every frame the fast path takes, both
// accept it with the same message or both refuse it.
func FuzzDecodeCall(f *testing.F) {
	for _, s := range samples {
		if t := s.msg.MessageType(); t != TypeInvokeFunction && t != TypeInvocationResult {
			continue
		}
		frame, err := Encode(s.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte(`{"type":"invokefunction","invocation_id":null,"function_id":"f","data":null,"action":{"type":"enqueue","queue":"q"}}`))
	f.Add([]byte(`{"type":"invocationresult","invocation_id":"{3F0C8A4E-2B1D-4C6E-9F7A-0123456789AB}","function_id":"f\u00e9","result":{"a" : [1, 2.50, "<>"]},"error":{"code":"c","message":"m\n"}}`))
	f.Add([]byte(`{"Type":"invokefunction","FUNCTION_ID":"f","data":{"x":[true,false,null,-0.5e+3]},"id":5,"action":null,"metadata":[]}`))
	f.Add([]byte(`{"type":"invokefunction","function_id":"f","data":1,"action":{"type":"void"},"action":{"queue":"q"}}`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		trimmed := bytes.TrimSpace(frame)
		if len(trimmed) == 0 || trimmed[0] != '{' {
			return
		}
		fast, handled, fastErr := decodeCall(trimmed)
		if !handled {
			return
		}
		slow, slowErr := decodeWire(trimmed)
		if (fastErr == nil) != (slowErr == nil) {
			t.Fatalf("frame %q: fast %#v, %v; encoding/json %#v, %v", frame, fast, fastErr, slow, slowErr)
		}
		if fastErr == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("frame %q:\nfast %#v\njson %#v", frame, fast, slow)
		}
		checkDecoder(t, bytes.Clone(frame), false, fast, fastErr)
		checkDecoder(t, bytes.Clone(frame), true, fast, fastErr)
	})
}

// checkDecoder checks a Decoder (that keeps its frames or not) against
// Decode's fast path (want, wantErr) on frame: the same message, or both
// refuse it; and a payload it vouches for is compact, valid JSON, encoded
// exactly as without the voucher.
func checkDecoder(t *testing.T, frame []byte, keeps bool, want Message, wantErr error) {
	t.Helper()
	d := Decoder{Keeps: keeps}
	got, err := d.Decode(frame)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("frame %q: Decoder %v; Decode %v", frame, err, wantErr)
	}
	if err != nil {
		if d.Vouched() != (Compact{}) {
			t.Fatalf("frame %q: refused, yet the Decoder vouches for a payload", frame)
		}
		return
	}
	var (
		payload []byte
		plain   []byte
		vouched []byte
		encErr  error
	)
	switch m := got.(type) {
	case *InvokeFunction:
		got, payload = *m, m.Data
		plain, encErr = AppendInvoke(nil, m)
		if encErr == nil {
			vouched, encErr = AppendInvokeVouched(nil, m, d.Vouched())
		}
	case *InvocationResult:
		got, payload = *m, m.Result
		plain, encErr = AppendResult(nil, m)
		if encErr == nil {
			vouched, encErr = AppendResultVouched(nil, m, d.Vouched())
		}
	default:
		t.Fatalf("frame %q: Decoder returned %T; want a pointer to its own call message", frame, got)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("frame %q:\nDecoder %#v\nDecode  %#v", frame, got, want)
	}
	if encErr != nil {
		t.Fatalf("frame %q: encode: %v", frame, encErr)
	}
	if !bytes.Equal(plain, vouched) {
		t.Fatalf("frame %q: encoded with the voucher\n%s\nwithout\n%s", frame, vouched, plain)
	}
	if d.Vouched().vouches(payload) {
		if compact, err := checkRaw(payload); err != nil || !compact {
			t.Fatalf("frame %q: the Decoder vouches for %q, which checkRaw finds compact %v, %v", frame, payload, compact, err)
		}
	}
}

// FuzzCheckRaw checks the scanner's validation and compactness against
// encoding/json.
func FuzzCheckRaw(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,"x\u00e9\n",true,false,null]}`, ` {"a" : 1} `, `[1,]`, `"\ud800"`, `-01`, `{"a":{}}`, "\"\x01\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		compact, err := checkRaw(raw)
		if valid := json.Valid(raw); valid != (err == nil) {
			t.Fatalf("checkRaw(%q) = %v; json.Valid = %v", raw, err, valid)
		}
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			t.Fatal(err)
		}
		if same := bytes.Equal(buf.Bytes(), raw); same != compact {
			t.Fatalf("checkRaw(%q) compact = %v; json.Compact changes it: %v", raw, compact, !same)
		}
	})
}

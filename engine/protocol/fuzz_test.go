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

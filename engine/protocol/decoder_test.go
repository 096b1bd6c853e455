package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
	"unsafe"
)

func TestDecoderVouchesForCompactPayloads(t *testing.T) {
	const id = "3f0c8a4e-2b1d-4c6e-9f7a-0123456789ab"
	cases := []struct {
		name, frame string
		vouched     bool
	}{
		{"compact data", `{"type":"invokefunction","invocation_id":"` + id + `","function_id":"f","data":{"a":[1,"x"]}}`, true},
		{"spaced data", `{"type":"invokefunction","function_id":"f","data":{"a" : 1}}`, false},
		{"spaced frame, compact data", "{ \"type\" : \"invokefunction\" , \"function_id\":\"f\", \"data\" : [1,2] }", true},
		{"duplicate data, the last spaced", `{"type":"invokefunction","function_id":"f","data":1,"data":[1, 2]}`, false},
		{"duplicate data, the last compact", `{"type":"invokefunction","function_id":"f","data":[1, 2],"data":[1,2]}`, true},
		{"no data", `{"type":"invokefunction","function_id":"f"}`, false},
		{"compact result", `{"type":"invocationresult","invocation_id":"` + id + `","function_id":"f","result":{"ok":true}}`, true},
		{"spaced result", `{"type":"invocationresult","invocation_id":"` + id + `","function_id":"f","result":[ 1]}`, false},
		{"null result", `{"type":"invocationresult","invocation_id":"` + id + `","function_id":"f","result":null}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decoder{Keeps: true}
			m, err := d.Decode([]byte(c.frame))
			if err != nil {
				t.Fatal(err)
			}
			var payload []byte
			switch m := m.(type) {
			case *InvokeFunction:
				payload = m.Data
			case *InvocationResult:
				payload = m.Result
			default:
				t.Fatalf("Decode = %T; want the Decoder's own call message", m)
			}
			if got := d.Vouched().vouches(payload); got != c.vouched {
				t.Fatalf("vouches for %q = %v; want %v", payload, got, c.vouched)
			}
			want, err := Decode([]byte(c.frame))
			if err != nil {
				t.Fatal(err)
			}
			if !equalMessages(deref(m), want) {
				t.Fatalf("Decoder %#v; Decode %#v", m, want)
			}
		})
	}
}

func deref(m Message) Message {
	switch m := m.(type) {
	case *InvokeFunction:
		return *m
	case *InvocationResult:
		return *m
	}
	return m
}

// A Decoder that keeps its frames lets the strings of a small one share its
// memory, and copies those of a large one.
func TestDecoderKeepsSmallFrames(t *testing.T) {
	small := []byte(`{"type":"invokefunction","function_id":"orders::create","data":{}}`)
	large := make([]byte, 0, aliasLimit+1)
	large = append(large, small...)
	for _, c := range []struct {
		name   string
		frame  []byte
		keeps  bool
		shared bool
	}{
		{"small, kept", small, true, true},
		{"small, not kept", small, false, false},
		{"large, kept", large, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Decoder{Keeps: c.keeps}
			m, err := d.Decode(c.frame)
			if err != nil {
				t.Fatal(err)
			}
			id := m.(*InvokeFunction).FunctionID
			if id != "orders::create" {
				t.Fatalf("FunctionID = %q", id)
			}
			at := bytes.Index(c.frame, []byte("orders::create"))
			if shared := unsafe.StringData(id) == &c.frame[at]; shared != c.shared {
				t.Fatalf("FunctionID shares the frame's memory: %v; want %v", shared, c.shared)
			}
		})
	}
}

// A voucher is for the bytes it was made for: other bytes of the same
// length are still scanned (and refused when invalid).
func TestCompactVouchesOnlyForItsBytes(t *testing.T) {
	var d Decoder
	if _, err := d.Decode([]byte(`{"type":"invokefunction","function_id":"f","data":[1,2]}`)); err != nil {
		t.Fatal(err)
	}
	v := d.Vouched()
	if v == (Compact{}) {
		t.Fatal("the Decoder vouches for nothing; want data")
	}
	forged := &InvokeFunction{FunctionID: "f", Data: json.RawMessage(`[1,}`)}
	if b, err := AppendInvokeVouched(nil, forged, v); err == nil {
		t.Fatalf("AppendInvokeVouched with another payload's voucher = %s; want invalid JSON refused", b)
	}
	spaced := &InvokeFunction{FunctionID: "f", Data: json.RawMessage(`[1 ]`)}
	b, err := AppendInvokeVouched(nil, spaced, v)
	if err != nil || !bytes.Contains(b, []byte(`"data":[1]`)) {
		t.Fatalf("AppendInvokeVouched = %s, %v; want the payload compacted", b, err)
	}
	// The next frame's decode withdraws the voucher.
	if _, err := d.Decode([]byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if d.Vouched() != (Compact{}) {
		t.Fatal("a ping left a voucher behind")
	}
}

func TestAppendMember(t *testing.T) {
	var d Decoder
	m, err := d.Decode([]byte(`{"type":"invokefunction","function_id":"f","data":{"a":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	data := m.(*InvokeFunction).Data
	cases := []struct {
		name, raw, value string
		vouched          Compact
		want             string
		wantVouched      bool
	}{
		{"vouched object", string(data), "w1", d.Vouched(), `{"a":1,"k":"w1"}`, true},
		{"unvouched object", `{"a":1}`, "w1", Compact{}, `{"a":1,"k":"w1"}`, false},
		{"spaced object", " { \"a\" : 1 } ", "w1", Compact{}, `{"a" : 1,"k":"w1"}`, false},
		{"empty object", `{}`, "w1", Compact{}, `{"k":"w1"}`, false},
		{"value needing escapes", string(data), `w"1`, d.Vouched(), `{"a":1,"k":"w"1"}`, false},
		{"not an object", `[1]`, "w1", Compact{}, `[1]`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := json.RawMessage(c.raw)
			if c.vouched != (Compact{}) {
				raw = data
			}
			out, v := AppendMember(raw, c.vouched, "k", c.value)
			if string(out) != c.want {
				t.Fatalf("AppendMember = %s; want %s", out, c.want)
			}
			if got := v.vouches(out); got != c.wantVouched {
				t.Fatalf("vouches for %s = %v; want %v", out, got, c.wantVouched)
			}
			if v.vouches(out) {
				if compact, err := checkRaw(out); err != nil || !compact {
					t.Fatalf("vouched for %s: compact %v, %v", out, compact, err)
				}
			}
		})
	}
}

var benchResultFrame = func() []byte {
	b, err := Encode(benchResult)
	if err != nil {
		panic(err)
	}
	return b
}()

// BenchmarkRelayInvoke is the engine's path for a worker's call: decode
// the frame, add the caller to the payload, encode the call for the
// target. "decode" is Decode and no voucher; "decoder" is a connection's
// Decoder, whose voucher spares the encoder its scan of the payload.
func BenchmarkRelayInvoke(b *testing.B) {
	benchRelay(b, benchInvoke, func(buf []byte, inv InvokeFunction, v Compact) ([]byte, error) {
		inv.Data, v = AppendMember(inv.Data, v, "_caller_worker_id", "6b3e0f4c-1d2a-4b5c-8e9f-a0b1c2d3e4f5")
		return AppendInvokeVouched(buf, &inv, v)
	})
}

// BenchmarkRelayResult is the engine's path for a worker's answer: decode
// it, encode it for the caller (see BenchmarkRelayInvoke).
func BenchmarkRelayResult(b *testing.B) {
	benchRelay(b, benchResultFrame, func(buf []byte, res InvocationResult, v Compact) ([]byte, error) {
		return AppendResultVouched(buf, &res, v)
	})
}

// benchRelay decodes frame, with Decode or with a Decoder, and encodes
// the message it holds (of type M) again with relay.
func benchRelay[M InvokeFunction | InvocationResult](b *testing.B, frame []byte, relay func([]byte, M, Compact) ([]byte, error)) {
	for _, vouch := range []bool{false, true} {
		b.Run(map[bool]string{false: "decode", true: "decoder"}[vouch], func(b *testing.B) {
			var (
				d   = Decoder{Keeps: true}
				buf = make([]byte, 0, 1024)
			)
			b.ReportAllocs()
			for b.Loop() {
				var (
					msg M
					v   Compact
				)
				if vouch {
					m, err := d.Decode(frame)
					if err != nil {
						b.Fatal(err)
					}
					msg, v = *any(m).(*M), d.Vouched()
				} else {
					m, err := Decode(frame)
					if err != nil {
						b.Fatal(err)
					}
					msg = any(m).(M)
				}
				out, err := relay(buf[:0], msg, v)
				if err != nil {
					b.Fatal(err)
				}
				sinkBytes = out
			}
		})
	}
}

// plainASCII agrees with the byte table for every byte at every position
// of strings around the eight-byte step.
func TestPlainASCII(t *testing.T) {
	for n := range 20 {
		for pos := range n {
			for c := range 256 {
				b := bytes.Repeat([]byte("a"), n)
				b[pos] = byte(c)
				if got, want := plainASCII(string(b)), asciiText[c]; got != want {
					t.Fatalf("%q: plainASCII = %v, want %v", b, got, want)
				}
			}
		}
	}
}

package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The hand-written encoders of the call messages must write what the
// reflective encoder writes (for compact raw fields).
func TestFastEncodersMatchReflection(t *testing.T) {
	msgs := []Message{
		InvokeFunction{FunctionID: "a::b", Data: raw(`{"x":[1,"<&>"]}`)},
		InvokeFunction{InvocationID: "3f0c1a2b-1111-4222-8333-444455556666", FunctionID: "f\"q\u2028é", Data: nil,
			Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Baggage: "k=v,iii.function.id=a::b",
			Action: &Action{Type: ActionEnqueue, Queue: "q\n1"}, Metadata: raw(`{"m":true}`)},
		&InvokeFunction{FunctionID: "x", Data: raw(`null`), Action: &Action{Type: ActionVoid}},
		InvocationResult{InvocationID: "3f0c1a2b-1111-4222-8333-444455556666", FunctionID: "f"},
		InvocationResult{InvocationID: "3f0c1a2b-1111-4222-8333-444455556666", FunctionID: "f", Result: raw(`"<ok>"`),
			Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Baggage: "a=b"},
		&InvocationResult{InvocationID: "3f0c1a2b-1111-4222-8333-444455556666", FunctionID: "f",
			Error: &ErrorBody{Code: "invocation_failed", Message: "line1\nline2 \"quoted\" \x01", Stacktrace: "at x.js:1\n\tat y"}},
		&InvocationResult{InvocationID: "3f0c1a2b-1111-4222-8333-444455556666", FunctionID: "f",
			Error: &ErrorBody{Code: "c", Message: "m"}},
	}
	for _, m := range msgs {
		fast, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := encodeReflect(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, slow) {
			t.Errorf("%T:\nfast %s\nslow %s", m, fast, slow)
		}
		if !json.Valid(fast) {
			t.Errorf("invalid JSON %s", fast)
		}
	}
}

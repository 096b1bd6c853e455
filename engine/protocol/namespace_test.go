package protocol

import (
	"reflect"
	"testing"
)

func TestNamespaceFields(t *testing.T) {
	cases := []struct {
		name  string
		frame string
		want  Message
	}{
		{"invoke with namespace and caller (python 0.25)",
			`{"type":"invokefunction","function_id":"a::b","data":1,"namespace":"orders","caller":{"function_id":"c::d","invocation_id":"i1","worker_id":7,"parent":{"function_id":"e::f","parent":{"function_id":"deep"}}}}`,
			InvokeFunction{FunctionID: "a::b", Data: []byte("1"), Namespace: "orders",
				Caller: &Caller{FunctionID: "c::d", InvocationID: "i1", Parent: &Caller{FunctionID: "e::f"}}}},
		{"caller not an object reads as none; null namespace as absent",
			`{"type":"invokefunction","function_id":"a::b","data":1,"namespace":null,"caller":"me"}`,
			InvokeFunction{FunctionID: "a::b", Data: []byte("1")}},
		{"registertrigger namespaces",
			`{"type":"registertrigger","id":"t1","trigger_type":"http","function_id":"a::b","config":{},"namespace":"orders","trigger_namespace":"default"}`,
			RegisterTrigger{ID: "t1", TriggerType: "http", FunctionID: "a::b", Config: []byte("{}"), Namespace: "orders", TriggerNamespace: "default"}},
		{"registertriggertype namespace",
			`{"type":"registertriggertype","id":"hook","description":"d","namespace":"orders"}`,
			RegisterTriggerType{ID: "hook", Description: "d", Namespace: "orders"}},
		{"unregistertriggertype namespace",
			`{"type":"unregistertriggertype","id":"hook","namespace":"orders"}`,
			UnregisterTriggerType{ID: "hook", Namespace: "orders"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.frame))
			if err != nil {
				t.Fatalf("Decode(%s): %v", tc.frame, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Decode(%s)\n got %#v\nwant %#v", tc.frame, got, tc.want)
			}
			b, err := Encode(got)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			again, err := Decode(b)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip of %s: %s decoded to %#v (%v)", tc.frame, b, again, err)
			}
		})
	}
}

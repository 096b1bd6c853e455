package watch

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/event"
)

// TestRoundTrip: every event kind the engine publishes survives the wire.
func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	evs := []event.Event{
		event.WorkerConnected{WorkerID: "w", Addr: "1.2.3.4:5", At: at},
		event.WorkerUpdated{WorkerID: "w", Name: "n", Runtime: "go", PID: 3, At: at},
		event.WorkerDisconnected{WorkerID: "w", Reason: "bye", At: at},
		event.FunctionRegistered{FunctionID: "a::b", WorkerID: "w", Worker: "n", At: at},
		event.FunctionUnregistered{FunctionID: "a::b", WorkerID: "w", At: at},
		event.TriggerTypeRegistered{TriggerType: "x", WorkerID: "w", At: at},
		event.TriggerTypeUnregistered{TriggerType: "x", WorkerID: "w", At: at},
		event.TriggerRegistered{TriggerID: "t", TriggerType: "cron", FunctionID: "a::b", Config: json.RawMessage(`{"e":1}`), Active: true, At: at},
		event.TriggerUnregistered{TriggerID: "t", TriggerType: "cron", FunctionID: "a::b", At: at},
		event.InvocationStarted{InvocationID: "i", FunctionID: "a::b", Data: json.RawMessage(`{"n":1}`), Span: event.SpanIDs{TraceID: "t"}, At: at},
		event.InvocationFinished{InvocationID: "i", FunctionID: "a::b", Status: event.StatusError, ErrorCode: "c", Result: json.RawMessage(`{"x":1}`), Duration: time.Millisecond, At: at},
		event.LogLine{Worker: "n", PID: 3, Stream: "stdout", Line: "hi", At: at},
		event.ProcessChanged{Worker: "n", Status: event.ProcessRunning, RestartIn: time.Second, LastLines: []string{"x"}, At: at},
		event.HTTPRequestServed{Route: "/a", Method: "GET", Status: 200, Duration: time.Millisecond, At: at},
		event.CallHeld{HoldID: "h", FunctionID: "a::b", Data: json.RawMessage(`1`), Deadline: at, At: at},
		event.CallResumed{HoldID: "h", Outcome: event.HeldDropped, At: at},
		event.BreakpointsChanged{FunctionIDs: []string{"a::b"}, At: at},
		event.ObserverChanged{ObserverID: "o", SourceFunction: "a::b", TargetFunction: "c::d", State: "active", Fires: 2, At: at},
		event.ObserverActivated{ObserverID: "o", ActivationID: "x", Depth: 1, At: at},
		event.ObserverDropped{ObserverID: "o", Reason: "OVERFLOW", At: at},
		event.LocalInvocations{WorkerID: "w", FunctionID: "a::b", Window: time.Second, Count: 3, At: at},
	}
	for _, ev := range evs {
		env, err := Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(env)
		var back Envelope
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		got, err := Decode(back)
		if err != nil {
			t.Fatalf("%s: %v", ev.Kind(), err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Errorf("%s: got %+v; want %+v", ev.Kind(), got, ev)
		}
	}
	if _, err := Decode(Envelope{Kind: "from.the.future", Event: json.RawMessage(`{}`)}); err == nil {
		t.Error("an unknown kind decoded")
	}
	if _, err := Decode(Envelope{Kind: "log.line", Event: json.RawMessage(`[]`)}); err == nil {
		t.Error("a malformed event decoded")
	}
}

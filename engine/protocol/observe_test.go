package protocol

import (
	"errors"
	"reflect"
	"testing"
)

func u64p(v uint64) *uint64 { return &v }
func u32p(v uint32) *uint32 { return &v }
func boolp(v bool) *bool    { return &v }

// observeSamples are the round-trip samples of the 0.25 messages and fields;
// init appends them to samples, so FuzzDecode is seeded with them too.
var observeSamples = []struct {
	name string
	msg  Message
}{
	{"registrationrejected/worker", RegistrationRejected{Code: CodeWorkerNamespaceConflict, Namespace: "default", WorkerName: "w", OwnerWorkerID: uuidA}},
	{"registrationrejected/function", RegistrationRejected{Code: CodeFunctionNamespaceConflict, Namespace: "team", FunctionID: "f", OwnerWorkerID: uuidB}},
	{"observe/full", Observe{
		ID: uuidA,
		Source: ObserveSource{FunctionID: "orders::create", Namespace: "shop", Args: raw(`{"path":"/x"}`),
			Filters: raw(`{"output.total":{"gt":10}}`), Capture: []string{"input", "metadata"}, On: OnComplete, Deliver: DeliverInput},
		Target:   FunctionRef{FunctionID: "audit::log", Namespace: "ops"},
		Metadata: raw(`{"m":1}`), MaxFires: u64p(3), ExpiresInMS: u64p(60000), MaxInFlight: u32p(8),
	}},
	{"observe/min", Observe{ID: uuidB, Source: ObserveSource{FunctionID: "f"}, Target: FunctionRef{FunctionID: "g"}}},
	{"observe/empty capture", Observe{ID: uuidB, Source: ObserveSource{FunctionID: "f", Capture: []string{}}, Target: FunctionRef{FunctionID: "g"}}},
	{"unobserve", Unobserve{ID: uuidA}},
	{"observeresult/active", ObserveResult{ID: uuidA, State: ObserverActive, Warnings: []string{"w1"}}},
	{"observeresult/error", ObserveResult{ID: uuidA, State: ObserverError, Error: &ErrorBody{Code: CodeInvalidFilter, Message: "bad"}}},
	{"observerstatechanged/reason", ObserverStateChanged{ID: uuidA, State: ObserverDisposed, Reason: &ErrorBody{Code: CodeMaxFires, Message: "done"}, Fires: 3}},
	{"observerstatechanged/min", ObserverStateChanged{ID: uuidA, State: ObserverActive}},
	{"functionregistered/observers", FunctionRegistered{ID: "f", Namespace: "default", Revision: 4, LocalDispatch: true, Observers: []ObserverView{
		{ID: uuidA, Args: raw(`{}`), Filters: raw(`{"input.n":{"eq":1}}`), Target: "g", Capture: []string{"input"}, On: OnError},
		{ID: uuidB, Args: raw(`{"a":1}`), Filters: raw(`{}`), Target: "h", Capture: []string{}, On: OnSuccess,
			Legacy: &LegacyTrigger{TriggerType: "cron", Config: raw(`{"expression":"* * * * *"}`)}},
	}}},
	{"functionregistered/none", FunctionRegistered{ID: "f", Namespace: "team", Observers: []ObserverView{}}},
	{"observeradded", ObserverAdded{FunctionID: "f", Namespace: "default", Revision: 2, Observer: ObserverView{
		ID: uuidA, Args: raw(`{}`), Filters: raw(`{}`), Target: "g", Capture: []string{"input", "output", "caller"}, On: OnSuccess}}},
	{"observerremoved", ObserverRemoved{FunctionID: "f", Namespace: "default", Revision: 3, ID: uuidA}},
	{"observerack/ok", ObserverAck{FunctionID: "f", ID: uuidA, Revision: 2}},
	{"observerack/rejected", ObserverAck{FunctionID: "f", Namespace: "team", ID: uuidA, Revision: 2, Error: &ErrorBody{Code: "NOPE", Message: "no"}}},
	{"invocationsobserved", InvocationsObserved{Items: []ObservedItem{
		{FunctionID: "f", Namespace: "team", InvocationID: uuidA, Matched: []string{uuidB}, Status: "success",
			Input: raw(`{"n":1}`), Output: raw(`null`), Caller: raw(`{"worker_id":"w"}`), Metadata: raw(`null`),
			StartedAtMS: 1700000000000, DurationMS: 1.5, ObserveDepth: 1, Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", OutputIsInput: true},
		{FunctionID: "f", InvocationID: uuidB, Matched: []string{}, Status: "error", Error: raw(`{"code":"x"}`)},
	}}},
	{"invocationsobserved/empty", InvocationsObserved{Items: []ObservedItem{}}},
	{"localinvocationstats", LocalInvocationStats{WindowMS: 10000,
		Functions:      []LocalFunctionStats{{FunctionID: "f", Count: 3, Errors: 1, DurationMSSum: 2.25}},
		DroppedReports: []DroppedReportStats{{FunctionID: "f", Reason: "BUFFER_FULL", Count: 2}}}},
	{"localinvocationstats/empty", LocalInvocationStats{Functions: []LocalFunctionStats{}, DroppedReports: []DroppedReportStats{}}},
	{"invokefunction/activation", InvokeFunction{InvocationID: uuidA, FunctionID: "g", Data: raw(`{}`), ObserveDepth: 2,
		Activation: &Activation{ObserverID: uuidB, ActivationID: uuidA}}},
	{"invokefunction/through observer", InvokeFunction{FunctionID: "g", Data: raw(`1`), Activation: &Activation{ObserverID: uuidB}}},
	{"invocationresult/matched", InvocationResult{InvocationID: uuidA, FunctionID: "f", Result: raw(`1`), Matched: []string{uuidB}}},
	{"invocationresult/matched none", InvocationResult{InvocationID: uuidA, FunctionID: "f", Matched: []string{}}},
	{"invocationresult/delivered", InvocationResult{InvocationID: uuidA, FunctionID: "f", Delivered: true}},
	{"registerfunction/python observe", RegisterFunction{ID: "f", Observe: &ObserveDescriptor{
		Delivery: DeliveryOwner, ArgsFormat: raw(`{"type":"object"}`), LegacyTriggerType: "http", Allow: boolp(true)}}},
	{"registerfunction/rust v2", RegisterFunction{ID: "f", ArgsFormat: raw(`{"type":"object"}`), Private: true, Observable: boolp(false)}},
}

func init() { samples = append(samples, observeSamples...) }

func TestObserveSamplesCoverEveryType(t *testing.T) {
	seen := map[Type]bool{}
	for _, s := range observeSamples {
		seen[s.msg.MessageType()] = true
	}
	for _, m := range observeMessages {
		if !seen[m.MessageType()] {
			t.Errorf("no round-trip sample for %s", m.MessageType())
		}
	}
}

func TestEncodeObserveWire(t *testing.T) {
	tests := []struct {
		msg  Message
		want string
	}{
		// What the Python and Rust SDKs expect: fires always, view defaults spelled out.
		{ObserverStateChanged{ID: "o", State: ObserverActive}, `{"type":"observerstatechanged","id":"o","state":"active","fires":0}`},
		{FunctionRegistered{ID: "f", Namespace: "default", Revision: 1, Observers: []ObserverView{}},
			`{"type":"functionregistered","id":"f","namespace":"default","revision":1,"local_dispatch":false,"observers":[]}`},
		{Observe{ID: "o", Source: ObserveSource{FunctionID: "f", Capture: []string{}}, Target: FunctionRef{FunctionID: "g"}},
			`{"type":"observe","id":"o","source":{"function_id":"f","capture":[]},"target":{"function_id":"g"}}`},
		{InvokeFunction{FunctionID: "g", Data: raw(`1`), ObserveDepth: 3, Activation: &Activation{ObserverID: "o", ActivationID: "a"}},
			`{"type":"invokefunction","function_id":"g","data":1,"observe_depth":3,"activation":{"observer_id":"o","activation_id":"a"}}`},
		{InvocationResult{InvocationID: uuidA, FunctionID: "f", Matched: []string{}, Delivered: true},
			`{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f","matched":[],"delivered":true}`},
		{RegisterFunction{ID: "f", Private: true, Observable: boolp(false)}, `{"type":"registerfunction","id":"f","private":true,"observable":false}`},
	}
	for _, tt := range tests {
		got, err := Encode(tt.msg)
		if err != nil || string(got) != tt.want {
			t.Errorf("Encode(%#v) =\n %s, %v; want\n %s", tt.msg, got, err, tt.want)
		}
	}
}

func TestDecodeObserve(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  Message
	}{
		{"python observe, nulls read as absent", `{"type":"observe","id":"o","source":{"function_id":"f","namespace":null,"args":null,"filters":null,"capture":null,"on":null,"deliver":null},
			"target":{"function_id":"g","namespace":"default"},"metadata":null,"max_fires":null,"expires_in_ms":null,"max_in_flight":null}`,
			Observe{ID: "o", Source: ObserveSource{FunctionID: "f"}, Target: FunctionRef{FunctionID: "g", Namespace: "default"}}},
		{"view defaults", `{"type":"observeradded","function_id":"f","revision":1,"observer":{"id":"o","target":"g","args":null}}`,
			ObserverAdded{FunctionID: "f", Namespace: "default", Revision: 1, Observer: ObserverView{ID: "o", Args: raw(`{}`), Filters: raw(`{}`), Target: "g",
				Capture: []string{"input", "output", "caller"}, On: "success"}}},
		{"functionregistered null namespace and observers", `{"type":"functionregistered","id":"f","namespace":null,"revision":2,"local_dispatch":null,"observers":null}`,
			FunctionRegistered{ID: "f", Namespace: "default", Revision: 2, Observers: []ObserverView{}}},
		{"observed item keeps a present null", `{"type":"invocationsobserved","items":[{"function_id":"f","invocation_id":"i","matched":null,"output":null,"started_at_ms":1,"duration_ms":0.5,"observe_depth":null}]}`,
			InvocationsObserved{Items: []ObservedItem{{FunctionID: "f", InvocationID: "i", Matched: []string{}, Status: "success", Output: raw(`null`), StartedAtMS: 1, DurationMS: 0.5}}}},
		{"null matched and delivered are absent", `{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f","matched":null,"delivered":null}`,
			InvocationResult{InvocationID: uuidA, FunctionID: "f"}},
		{"empty observe descriptor is none", `{"type":"registerfunction","id":"f","observe":{"delivery":null},"private":false,"observable":true}`,
			RegisterFunction{ID: "f"}},
		{"registrationrejected without namespace", `{"type":"registrationrejected","code":"X","owner_worker_id":"w"}`,
			RegistrationRejected{Code: "X", Namespace: "default", OwnerWorkerID: "w"}},
		{"observerstatechanged without fires", `{"type":"observerstatechanged","id":"o","state":"paused","reason":null}`,
			ObserverStateChanged{ID: "o", State: "paused"}},
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

func TestDecodeObserveErrors(t *testing.T) {
	tests := []struct {
		name  string
		frame string
	}{
		{"observe without id", `{"type":"observe","source":{"function_id":"f"},"target":{"function_id":"g"}}`},
		{"observe without source", `{"type":"observe","id":"o","target":{"function_id":"g"}}`},
		{"observe source without function_id", `{"type":"observe","id":"o","source":{},"target":{"function_id":"g"}}`},
		{"observe without target", `{"type":"observe","id":"o","source":{"function_id":"f"}}`},
		{"observe target is a string", `{"type":"observe","id":"o","source":{"function_id":"f"},"target":"g"}`},
		{"observe negative max_fires", `{"type":"observe","id":"o","source":{"function_id":"f"},"target":{"function_id":"g"},"max_fires":-1}`},
		{"observe fractional expires_in_ms", `{"type":"observe","id":"o","source":{"function_id":"f"},"target":{"function_id":"g"},"expires_in_ms":1.5}`},
		{"observe capture not a list", `{"type":"observe","id":"o","source":{"function_id":"f","capture":"input"},"target":{"function_id":"g"}}`},
		{"unobserve without id", `{"type":"unobserve"}`},
		{"observerack without revision", `{"type":"observerack","function_id":"f","id":"o"}`},
		{"observerack error without message", `{"type":"observerack","function_id":"f","id":"o","revision":1,"error":{"code":"c"}}`},
		{"observed item without invocation_id", `{"type":"invocationsobserved","items":[{"function_id":"f"}]}`},
		{"activation without observer_id", `{"type":"invokefunction","function_id":"f","data":1,"activation":{}}`},
		{"observe_depth negative", `{"type":"invokefunction","function_id":"f","data":1,"observe_depth":-1}`},
		{"matched not a list", `{"type":"invocationresult","invocation_id":"` + uuidA + `","function_id":"f","matched":"o"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode([]byte(tt.frame))
			if !errors.Is(err, ErrProtocolMalformed) || m != nil {
				t.Errorf("Decode(%s) = %#v, %v; want a malformed error", tt.frame, m, err)
			}
		})
	}
}

func TestIsObservable(t *testing.T) {
	tests := []struct {
		r    RegisterFunction
		want bool
	}{
		{RegisterFunction{ID: "f"}, true},
		{RegisterFunction{ID: "f", Observable: boolp(true)}, true},
		{RegisterFunction{ID: "f", Observable: boolp(false)}, false},
		{RegisterFunction{ID: "f", Observe: &ObserveDescriptor{Allow: boolp(false)}}, false},
		{RegisterFunction{ID: "f", Observe: &ObserveDescriptor{Delivery: DeliveryOwner}}, true},
	}
	for _, tt := range tests {
		if got := tt.r.IsObservable(); got != tt.want {
			t.Errorf("%+v.IsObservable() = %v, want %v", tt.r, got, tt.want)
		}
	}
}

package protocol

import (
	"encoding/json"
)

// Caller is who started an invocation (invokefunction.caller). WorkerID
// and WorkerName are stamped by the engine from the calling connection;
// FunctionID, InvocationID and Parent (one level) are asserted by the
// calling SDK: the handler the call is made from.
type Caller struct {
	WorkerID     string  `json:"worker_id,omitempty"`
	WorkerName   string  `json:"worker_name,omitempty"`
	FunctionID   string  `json:"function_id,omitempty"`
	InvocationID string  `json:"invocation_id,omitempty"`
	Parent       *Caller `json:"parent,omitempty"`
}

// UnmarshalJSON reads a caller leniently, as the SDKs do: anything but an
// object reads as an empty caller (the call decoder then drops it), fields
// that are not strings are dropped, and a parent keeps one level.
func (c *Caller) UnmarshalJSON(b []byte) error {
	*c = Caller{}
	if d := decodeCaller(b); d != nil {
		*c = *d
	}
	return nil
}

// emptyCaller reports whether c says nothing (absent, or not an object on
// the wire).
func emptyCaller(c *Caller) bool {
	return c == nil || *c == (Caller{})
}

// wireNS holds the namespace fields of the older messages (the 0.25 SDKs'
// invokefunction.namespace/caller, registertrigger.namespace and
// trigger_namespace, registertriggertype.namespace); namespace itself is
// read by wireObserve. It is embedded in wire.
type wireNS struct {
	Caller           json.RawMessage `json:"caller"`
	TriggerNamespace *string         `json:"trigger_namespace"`
}

// decodeCaller reads a caller leniently, as the SDKs do: anything but an
// object is no caller, fields that are not strings are dropped, and a
// parent keeps one level.
func decodeCaller(raw json.RawMessage) *Caller {
	var m map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &m) != nil || m == nil {
		return nil
	}
	text := func(k string) string {
		var s string
		if v, ok := m[k]; ok && json.Unmarshal(v, &s) == nil {
			return s
		}
		return ""
	}
	c := &Caller{WorkerID: text("worker_id"), WorkerName: text("worker_name"),
		FunctionID: text("function_id"), InvocationID: text("invocation_id")}
	if p := decodeCaller(m["parent"]); p != nil {
		p.Parent = nil
		c.Parent = p
	}
	return c
}

// nsFields fills the namespace fields of the older messages.
func (w *wire) nsFields(m Message) Message {
	ns := str(w.Namespace)
	switch m := m.(type) {
	case InvokeFunction:
		m.Namespace = ns
		m.Caller = decodeCaller(w.Caller)
		return m
	case RegisterTrigger:
		m.Namespace, m.TriggerNamespace = ns, str(w.TriggerNamespace)
		return m
	case RegisterTriggerType:
		m.Namespace = ns
		return m
	case UnregisterTriggerType:
		m.Namespace = ns
		return m
	}
	return m
}

func appendCaller(b []byte, c *Caller) ([]byte, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"caller":`...)
	return append(b, raw...), nil
}

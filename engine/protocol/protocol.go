// Package protocol holds the iii worker wire messages and their JSON codec.
//
// Every message is one JSON object with a lowercase "type" tag
// (registerfunction, invokefunction, ...) and snake_case fields, as the
// published iii-sdk packages speak it. The package does no I/O.
package protocol

import (
	"encoding/json"
)

// Type is the value of a message's "type" tag.
type Type string

// Message types, exactly as they appear on the wire.
const (
	TypeRegisterFunction          Type = "registerfunction"
	TypeUnregisterFunction        Type = "unregisterfunction"
	TypeRegisterTriggerType       Type = "registertriggertype"
	TypeUnregisterTriggerType     Type = "unregistertriggertype"
	TypeRegisterTrigger           Type = "registertrigger"
	TypeUnregisterTrigger         Type = "unregistertrigger"
	TypeTriggerRegistrationResult Type = "triggerregistrationresult"
	TypeInvokeFunction            Type = "invokefunction"
	TypeInvocationResult          Type = "invocationresult"
	TypeRegisterService           Type = "registerservice"
	TypePing                      Type = "ping"
	TypePong                      Type = "pong"
	TypeReattach                  Type = "reattach"
	TypeWorkerRegistered          Type = "workerregistered"
)

// Message is implemented by every wire message.
type Message interface {
	MessageType() Type
}

// ErrorBody is the error shape of invocationresult and triggerregistrationresult.
type ErrorBody struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	Stacktrace string `json:"stacktrace,omitempty"`
}

// Error makes ErrorBody usable as a Go error.
func (e *ErrorBody) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Action is the optional "action" of an invokefunction.
type Action struct {
	Type  string `json:"type"`            // "void" or "enqueue"
	Queue string `json:"queue,omitempty"` // for enqueue
}

// Action types.
const (
	ActionVoid    = "void"
	ActionEnqueue = "enqueue"
)

// RegisterFunction announces a function the sending worker serves.
type RegisterFunction struct {
	ID             string          `json:"id"`
	Description    string          `json:"description,omitempty"`
	RequestFormat  json.RawMessage `json:"request_format,omitempty"`
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
	Metadata       json.RawMessage `json:"metadata,omitempty"`
	Invocation     json.RawMessage `json:"invocation,omitempty"`
	// Observe is the Python 0.25 observe descriptor (delivery, args_format,
	// legacy_trigger_type, allow).
	Observe *ObserveDescriptor `json:"observe,omitempty"`
	// ArgsFormat, Private and Observable are the Rust 0.26 (observe.v2)
	// registration fields: the JSON Schema of observers' args; only the
	// hosting connection may call a private function; a nil Observable is
	// true, false refuses every observer (NOT_OBSERVABLE).
	ArgsFormat json.RawMessage `json:"args_format,omitempty"`
	Private    bool            `json:"private,omitempty"`
	Observable *bool           `json:"observable,omitempty"`
}

// IsObservable reports whether observers may attach to the function, by
// either SDK's spelling (observable: false, or observe.allow: false).
func (r *RegisterFunction) IsObservable() bool {
	if r.Observable != nil && !*r.Observable {
		return false
	}
	return r.Observe == nil || r.Observe.Allow == nil || *r.Observe.Allow
}

// UnregisterFunction withdraws a function.
type UnregisterFunction struct {
	ID string `json:"id"`
}

// RegisterTriggerType makes the sender the provider of a trigger type.
type RegisterTriggerType struct {
	ID                   string          `json:"id"`
	Description          string          `json:"description"`
	TriggerRequestFormat json.RawMessage `json:"trigger_request_format,omitempty"`
	CallRequestFormat    json.RawMessage `json:"call_request_format,omitempty"`
	// Namespace the provider serves (Python 0.25); "" = the connection's.
	Namespace string `json:"namespace,omitempty"`
}

// UnregisterTriggerType withdraws a trigger type the sender provides.
type UnregisterTriggerType struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace,omitempty"`
}

// RegisterTrigger binds a function to a trigger type. The engine sends the same
// shape to a worker that provides the type.
type RegisterTrigger struct {
	ID          string          `json:"id"`
	TriggerType string          `json:"trigger_type"`
	FunctionID  string          `json:"function_id"`
	Config      json.RawMessage `json:"config"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	// Namespace the function resolves in when the trigger fires ("" =
	// default); the engine tells a provider the same. TriggerNamespace is
	// where to find the type's provider (Python 0.25).
	Namespace        string `json:"namespace,omitempty"`
	TriggerNamespace string `json:"trigger_namespace,omitempty"`
}

// UnregisterTrigger removes a binding.
type UnregisterTrigger struct {
	ID          string `json:"id"`
	TriggerType string `json:"trigger_type,omitempty"`
}

// TriggerRegistrationResult acknowledges a delivered binding (provider to
// engine) or reports a failed one (engine to originator).
type TriggerRegistrationResult struct {
	ID          string     `json:"id"`
	TriggerType string     `json:"trigger_type"`
	FunctionID  string     `json:"function_id"`
	Error       *ErrorBody `json:"error,omitempty"`
}

// InvokeFunction calls a function. InvocationID is empty for fire-and-forget
// calls from a worker; the engine always sets it towards the target.
type InvokeFunction struct {
	InvocationID string          `json:"invocation_id,omitempty"`
	FunctionID   string          `json:"function_id"`
	Data         json.RawMessage `json:"data"`
	Traceparent  string          `json:"traceparent,omitempty"`
	Baggage      string          `json:"baggage,omitempty"`
	Action       *Action         `json:"action,omitempty"`
	Metadata     json.RawMessage `json:"metadata,omitempty"`
	// Namespace the function resolves in (0.25 SDKs); "" = default.
	Namespace string `json:"namespace,omitempty"`
	// Caller is who made the call: asserted by the calling SDK, stamped
	// with the calling worker by the engine.
	Caller *Caller `json:"caller,omitempty"`
	// ObserveDepth is the causal depth in observe hops (0 is left out).
	ObserveDepth uint32 `json:"observe_depth,omitempty"`
	// Activation marks an observer activation (engine to worker) or a call
	// through an observer (worker to engine, ObserverID only).
	Activation *Activation `json:"activation,omitempty"`
}

// InvocationResult answers an InvokeFunction. A non-nil Error wins over Result.
type InvocationResult struct {
	InvocationID string          `json:"invocation_id"`
	FunctionID   string          `json:"function_id"`
	Result       json.RawMessage `json:"result,omitempty"`
	Error        *ErrorBody      `json:"error,omitempty"`
	Traceparent  string          `json:"traceparent,omitempty"`
	Baggage      string          `json:"baggage,omitempty"`
	// Matched and Delivered are an observe.v2 host's report on a routed
	// call: the observers its match hook selected (nil: absent, the
	// engine evaluates every observer; empty: none), and whether its
	// deliver hook delivered the call itself. The engine strips both
	// before forwarding the result.
	Matched   []string `json:"matched,omitempty"`
	Delivered bool     `json:"delivered,omitempty"`
}

// RegisterService groups functions for tooling.
type RegisterService struct {
	ID              string `json:"id"`
	Name            string `json:"name,omitempty"`
	Description     string `json:"description,omitempty"`
	ParentServiceID string `json:"parent_service_id,omitempty"`
}

// Ping asks the engine for a Pong.
type Ping struct{}

// Pong answers a Ping.
type Pong struct{}

// Reattach is the first message of a reconnecting worker.
type Reattach struct {
	PreviousWorkerID string `json:"previous_worker_id"`
	ReattachToken    string `json:"reattach_token,omitempty"`
}

// WorkerRegistered is sent by the engine as soon as a worker connects.
type WorkerRegistered struct {
	WorkerID      string `json:"worker_id"`
	ReattachToken string `json:"reattach_token,omitempty"`
	// Features the engine implements (observe.v1, ...); absent from a
	// 0.22 engine, read by the 0.25+ SDKs.
	Features []string `json:"features,omitempty"`
}

func (RegisterFunction) MessageType() Type          { return TypeRegisterFunction }
func (UnregisterFunction) MessageType() Type        { return TypeUnregisterFunction }
func (RegisterTriggerType) MessageType() Type       { return TypeRegisterTriggerType }
func (UnregisterTriggerType) MessageType() Type     { return TypeUnregisterTriggerType }
func (RegisterTrigger) MessageType() Type           { return TypeRegisterTrigger }
func (UnregisterTrigger) MessageType() Type         { return TypeUnregisterTrigger }
func (TriggerRegistrationResult) MessageType() Type { return TypeTriggerRegistrationResult }
func (InvokeFunction) MessageType() Type            { return TypeInvokeFunction }
func (InvocationResult) MessageType() Type          { return TypeInvocationResult }
func (RegisterService) MessageType() Type           { return TypeRegisterService }
func (Ping) MessageType() Type                      { return TypePing }
func (Pong) MessageType() Type                      { return TypePong }
func (Reattach) MessageType() Type                  { return TypeReattach }
func (WorkerRegistered) MessageType() Type          { return TypeWorkerRegistered }

package protocol

import "math"

// Error codes of ErrorBody that travel on the wire, in one place. Where iii
// and its published SDKs produce a code, the spelling is theirs.
const (
	// CodeTimeout: no result within the invocation timeout, whether the
	// caller's SDK gave up (as the iii-sdk packages do) or the engine did.
	CodeTimeout = "TIMEOUT"
	// CodeInvocationFailed: a handler returned a plain error or panicked.
	CodeInvocationFailed = "invocation_failed"
	// CodeFunctionNotFound: no worker serves the function.
	CodeFunctionNotFound = "function_not_found"
	// CodeInvocationStopped: the worker serving the call went away or is
	// shutting down.
	CodeInvocationStopped = "invocation_stopped"
	// CodeDeserialization: the input could not be decoded.
	CodeDeserialization = "deserialization_error"
	// CodeSerialization: a result could not be encoded as JSON.
	CodeSerialization = "serialization_error"
	// CodeTriggerRegistrationFailed: a trigger provider rejected a binding.
	CodeTriggerRegistrationFailed = "trigger_registration_failed"
	// CodeTriggerTypeNotFound: a binding for a trigger type the worker does
	// not provide.
	CodeTriggerTypeNotFound = "trigger_type_not_found"

	// Codes of the engine itself (beyond those of the iii spec).
	CodeShutdown           = "engine_shutdown"
	CodeChannelSendFailed  = "channel_send_failed"
	CodeEnqueueError       = "enqueue_error"
	CodeInvalidArguments   = "INVALID_ARGUMENTS"
	CodeNotFound           = "NOT_FOUND"
	CodeUnregisterFailed   = "unregister_failed"
	CodeInvocationError    = "invocation_error"
	CodeFunctionNotAllowed = "function_not_allowed"
	CodeClusterUnavailable = "cluster_unavailable"

	// Codes of RBAC (spec §1.5, §3.1); FORBIDDEN is CodeForbidden, shared
	// with observe (observe.go).
	CodeAuthError = "AUTH_ERROR"
)

// Float is f as JSON can hold it: f itself, or for NaN and the infinities
// the names of the protobuf JSON mapping that OTLP/JSON uses ("NaN",
// "Infinity", "-Infinity"). The SDK's exporter and the engine's telemetry
// functions both encode doubles with it.
func Float(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}

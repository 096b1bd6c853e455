package sdk

import (
	"errors"
	"fmt"

	"github.com/iii-workbench/iii/engine/protocol"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrClosed is returned by calls made after Close began, and by Trigger
	// calls still waiting when the worker shut down.
	ErrClosed = errors.New("sdk: worker closed")
	// ErrQueueFull is returned when the bounded outbound queue (see
	// WithQueueLimit) cannot take another message, typically because the
	// engine has been unreachable for a while.
	ErrQueueFull = errors.New("sdk: outbound queue full")
	// ErrDuplicate is returned when an ID is registered twice on one worker.
	ErrDuplicate = errors.New("sdk: already registered")
	// ErrNotRegistered is returned when unregistering an unknown ID.
	ErrNotRegistered = errors.New("sdk: not registered")
)

// errDisconnected: a telemetry frame found no connection to go out on.
var errDisconnected = errors.New("sdk: not connected")

// Error codes the SDK puts on the wire or returns to callers. Engine codes
// (function_not_found, invocation_stopped, FORBIDDEN, ...) arrive unchanged
// in a *protocol.ErrorBody.
const (
	// CodeInvocationFailed: a handler returned a plain error or panicked.
	CodeInvocationFailed = protocol.CodeInvocationFailed
	// CodeFunctionNotFound: the engine routed a call to a function this
	// worker does not (or no longer) serve.
	CodeFunctionNotFound = protocol.CodeFunctionNotFound
	// CodeInvocationStopped: the worker is shutting down and refused a call.
	CodeInvocationStopped = protocol.CodeInvocationStopped
	// CodeTimeout: the caller-side invocation timeout expired.
	CodeTimeout = protocol.CodeTimeout
	// CodeSerialization: a handler result could not be encoded as JSON.
	CodeSerialization = protocol.CodeSerialization
	// CodeDeserialization: a Typed handler could not decode its input.
	CodeDeserialization = protocol.CodeDeserialization
	// CodeTriggerRegistrationFailed: a TriggerProvider rejected a binding.
	CodeTriggerRegistrationFailed = protocol.CodeTriggerRegistrationFailed
	// CodeTriggerTypeNotFound: the engine delivered a binding for a trigger
	// type this worker does not provide.
	CodeTriggerTypeNotFound = protocol.CodeTriggerTypeNotFound
)

// Errorf builds a *protocol.ErrorBody. A handler that returns it (or an
// error wrapping it) reports that code to its caller instead of
// invocation_failed.
func Errorf(code, format string, args ...any) *protocol.ErrorBody {
	return &protocol.ErrorBody{Code: code, Message: fmt.Sprintf(format, args...)}
}

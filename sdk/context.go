package sdk

import (
	"context"
	"encoding/json"
)

// Invocation describes the call a handler is serving.
type Invocation struct {
	FunctionID   string
	InvocationID string
	Traceparent  string // W3C trace context, if the caller sent one
	Baggage      string // W3C baggage, if the caller sent one
	// Metadata is the per-invocation sidecar: the trigger's metadata for
	// trigger firings, or what the caller attached. Nil when absent.
	Metadata json.RawMessage
}

type invocationKey struct{}

// InvocationFromContext returns the invocation a handler's ctx belongs to.
func InvocationFromContext(ctx context.Context) (Invocation, bool) {
	inv, ok := ctx.Value(invocationKey{}).(Invocation)
	return inv, ok
}

// FunctionID is the ID of the function a handler's ctx is serving.
func FunctionID(ctx context.Context) string {
	inv, _ := InvocationFromContext(ctx)
	return inv.FunctionID
}

// InvocationID is the ID of the invocation a handler's ctx is serving.
func InvocationID(ctx context.Context) string {
	inv, _ := InvocationFromContext(ctx)
	return inv.InvocationID
}

// Traceparent is the W3C traceparent of the invocation in ctx.
func Traceparent(ctx context.Context) string {
	inv, _ := InvocationFromContext(ctx)
	return inv.Traceparent
}

// Baggage is the W3C baggage of the invocation in ctx.
func Baggage(ctx context.Context) string {
	inv, _ := InvocationFromContext(ctx)
	return inv.Baggage
}

// Metadata is the invocation metadata in ctx, nil when there is none.
func Metadata(ctx context.Context) json.RawMessage {
	inv, _ := InvocationFromContext(ctx)
	return inv.Metadata
}

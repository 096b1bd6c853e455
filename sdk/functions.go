package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/iii-workbench/iii/engine/protocol"
)

// Handler serves one invocation of a registered function. in is the raw
// JSON payload (the engine adds "_caller_worker_id" to object payloads sent
// by other workers). The result is encoded with encoding/json; a nil result
// sends no result. An error that is or wraps a *protocol.ErrorBody reaches
// the caller with its code; any other error, and a panic, arrives as code
// invocation_failed.
//
// Handlers run concurrently, one goroutine per call. ctx carries the
// invocation (see InvocationFromContext) and is cancelled when Close gives
// up waiting; it holds the handler's span, so passing it to Trigger makes
// the call a child span of this invocation.
type Handler func(ctx context.Context, in json.RawMessage) (any, error)

// Typed adapts a typed function to a Handler: the payload is decoded into
// In (failing with code deserialization_error), the result is encoded as
// JSON.
func Typed[In, Out any](fn func(context.Context, In) (Out, error)) Handler {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var in In
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &in); err != nil {
				return nil, Errorf(CodeDeserialization, "decode input: %v", err)
			}
		}
		return fn(ctx, in)
	}
}

// FunctionOption configures RegisterFunction.
type FunctionOption func(*functionOptions)

type functionOptions struct {
	description    string
	requestFormat  any
	responseFormat any
	metadata       any
}

// WithDescription sets the function's description.
func WithDescription(d string) FunctionOption {
	return func(o *functionOptions) { o.description = d }
}

// WithRequestFormat attaches a JSON-Schema-like description of the input.
func WithRequestFormat(schema any) FunctionOption {
	return func(o *functionOptions) { o.requestFormat = schema }
}

// WithResponseFormat attaches a JSON-Schema-like description of the result.
func WithResponseFormat(schema any) FunctionOption {
	return func(o *functionOptions) { o.responseFormat = schema }
}

// WithMetadata attaches registration metadata; {"internal": true} hides the
// function from engine::functions::list.
func WithMetadata(v any) FunctionOption {
	return func(o *functionOptions) { o.metadata = v }
}

type function struct {
	registration
	handler Handler
}

// RegisterFunction serves id with h. The registration survives reconnects.
// Registering an id twice on one worker fails with ErrDuplicate; across
// workers the engine keeps the latest registration.
func (w *Worker) RegisterFunction(id string, h Handler, opts ...FunctionOption) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("sdk: register function: empty id")
	}
	if h == nil {
		return fmt.Errorf("sdk: register function %q: nil handler", id)
	}
	var o functionOptions
	for _, opt := range opts {
		opt(&o)
	}
	msg := protocol.RegisterFunction{ID: id, Description: o.description}
	var err error
	if msg.RequestFormat, err = optionalJSON(o.requestFormat); err != nil {
		return fmt.Errorf("sdk: register function %q: request format: %w", id, err)
	}
	if msg.ResponseFormat, err = optionalJSON(o.responseFormat); err != nil {
		return fmt.Errorf("sdk: register function %q: response format: %w", id, err)
	}
	if msg.Metadata, err = optionalJSON(o.metadata); err != nil {
		return fmt.Errorf("sdk: register function %q: metadata: %w", id, err)
	}
	frame, err := protocol.Encode(msg)
	if err != nil {
		return fmt.Errorf("sdk: register function %q: %w", id, err)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing {
		return ErrClosed
	}
	if _, dup := w.functions[id]; dup {
		return fmt.Errorf("%w: function %q", ErrDuplicate, id)
	}
	w.seq++
	w.functions[id] = &function{registration: registration{seq: w.seq, frame: frame}, handler: h}
	w.pushRegistration(frame)
	return nil
}

// UnregisterFunction stops serving id. Calls already running finish.
func (w *Worker) UnregisterFunction(id string) error {
	frame, err := protocol.Encode(protocol.UnregisterFunction{ID: id})
	if err != nil {
		return fmt.Errorf("sdk: unregister function %q: %w", id, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing {
		return ErrClosed
	}
	if _, ok := w.functions[id]; !ok {
		return fmt.Errorf("%w: function %q", ErrNotRegistered, id)
	}
	delete(w.functions, id)
	w.pushRegistration(frame)
	return nil
}

// onInvoke starts a handler goroutine for an incoming call, or answers
// right away when there is nothing to run. ctx is the connection's.
func (w *Worker) onInvoke(ctx context.Context, m protocol.InvokeFunction) {
	w.mu.Lock()
	fn := w.functions[m.FunctionID]
	closing := w.closing
	if fn != nil && !closing {
		w.handlers.Add(1)
	}
	w.mu.Unlock()

	switch {
	case closing:
		w.reply(ctx, m, nil, &protocol.ErrorBody{Code: CodeInvocationStopped, Message: "worker is shutting down"})
	case fn == nil:
		w.reply(ctx, m, nil, &protocol.ErrorBody{Code: CodeFunctionNotFound, Message: fmt.Sprintf("Function %s not found", m.FunctionID)})
	default:
		go func() { // exits when the handler returns; Close waits for it
			defer w.handlers.Done()
			w.invoke(fn.handler, m)
		}()
	}
}

func (w *Worker) invoke(h Handler, m protocol.InvokeFunction) {
	inv := Invocation{
		FunctionID:   m.FunctionID,
		InvocationID: m.InvocationID,
		Traceparent:  m.Traceparent,
		Baggage:      m.Baggage,
		Metadata:     m.Metadata,
	}
	ctx, span := w.tr.startExecute(context.WithValue(w.hctx, invocationKey{}, inv), m)
	res, eb := callHandler(ctx, h, m.Data)
	endSpan(span, eb)
	if eb != nil {
		w.log.DebugContext(ctx, "sdk: handler failed", "function_id", m.FunctionID,
			"invocation_id", m.InvocationID, "code", eb.Code, "error", eb.Message)
	}
	w.reply(w.hctx, m, res, eb)
}

// callHandler runs h, turning its error or panic into an ErrorBody and its
// result into JSON.
func callHandler(ctx context.Context, h Handler, in json.RawMessage) (res json.RawMessage, eb *protocol.ErrorBody) {
	defer func() {
		if r := recover(); r != nil {
			res = nil
			eb = &protocol.ErrorBody{
				Code:       CodeInvocationFailed,
				Message:    fmt.Sprintf("panic: %v", r),
				Stacktrace: string(debug.Stack()),
			}
		}
	}()
	v, err := h(ctx, in)
	if err != nil {
		return nil, errorBody(err)
	}
	if v == nil {
		return nil, nil
	}
	if raw, ok := v.(json.RawMessage); ok {
		// Validated (and compacted if need be) once, as the result frame
		// is encoded; see reply.
		return raw, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &protocol.ErrorBody{Code: CodeSerialization, Message: err.Error()}
	}
	return b, nil
}

// errorBody is the wire form of a handler error.
func errorBody(err error) *protocol.ErrorBody {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) && eb != nil {
		return &protocol.ErrorBody{Code: eb.Code, Message: eb.Message, Stacktrace: eb.Stacktrace}
	}
	return &protocol.ErrorBody{Code: CodeInvocationFailed, Message: err.Error()}
}

// reply answers an incoming call. Calls without an invocation ID (only old
// engines send them) get no answer. While the outbound queue is at its
// limit, reply waits for room (bounded by ctx): an answer is never dropped
// for lack of room, since its caller would wait out its timeout. One that
// cannot be queued (ctx ended, the worker closed) is counted in
// DroppedResults and logged.
func (w *Worker) reply(ctx context.Context, m protocol.InvokeFunction, res json.RawMessage, eb *protocol.ErrorBody) {
	if m.InvocationID == "" {
		return
	}
	r := protocol.InvocationResult{
		InvocationID: m.InvocationID,
		FunctionID:   m.FunctionID,
		Result:       res,
		Error:        eb,
		Traceparent:  m.Traceparent,
		Baggage:      m.Baggage,
	}
	frame, err := protocol.Encode(r)
	if err != nil && eb == nil {
		// A handler's json.RawMessage that is not JSON: the caller gets
		// the error, not a missing result.
		r.Result, r.Error = nil, &protocol.ErrorBody{Code: CodeSerialization, Message: err.Error()}
		frame, err = protocol.Encode(r)
	}
	if err == nil {
		err = w.out.pushWait(ctx, entry{frame: frame, kind: kindResult})
	}
	if err != nil {
		w.resultsDropped.Add(1)
		w.log.WarnContext(w.ctx, "sdk: result dropped", "function_id", m.FunctionID,
			"invocation_id", m.InvocationID, "error", err)
	}
}

// optionalJSON encodes v, or returns nil for a nil v.
func optionalJSON(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}

package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/protocol"
)

// Action routes a Trigger call differently from a plain request/response
// call. Build one with Void or Enqueue.
type Action struct {
	typ   string
	queue string
}

// Void makes a call fire-and-forget: Trigger returns as soon as the call
// is queued, with a nil result.
func Void() *Action { return &Action{typ: protocol.ActionVoid} }

// Enqueue routes a call through the named queue. Trigger returns the
// engine's receipt, {"messageReceiptId": "..."}, not the function's result.
func Enqueue(queue string) *Action { return &Action{typ: protocol.ActionEnqueue, queue: queue} }

// TriggerRequest is one call to a function.
type TriggerRequest struct {
	FunctionID string
	// Payload is encoded with encoding/json; nil sends null.
	Payload any
	// Action is nil for a normal call, or Void() or Enqueue(queue).
	Action *Action
	// Timeout bounds the wait for the result; zero means the worker's
	// invocation timeout (30 s by default).
	Timeout time.Duration
	// Metadata travels next to the payload; the handler reads it with
	// Metadata(ctx). Nil sends none.
	Metadata any
}

type result struct {
	data json.RawMessage
	err  error
}

// Trigger calls a function and waits for its result.
//
// The call waits in the outbound queue while the engine is unreachable and
// is sent on reconnect, unless it timed out first. Errors: the function's
// or engine's error as a *protocol.ErrorBody (match with errors.As); a
// timeout as a *protocol.ErrorBody with code TIMEOUT; ctx's error, wrapped,
// if ctx ends first; ErrQueueFull, ErrClosed.
//
// Inside a trace (ctx is a handler's, or holds a span of your own) the call
// is a CLIENT span "call <function ID>", a child of ctx's span, and it
// carries that span's traceparent and ctx's baggage; see the package doc,
// Tracing.
func (w *Worker) Trigger(ctx context.Context, req TriggerRequest) (json.RawMessage, error) {
	if req.FunctionID == "" {
		return nil, errors.New("sdk: trigger: empty function ID")
	}
	data, ok := req.Payload.(json.RawMessage)
	var err error
	if !ok || data == nil {
		// A json.RawMessage is validated once, as the frame is encoded.
		data, err = json.Marshal(req.Payload)
	}
	if err != nil {
		return nil, fmt.Errorf("sdk: trigger %s: encode payload: %w", req.FunctionID, err)
	}
	meta, err := optionalJSON(req.Metadata)
	if err != nil {
		return nil, fmt.Errorf("sdk: trigger %s: encode metadata: %w", req.FunctionID, err)
	}
	msg := protocol.InvokeFunction{FunctionID: req.FunctionID, Data: data, Metadata: meta}
	if req.Action != nil {
		msg.Action = &protocol.Action{Type: req.Action.typ, Queue: req.Action.queue}
	}
	span, traceparent, bag := w.tr.startCall(ctx, req.FunctionID, req.Action)
	msg.Traceparent, msg.Baggage = traceparent, bag
	res, err := w.trigger(ctx, req, msg)
	endCall(span, err)
	return res, err
}

// trigger sends msg and, unless it is a void call, waits for its result.
func (w *Worker) trigger(ctx context.Context, req TriggerRequest, msg protocol.InvokeFunction) (json.RawMessage, error) {

	if req.Action != nil && req.Action.typ == protocol.ActionVoid {
		frame, err := protocol.Encode(msg)
		if err != nil {
			return nil, fmt.Errorf("sdk: trigger %s: %w", req.FunctionID, err)
		}
		if err := w.out.push(entry{frame: frame, kind: kindCall}); err != nil {
			return nil, fmt.Errorf("sdk: trigger %s: %w", req.FunctionID, err)
		}
		return nil, nil
	}

	timeout := req.Timeout
	if timeout <= 0 {
		timeout = w.opts.invocationTimeout
	}
	msg.InvocationID = uuid.NewString()
	frame, err := protocol.Encode(msg)
	if err != nil {
		return nil, fmt.Errorf("sdk: trigger %s: %w", req.FunctionID, err)
	}
	ch := make(chan result, 1)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, fmt.Errorf("sdk: trigger %s: %w", req.FunctionID, ErrClosed)
	}
	w.pending[msg.InvocationID] = ch
	w.mu.Unlock()

	if err := w.out.push(entry{frame: frame, kind: kindCall, invocationID: msg.InvocationID}); err != nil {
		w.forget(msg.InvocationID)
		return nil, fmt.Errorf("sdk: trigger %s: %w", req.FunctionID, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err != nil && !isErrorBody(r.err) {
			return nil, fmt.Errorf("sdk: trigger %s: %w", req.FunctionID, r.err)
		}
		return r.data, r.err
	case <-t.C:
		w.forget(msg.InvocationID)
		return nil, &protocol.ErrorBody{
			Code:    CodeTimeout,
			Message: fmt.Sprintf("invocation timed out after %dms", timeout.Milliseconds()),
		}
	case <-ctx.Done():
		w.forget(msg.InvocationID)
		return nil, fmt.Errorf("sdk: trigger %s: %w", req.FunctionID, ctx.Err())
	}
}

func isErrorBody(err error) bool {
	_, ok := err.(*protocol.ErrorBody)
	return ok
}

// forget drops a call's pending entry; a late result is then ignored.
func (w *Worker) forget(id string) {
	w.mu.Lock()
	delete(w.pending, id)
	w.mu.Unlock()
}

// onResult hands an invocation result to its waiting Trigger call.
func (w *Worker) onResult(m protocol.InvocationResult) {
	w.mu.Lock()
	ch, ok := w.pending[m.InvocationID]
	delete(w.pending, m.InvocationID)
	w.mu.Unlock()
	if !ok {
		w.log.DebugContext(w.ctx, "sdk: late result ignored", "invocation_id", m.InvocationID, "function_id", m.FunctionID)
		return
	}
	// ch has room: only the goroutine that removed the entry sends.
	if m.Error != nil {
		ch <- result{err: m.Error}
		return
	}
	ch <- result{data: m.Result}
}

// Call triggers functionID with payload and decodes the result into Out.
// Errors are those of Worker.Trigger, or a decoding error.
func Call[Out any](ctx context.Context, w *Worker, functionID string, payload any) (Out, error) {
	var out Out
	raw, err := w.Trigger(ctx, TriggerRequest{FunctionID: functionID, Payload: payload})
	if err != nil {
		return out, err
	}
	if len(raw) == 0 {
		return out, nil
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("sdk: call %s: decode result: %w", functionID, err)
	}
	return out, nil
}

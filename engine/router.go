package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// outcome is how a call ended.
type outcome struct {
	result      json.RawMessage
	err         *protocol.ErrorBody
	traceparent string
	baggage     string
}

func failed(code, format string, args ...any) outcome {
	return outcome{err: &protocol.ErrorBody{Code: code, Message: fmt.Sprintf(format, args...)}}
}

// pending is a call sent to a worker and not yet answered.
type pending struct {
	target     *conn
	functionID string
	deadline   int64 // unix nanos; the sweeper fails the call after it
	finish     func(outcome)
}

// complete ends the call; the caller must have taken p out of the target's
// pending table first, which makes completion happen exactly once.
func (p *pending) complete(o outcome) {
	p.target.inflight.Add(-1)
	p.finish(o)
}

// sweepInterval is how often pending calls are checked against their
// deadline: an eighth of the timeout, between 1 ms and 1 s, so a call
// fails at most that much after its timeout.
func sweepInterval(timeout time.Duration) time.Duration {
	return min(max(timeout/8, time.Millisecond), time.Second)
}

// timeoutLoop fails the calls whose engine-side deadline has passed. One
// sweep over the pending tables replaces a timer per call. It exits when
// the engine shuts down.
func (e *Engine) timeoutLoop() {
	t := time.NewTicker(sweepInterval(e.opts.InvocationTimeout))
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-t.C:
			e.mu.RLock()
			conns = conns[:0]
			for _, c := range e.conns {
				conns = append(conns, c)
			}
			e.mu.RUnlock()
			for _, c := range conns {
				c.expire(now.UnixNano(), e.opts.InvocationTimeout)
			}
			clear(conns)
		}
	}
}

// expire fails this worker's calls that are past their deadline.
func (c *conn) expire(now int64, timeout time.Duration) {
	var late []*pending
	c.mu.Lock()
	for id, p := range c.pending {
		if p.deadline <= now {
			delete(c.pending, id)
			late = append(late, p)
		}
	}
	c.mu.Unlock()
	for _, p := range late {
		p.complete(failed(CodeTimeout, "invocation of %s timed out after %dms (engine invocation timeout)",
			p.functionID, timeout.Milliseconds()))
	}
}

// take removes and returns the pending call id, or nil.
func (c *conn) take(id string) *pending {
	c.mu.Lock()
	p := c.pending[id]
	if p != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
	return p
}

// failPending ends every call pending on this worker with the given error.
func (c *conn) failPending(code, msg string) {
	c.mu.Lock()
	calls := c.pending
	c.pending = make(map[string]*pending)
	c.mu.Unlock()
	for _, p := range calls {
		p.complete(outcome{err: &protocol.ErrorBody{Code: code, Message: msg}})
	}
}

// Request is an invocation made from inside the engine process (modules,
// the CLI's in-process paths, tests).
type Request struct {
	FunctionID  string
	Data        json.RawMessage // nil is sent as JSON null
	Metadata    json.RawMessage
	Traceparent string
	Baggage     string
	// Action is nil for a normal call, or void / enqueue.
	Action *protocol.Action
	// Trigger names what caused the call ("http", "cron", "queue", ...)
	// for traces and metrics; empty means "engine".
	Trigger string
}

// Invoke calls a function and waits for its result. A function error is
// returned as a *protocol.ErrorBody. Void calls return at once with no
// result. The wait ends with ctx; the call itself is still bounded by the
// engine's invocation timeout.
//
// A call made from inside an in-process handler (with the ctx the handler
// got, or one from ContextWithCall) continues that call's trace when req
// names no traceparent of its own.
func (e *Engine) Invoke(ctx context.Context, req Request) (json.RawMessage, error) {
	if len(req.Data) == 0 {
		req.Data = json.RawMessage("null")
	}
	if req.Traceparent == "" {
		if parent, ok := CallFromContext(ctx); ok {
			req.Traceparent = parent.Traceparent
			if req.Baggage == "" {
				req.Baggage = parent.Baggage
			}
		}
	}
	call := Call{FunctionID: req.FunctionID, Data: req.Data, Metadata: req.Metadata,
		Traceparent: req.Traceparent, Baggage: req.Baggage, Trigger: req.Trigger}
	if req.Action != nil && req.Action.Type == protocol.ActionVoid {
		e.dispatch(call, func(outcome) {})
		return nil, nil
	}
	ch := make(chan outcome, 1)
	done := func(o outcome) { ch <- o }
	if req.Action != nil && req.Action.Type == protocol.ActionEnqueue {
		e.enqueue(call, req.Action.Queue, done)
	} else {
		e.dispatch(call, done)
	}
	select {
	case o := <-ch:
		if o.err != nil {
			return nil, o.err
		}
		return o.result, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("engine: invoke %s: %w", req.FunctionID, ctx.Err())
	}
}

// invokeFromWorker routes a worker's invokefunction.
func (e *Engine) invokeFromWorker(caller *conn, m protocol.InvokeFunction) {
	if caller.session != nil && e.intercept(caller, m) {
		return // refused by RBAC, or handed to the listener's middleware
	}
	call := Call{
		InvocationID: m.InvocationID, FunctionID: m.FunctionID,
		Data: injectCaller(m.Data, caller.id), Metadata: m.Metadata,
		Traceparent: m.Traceparent, Baggage: m.Baggage, CallerWorkerID: caller.id,
	}
	void := m.Action != nil && m.Action.Type == protocol.ActionVoid
	done := func(outcome) {}
	if m.InvocationID != "" && !void {
		id, fn := m.InvocationID, m.FunctionID
		tp, bg := m.Traceparent, m.Baggage
		done = func(o outcome) {
			if o.traceparent == "" {
				o.traceparent, o.baggage = tp, bg
			}
			// A caller that has gone away simply misses its result.
			caller.send(mustEncode(protocol.InvocationResult{
				InvocationID: id, FunctionID: fn, Result: o.result, Error: o.err,
				Traceparent: o.traceparent, Baggage: o.baggage,
			}))
		}
	}
	if m.Action != nil && m.Action.Type == protocol.ActionEnqueue {
		e.enqueue(call, m.Action.Queue, done)
		return
	}
	e.dispatch(call, done)
}

// injectCaller adds "_caller_worker_id" to an object payload. It is added
// last so it wins over a key of the same name sent by the caller (JSON
// parsers keep the last duplicate).
func injectCaller(data json.RawMessage, workerID string) json.RawMessage {
	t := bytes.TrimSpace(data)
	if len(t) < 2 || t[0] != '{' {
		return data
	}
	body := bytes.TrimSpace(t[1 : len(t)-1])
	out := make([]byte, 0, len(t)+len(workerID)+24)
	out = append(out, '{')
	if len(body) > 0 {
		out = append(out, body...)
		out = append(out, ',')
	}
	out = append(out, `"_caller_worker_id":"`...)
	out = append(out, workerID...)
	out = append(out, `"}`...)
	return out
}

// dispatch routes one call and reports its outcome to done exactly once.
// It never blocks on a worker.
func (e *Engine) dispatch(call Call, done func(outcome)) {
	e.mu.RLock()
	var r *registration
	if f := e.functions[call.FunctionID]; f != nil {
		r = f.pick()
	}
	if r != nil && r.conn != nil {
		// Counted from the moment it is chosen, so a drain that polls
		// InFlight never sees zero while a call is on its way.
		r.conn.inflight.Add(1)
	}
	e.mu.RUnlock()
	if call.InvocationID == "" {
		call.InvocationID = uuid.NewString()
	}
	// Every routed call is a span of the engine's: a child of the caller's
	// span (or a new trace), and the parent of what the target does.
	span, parent := childSpan(call.Traceparent)
	call.Traceparent = span.traceparent()
	start := time.Now()
	target, targetName := "", ""
	if r != nil && r.conn != nil {
		target = r.conn.id
		call.Baggage = withBaggage(call.Baggage, FunctionBaggageKey, call.FunctionID)
	}
	if call.Trigger == "" {
		call.Trigger = TriggerKindEngine
		if call.CallerWorkerID != "" {
			call.Trigger = TriggerKindWorker
		}
	}
	finish := done
	if e.bus.Active() {
		if r != nil {
			targetName = r.workerName()
		}
		ids := event.SpanIDs{TraceID: hex.EncodeToString(span.traceID[:]), SpanID: hex.EncodeToString(span.spanID[:])}
		if parent != [8]byte{} {
			ids.ParentSpanID = hex.EncodeToString(parent[:])
		}
		e.bus.Publish(event.InvocationStarted{InvocationID: call.InvocationID, FunctionID: call.FunctionID,
			CallerWorkerID: call.CallerWorkerID, TargetWorkerID: target, Worker: targetName, Trigger: call.Trigger,
			Data: call.Data, Span: ids, At: start})
		finish = func(o outcome) {
			ev := event.InvocationFinished{InvocationID: call.InvocationID, FunctionID: call.FunctionID,
				CallerWorkerID: call.CallerWorkerID, TargetWorkerID: target, Worker: targetName, Trigger: call.Trigger,
				Status: event.StatusOK, Span: ids, Result: o.result, Duration: time.Since(start), At: time.Now()}
			if o.err != nil {
				ev.Status, ev.ErrorCode, ev.ErrorMessage = event.StatusError, o.err.Code, o.err.Message
				if o.err.Code == CodeTimeout {
					ev.Status = event.StatusTimeout
				}
			}
			e.bus.Publish(ev)
			done(o)
		}
	}
	switch {
	case r == nil:
		if !e.forward(call, finish) {
			finish(e.notFound(call.FunctionID))
		}
	case r.handler != nil:
		e.runLocal(r.handler, call, finish)
	default:
		e.sendToWorker(r.conn, call, finish)
	}
}

// runLocal runs an in-process handler in an engine-owned goroutine.
func (e *Engine) runLocal(h Handler, call Call, finish func(outcome)) {
	ok := e.goSafe(func() {
		ctx, cancel := context.WithTimeout(e.ctx, e.opts.InvocationTimeout)
		defer cancel()
		res, err := h(ContextWithCall(ctx, &call), &call)
		finish(outcomeOf(res, err, e.opts.InvocationTimeout))
	})
	if !ok {
		finish(failed(CodeShutdown, "engine is shutting down"))
	}
}

func outcomeOf(res json.RawMessage, err error, timeout time.Duration) outcome {
	if err == nil {
		return outcome{result: res}
	}
	var eb *protocol.ErrorBody
	switch {
	case errors.As(err, &eb):
		return outcome{err: eb}
	case errors.Is(err, context.DeadlineExceeded):
		return failed(CodeTimeout, "invocation timed out after %dms", timeout.Milliseconds())
	case errors.Is(err, context.Canceled):
		return failed(CodeShutdown, "engine is shutting down")
	}
	return failed("invocation_failed", "%s", err.Error())
}

// sendToWorker records the call as pending on the target and queues the
// invokefunction to it. dispatch has already counted it in the target's
// in-flight calls; completing the pending entry uncounts it.
func (e *Engine) sendToWorker(target *conn, call Call, finish func(outcome)) {
	p := &pending{target: target, functionID: call.FunctionID, finish: finish,
		deadline: time.Now().Add(e.opts.InvocationTimeout).UnixNano()}
	target.mu.Lock()
	if target.gone {
		target.mu.Unlock()
		target.inflight.Add(-1)
		finish(failed(CodeInvocationStopped, "Invocation stopped"))
		return
	}
	id := call.InvocationID
	if _, dup := target.pending[id]; dup {
		id = uuid.NewString() // two callers chose the same id; keep both apart
	}
	target.pending[id] = p
	target.mu.Unlock()

	fid := call.FunctionID
	if target.session != nil {
		fid = target.session.localID(fid) // the worker knows it without its prefix
	}
	frame, err := protocol.Encode(protocol.InvokeFunction{
		InvocationID: id, FunctionID: fid, Data: call.Data,
		Traceparent: call.Traceparent, Baggage: call.Baggage, Metadata: call.Metadata,
	})
	if err == nil {
		err = target.send(frame)
	}
	if err != nil {
		if p := target.take(id); p != nil {
			p.complete(failed(CodeChannelSendFailed, "could not send %s to worker %s: %v", call.FunctionID, target.id, err))
		}
	}
}

// resultFromWorker completes a pending call with the worker's answer.
func (e *Engine) resultFromWorker(c *conn, m protocol.InvocationResult) {
	p := c.take(m.InvocationID)
	if p == nil {
		if n, ok := c.badLog.allow(time.Now()); ok {
			c.log.Warn("result for an unknown or finished invocation dropped",
				"invocation_id", m.InvocationID, "function_id", m.FunctionID, "suppressed", n)
		}
		return
	}
	p.complete(outcome{result: m.Result, err: m.Error, traceparent: m.Traceparent, baggage: m.Baggage})
}

// QueueEnqueueFunction is the function an enqueue action is handed to; the
// queue module provides it.
const QueueEnqueueFunction = "engine::queue::enqueue"

// enqueue hands a call to the queue module and answers the caller with a
// message receipt at once.
func (e *Engine) enqueue(call Call, queue string, done func(outcome)) {
	if queue == "" {
		done(failed(CodeEnqueueError, "cannot enqueue %s: action.queue is empty; name a queue (\"default\" always exists)", call.FunctionID))
		return
	}
	receipt := uuid.NewString()
	payload, err := json.Marshal(struct {
		Queue       string          `json:"queue"`
		FunctionID  string          `json:"function_id"`
		Data        json.RawMessage `json:"data"`
		Receipt     string          `json:"messageReceiptId"`
		Traceparent string          `json:"traceparent,omitempty"`
		Baggage     string          `json:"baggage,omitempty"`
	}{queue, call.FunctionID, call.Data, receipt, call.Traceparent, withBaggage(call.Baggage, FunctionBaggageKey, call.FunctionID)})
	if err != nil {
		done(failed(CodeEnqueueError, "encode enqueue payload: %v", err))
		return
	}
	e.dispatch(Call{FunctionID: QueueEnqueueFunction, Data: payload, Metadata: call.Metadata,
		Traceparent: call.Traceparent, Baggage: call.Baggage, CallerWorkerID: call.CallerWorkerID, Trigger: call.Trigger},
		func(o outcome) {
			switch {
			case o.err != nil && o.err.Code == CodeFunctionNotFound:
				done(failed(CodeEnqueueError, "cannot enqueue %s on queue %q: no queue module is running (add QueueModule to config.yaml)", call.FunctionID, queue))
			case o.err != nil:
				done(failed(CodeEnqueueError, "cannot enqueue %s on queue %q: %s", call.FunctionID, queue, o.err.Message))
			default:
				done(outcome{result: json.RawMessage(`{"messageReceiptId":"` + receipt + `"}`)})
			}
		})
}

type callKey struct{}

// ContextWithCall returns ctx carrying call: engine calls made with it
// continue call's trace. The engine gives every in-process handler such a
// context; a module that fires work from its own goroutines uses this to
// keep the trace of the call that caused it.
func ContextWithCall(ctx context.Context, call *Call) context.Context {
	return context.WithValue(ctx, callKey{}, call)
}

// CallFromContext returns the call an in-process handler is serving.
func CallFromContext(ctx context.Context) (*Call, bool) {
	c, ok := ctx.Value(callKey{}).(*Call)
	return c, ok && c != nil
}

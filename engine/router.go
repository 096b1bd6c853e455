package engine

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
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
	// An observe.v2 host's report (invocationresult.matched/delivered),
	// read by the observers of the call and never forwarded.
	matched    []string
	hasMatched bool
	delivered  bool
	// vouched may vouch for result: a worker's answer its connection's
	// decoder found compact (protocol.Compact).
	vouched protocol.Compact
}

func failed(code, format string, args ...any) outcome {
	return outcome{err: &protocol.ErrorBody{Code: code, Message: fmt.Sprintf(format, args...)}}
}

// pending is a call sent to a worker and not yet answered.
type pending struct {
	target     *conn
	caller     *conn  // the worker that made the call; nil for in-process callers
	id         string // its key in target.pending
	functionID string
	deadline   int64 // unix nanos; the sweeper fails the call after it
	finish     func(outcome)
	// abandoned is set when the call ends before its answer (timeout,
	// caller gone): a writer that has not sent it yet skips it.
	abandoned atomic.Bool
}

// callRef lets an in-process caller that gives up release its call at
// once. sendToWorker stores the pending entry, then checks gaveUp; the
// caller sets gaveUp, then loads the entry: whichever comes second
// releases it.
type callRef struct {
	p      atomic.Pointer[pending]
	gaveUp atomic.Bool
}

func (r *callRef) set(p *pending) {
	r.p.Store(p)
	if r.gaveUp.Load() {
		p.target.release(p, "its caller gave up")
	}
}

func (r *callRef) giveUp() {
	r.gaveUp.Store(true)
	if p := r.p.Load(); p != nil {
		p.target.release(p, "its caller gave up")
	}
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

// snapshotConns appends the live connections to dst, so a sweep can visit
// them without holding e.mu.
func (e *Engine) snapshotConns(dst []*conn) []*conn {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, c := range e.conns {
		dst = append(dst, c)
	}
	return dst
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
			conns = e.snapshotConns(conns[:0])
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
			p.abandoned.Store(true)
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

// release ends p at once if it is still pending (its caller has given up):
// the target gets nothing more for it, and its answer, if one comes, is
// dropped as late.
func (c *conn) release(p *pending, why string) {
	c.mu.Lock()
	if c.pending[p.id] != p {
		c.mu.Unlock()
		return
	}
	delete(c.pending, p.id)
	c.mu.Unlock()
	p.abandoned.Store(true)
	p.complete(failed(CodeInvocationStopped, "invocation of %s released: %s", p.functionID, why))
}

// releaseCallsOf releases every call that caller made and that is still
// pending on some worker: a worker that disconnects gives up on its calls.
// It scans the pending tables once, so the hot path keeps no per-caller
// index.
func (e *Engine) releaseCallsOf(caller *conn) {
	e.mu.RLock()
	targets := make([]*conn, 0, len(e.conns))
	for _, c := range e.conns {
		targets = append(targets, c)
	}
	e.mu.RUnlock()
	var gone []*pending
	for _, t := range targets {
		t.mu.Lock()
		for id, p := range t.pending {
			if p.caller == caller {
				delete(t.pending, id)
				p.abandoned.Store(true)
				gone = append(gone, p)
			}
		}
		t.mu.Unlock()
	}
	for _, p := range gone {
		p.complete(failed(CodeInvocationStopped, "invocation of %s released: caller %s disconnected", p.functionID, caller.id))
	}
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
	// Namespace the function resolves in; "" is the default one.
	Namespace string
	// Caller is who made the call, as a 0.25+ worker serving it is told
	// (another engine's forwarded call names its calling worker here).
	Caller *protocol.Caller
	// Binding is the id of the trigger binding that fires the call, if
	// any. A binding that stands for an observer (the direct bindings of
	// engine-hosted sources such as http::on-request, sources.go) routes
	// the call through that observer: to its target, under its policy
	// (max_fires, max_in_flight, loop guard), counted in its fires.
	Binding string
}

// Invoke calls a function and waits for its result. A function error is
// returned as a *protocol.ErrorBody. Void calls return at once with no
// result. The wait ends with ctx; the call itself is still bounded by the
// engine's invocation timeout.
//
// A call made from inside an in-process handler (with the ctx the handler
// got, or one from ContextWithCall) continues that call's trace when req
// names no traceparent of its own.
//
// When ctx ends with the cause ErrResultNotNeeded, Invoke returns at once
// but the call runs on: its result, when it comes, is discarded as
// answered, not counted as a late result.
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
	if id, ok := strings.CutPrefix(req.Binding, directBindingPrefix); ok && req.Action == nil {
		return e.invokeThroughObserver(ctx, id, req)
	}
	call := Call{FunctionID: req.FunctionID, Data: req.Data, Metadata: req.Metadata,
		Traceparent: req.Traceparent, Baggage: req.Baggage, Trigger: req.Trigger, Namespace: req.Namespace, Caller: req.Caller}
	if req.Action != nil && req.Action.Type == protocol.ActionVoid {
		// Held back (with ctx) while the target's queue is full.
		if err := e.route(ctx, nil, nil, call, func(outcome) {}); err != nil {
			return nil, fmt.Errorf("engine: invoke %s: %w", req.FunctionID, err)
		}
		return nil, nil
	}
	ch := make(chan outcome, 1)
	done := func(o outcome) { ch <- o }
	ref := new(callRef)
	if req.Action != nil && req.Action.Type == protocol.ActionEnqueue {
		e.enqueue(call, req.Action.Queue, done)
	} else if err := e.route(ctx, nil, ref, call, done); err != nil {
		return nil, fmt.Errorf("engine: invoke %s: %w", req.FunctionID, err)
	}
	select {
	case o := <-ch:
		if o.err != nil {
			return nil, o.err
		}
		return o.result, nil
	case <-ctx.Done():
		if cause := context.Cause(ctx); errors.Is(cause, ErrResultNotNeeded) {
			return nil, fmt.Errorf("engine: invoke %s: %w", req.FunctionID, cause) // its outcome lands in ch, unread
		}
		ref.giveUp() // the pending entry goes now, not at the engine timeout
		return nil, fmt.Errorf("engine: invoke %s: %w", req.FunctionID, ctx.Err())
	}
}

// ErrResultNotNeeded, as the cause of an Invoke's context ending
// (context.WithCancelCause), says the caller no longer needs the result
// but the call is to run on; see Invoke.
var ErrResultNotNeeded = errors.New("engine: result not needed")

// invokeFromWorker routes a worker's invokefunction.
// vouched may vouch for m.Data (protocol.Decoder.Vouched).
func (e *Engine) invokeFromWorker(caller *conn, m protocol.InvokeFunction, vouched protocol.Compact) {
	if caller.session != nil && e.intercept(caller, m) {
		return // refused by RBAC, or handed to the listener's middleware
	}
	data, vouched := protocol.AppendMember(m.Data, vouched, callerWorkerKey, caller.id)
	call := Call{
		InvocationID: m.InvocationID, FunctionID: m.FunctionID,
		Data: data, vouched: vouched, Metadata: m.Metadata,
		Traceparent: m.Traceparent, Baggage: m.Baggage, CallerWorkerID: caller.id,
		ObserveDepth: m.ObserveDepth, input: m.Data,
		Namespace: m.Namespace, Caller: m.Caller, caller: caller,
	}
	if m.Activation != nil {
		e.callThroughObserver(caller, m)
		return
	}
	if m.FunctionID == registerWorkerFunction {
		// Applied here, in order with the worker's other frames, so what it
		// declares (namespace, features) is in place for the frames after it.
		if err := e.registerWorker(caller, m.Data); err == nil {
			call.declared = true
		}
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
			caller.sendResult(&protocol.InvocationResult{
				InvocationID: id, FunctionID: fn, Result: o.result, Error: o.err,
				Traceparent: o.traceparent, Baggage: o.baggage,
			}, o.vouched)
		}
	}
	if m.Action != nil && m.Action.Type == protocol.ActionEnqueue {
		e.enqueue(call, m.Action.Queue, done)
		return
	}
	// The caller's reader pauses here while the target's queue is full.
	call.detached = void
	e.route(caller.ctx, caller, nil, call, done)
}

// callerWorkerKey is the payload member naming the calling worker.
const callerWorkerKey = "_caller_worker_id"

// injectCaller adds "_caller_worker_id" to an object payload. It is added
// last so it wins over a key of the same name sent by the caller (JSON
// parsers keep the last duplicate).
func injectCaller(data json.RawMessage, workerID string) json.RawMessage {
	out, _ := protocol.AppendMember(data, protocol.Compact{}, callerWorkerKey, workerID)
	return out
}

// dispatch routes one call and reports its outcome to done exactly once.
// It never waits for a worker: engine-made fire-and-forget calls (trigger
// firings) are few and must not stall whoever fires them.
func (e *Engine) dispatch(call Call, done func(outcome)) {
	//lint:ignore SA1012 a nil ctx is route's way of saying: never wait for room
	e.route(nil, nil, nil, call, done)
}

// route routes one call and reports its outcome to done exactly once. With
// a non-nil ctx, a call to a worker whose outbound queue is full first
// waits for room (awaitRoom); from is the worker whose reader makes the
// call, nil for in-process callers. ref, if set, receives the pending
// entry so the caller can release it. The error is non-nil only when the
// call was never sent because ctx ended while waiting (done has then been
// told too).
func (e *Engine) route(ctx context.Context, from *conn, ref *callRef, call Call, done func(outcome)) error {
	key := call.FunctionID
	if strings.IndexByte(key, 0) >= 0 {
		// A function key (a trigger binding's or an enqueued call's).
		call.Namespace, call.FunctionID = splitKey(key)
	} else {
		key = fnKey(call.Namespace, key)
	}
	if e.breaks.armed.Load() && !call.resumed && e.hold(ctx, call, done) {
		return nil // held at a breakpoint (breakpoints.go)
	}
	e.mu.RLock()
	var r *registration
	f := e.functions[key]
	if f == nil && key != call.FunctionID && strings.HasPrefix(call.FunctionID, "engine::") {
		f = e.functions[call.FunctionID] // the engine's own, in the default namespace
		key = call.FunctionID
	}
	if f != nil {
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
	// Every routed call is a span of the engine's, a child of the caller's
	// span (or a new trace) and the parent of what the target does, while
	// something records calls (the TUI, the observability module, an
	// attached workbench) and for the engine's own handlers, whose fan-out
	// shares the trace. A call to a worker while nothing records passes the
	// caller's context through as it came, as the real iii does: a span no
	// one records would be a gap in the caller's trace, and a call that had
	// no trace gets none.
	recording := e.bus.Active()
	toWorker := r != nil && r.conn != nil
	mint := recording || !toWorker
	var span spanContext
	var parent [8]byte
	if mint {
		span, parent = childSpan(call.Traceparent)
	}
	start := time.Now()
	target, targetName := "", ""
	if toWorker {
		target = r.conn.id
	}
	if mint || call.Traceparent != "" || call.Baggage != "" {
		// The traceparent and, towards a worker, the baggage naming the
		// function share one allocation.
		var stack [256]byte
		b := stack[:0]
		if mint {
			b = span.appendTraceparent(b)
		} else {
			b = append(b, call.Traceparent...)
		}
		n := len(b)
		if toWorker {
			b = appendBaggage(b, call.Baggage, FunctionBaggageKey, call.FunctionID)
		}
		s := string(b)
		call.Traceparent = s[:n]
		if toWorker {
			call.Baggage = s[n:]
		}
	}
	if call.Trigger == "" {
		call.Trigger = TriggerKindEngine
		if call.CallerWorkerID != "" {
			call.Trigger = TriggerKindWorker
		}
	}
	if r != nil && r.obs != nil && r.obs.private && call.Activation == nil && r.conn != nil && call.CallerWorkerID != r.conn.id {
		r.conn.inflight.Add(-1)
		done(failed(protocol.CodeForbidden, "%s is private: only the worker that registered it may call it", call.FunctionID))
		return nil
	}
	if e.obs.observed(key) {
		// Observers of the function see the call once it has ended. They
		// get a copy: call itself must not escape (that would cost an
		// allocation on every call, observed or not).
		next, reg, observed := done, r, call
		done = func(o outcome) {
			e.observeRouted(key, &observed, reg, o, start)
			next(o)
		}
	}
	finish := done
	if recording {
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
		// The fields it needs, not call itself (see observed above).
		invocationID, functionID, callerID, trigger := call.InvocationID, call.FunctionID, call.CallerWorkerID, call.Trigger
		finish = func(o outcome) {
			ev := event.InvocationFinished{InvocationID: invocationID, FunctionID: functionID,
				CallerWorkerID: callerID, TargetWorkerID: target, Worker: targetName, Trigger: trigger,
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
			finish(e.notFound(nsOrDefault(call.Namespace), call.FunctionID))
		}
	case r.handler != nil:
		e.runLocal(r.handler, call, finish)
	default:
		return e.sendToWorker(ctx, from, ref, r.conn, call, finish)
	}
	return nil
}

// runLocal runs an in-process handler in an engine-owned goroutine.
func (e *Engine) runLocal(h Handler, call Call, finish func(outcome)) {
	ok := e.group.Go(func() {
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
// invokefunction to it, first waiting for room in the target's queue when
// ctx is set. dispatch has already counted it in the target's in-flight
// calls; completing the pending entry uncounts it.
func (e *Engine) sendToWorker(ctx context.Context, from *conn, ref *callRef, target *conn, call Call, finish func(outcome)) error {
	owner := from // whose leaving releases the call
	if call.detached {
		owner = nil
	}
	if ctx != nil {
		// A void call whose caller left while it waited is still sent:
		// fire-and-forget outlives the caller (one frame over the mark).
		if err := e.awaitRoom(ctx, from, target); err != nil && (!call.detached || errors.Is(err, ErrEngineClosed)) {
			target.inflight.Add(-1)
			finish(failed(CodeInvocationStopped, "invocation of %s not sent: the caller gave up while worker %s was not keeping up (%v)",
				call.FunctionID, target.id, err))
			return err
		}
	}
	deadline := call.deadline
	if deadline == 0 {
		deadline = time.Now().Add(e.opts.InvocationTimeout).UnixNano()
	}
	p := &pending{target: target, caller: owner, functionID: call.FunctionID, finish: finish, deadline: deadline}
	target.mu.Lock()
	if target.gone {
		target.mu.Unlock()
		target.inflight.Add(-1)
		finish(failed(CodeInvocationStopped, "Invocation stopped"))
		return nil
	}
	id := call.InvocationID
	if _, dup := target.pending[id]; dup {
		id = uuid.NewString() // two callers chose the same id; keep both apart
	}
	p.id = id
	target.pending[id] = p
	target.mu.Unlock()
	if ref != nil {
		ref.set(p)
	}

	fid := call.FunctionID
	if target.session != nil {
		fid = target.session.localID(fid) // the worker knows it without its prefix
	}
	inv := protocol.InvokeFunction{
		InvocationID: id, FunctionID: fid, Data: call.Data,
		Traceparent: call.Traceparent, Baggage: call.Baggage, Metadata: call.Metadata,
		ObserveDepth: call.ObserveDepth, Activation: call.Activation,
	}
	if target.declared() {
		// Only the 0.25+ SDKs read these; the 0.22 ones get the frame as
		// before.
		inv.Caller = call.StampedCaller()
		if ns := nsOrDefault(call.Namespace); ns != DefaultNamespace {
			inv.Namespace = ns
		}
	}
	buf := frameBuf()
	frame, err := protocol.AppendInvokeVouched((*buf)[:0], &inv, call.vouched)
	if err == nil && !target.fits(len(frame)) {
		e.drop(DropTooLarge, 1, "worker_id", target.id, "function_id", call.FunctionID, "bytes", len(frame))
		*buf = frame
		(&outFrame{buf: buf}).release()
		if p := target.take(id); p != nil {
			p.complete(failed(CodePayloadTooLarge, "invokefunction of %s is %d bytes, over the %d bytes worker %s reads",
				call.FunctionID, len(frame), target.sendLimit(), target.id))
		}
		return nil
	}
	if err == nil {
		*buf = frame
		err = target.out.push(outFrame{b: frame, call: p, buf: buf})
	}
	if err != nil {
		if p := target.take(id); p != nil {
			code := CodeChannelSendFailed
			if errors.Is(err, errQueueClosed) {
				code = CodeInvocationStopped
			}
			p.complete(failed(code, "could not send %s to worker %s: %v", call.FunctionID, target.id, err))
		}
	}
	return nil
}

// stallCheck is how often a paused reader re-checks its own queue (see
// awaitRoom).
const stallCheck = 20 * time.Millisecond

// awaitRoom waits until target's outbound queue is below its high-water
// mark. This is the only place the engine makes a producer wait, and the
// order of waits is what keeps it free of deadlocks:
//
//   - Nothing waits while holding a lock: Engine.mu, conn.mu and outq.mu
//     are all released before awaitRoom is called.
//   - Only calls wait. Answers (invocationresult) and control frames are
//     queued without waiting, so a call already admitted can always be
//     answered, and a reader never waits to deliver a result.
//   - A reader never waits for its own queue (a worker calling itself).
//   - A reader whose own queue is itself full stops waiting and sends: if A
//     waits for B while B waits for A, both queues are full, so both go on
//     (the queues overshoot their mark instead of deadlocking; the
//     overshoot is bounded by what the two workers send before their
//     queues drain). The check runs every stallCheck.
//   - Every wait ends with ctx (the calling worker's connection, or an
//     in-process caller's context), with the engine's shutdown, or when the
//     target closes (its queue closes, and the push that follows fails
//     with invocation_stopped). A target that stops reading is closed by
//     stallLoop after SlowConsumerTimeout, so no wait outlives that bound.
//
// While a worker's reader waits it reads nothing more from its socket:
// TCP pushes back on that worker, which is how a fast producer is slowed.
func (e *Engine) awaitRoom(ctx context.Context, from, target *conn) error {
	if target == from {
		return nil
	}
	stalled := false
	var recheck <-chan time.Time // nil for in-process callers: they wait for room or ctx
	for {
		room := target.out.wait()
		if room == nil {
			break
		}
		if from != nil && from.out.full() {
			break
		}
		if !stalled {
			stalled = true
			e.stalls.Add(1)
			if from != nil {
				from.paused.Store(true)
				defer from.paused.Store(false)
				t := time.NewTicker(stallCheck)
				defer t.Stop()
				recheck = t.C
			}
		}
		select {
		case <-room:
		case <-recheck:
		case <-ctx.Done():
			return ctx.Err()
		case <-e.ctx.Done():
			return ErrEngineClosed
		}
	}
	return nil
}

// resultFromWorker completes a pending call with the worker's answer.
// vouched may vouch for m.Result (protocol.Decoder.Vouched).
func (e *Engine) resultFromWorker(c *conn, m protocol.InvocationResult, vouched protocol.Compact) {
	p := c.take(m.InvocationID)
	if p == nil {
		e.drop(DropLateResult, 1, "worker_id", c.id, "invocation_id", m.InvocationID, "function_id", m.FunctionID)
		return
	}
	p.complete(outcome{result: m.Result, err: m.Error, traceparent: m.Traceparent, baggage: m.Baggage,
		matched: m.Matched, hasMatched: m.Matched != nil, delivered: m.Delivered, vouched: vouched})
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
	}{queue, fnKey(call.Namespace, call.FunctionID), call.Data, receipt, call.Traceparent, withBaggage(call.Baggage, FunctionBaggageKey, call.FunctionID)})
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

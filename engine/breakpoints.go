package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/watch"
)

// Breakpoints on calls (iii break, the TUI's b key): a call of a function
// with a breakpoint stops in route before it is dispatched and waits for
// a decision through engine::breakpoints::release: continue (with an
// edited payload or not), fail with an error, or drop. Its engine-side
// deadline keeps running while it is held. A breakpoint belongs to the
// connection that set it; when that connection ends, its breakpoints go
// and the calls they hold continue unchanged.
//
// The router pays one atomic load per call while no breakpoint is set.

// CodeBreakpointFailed is the default error code of a held call failed
// by the user.
const CodeBreakpointFailed = "breakpoint_failed"

type breakpoints struct {
	armed atomic.Bool // a breakpoint is set: route checks the table

	mu   sync.Mutex
	fns  map[string]string    // function id -> owner (worker id; "" in-process)
	held map[string]*heldCall // by hold id
}

// heldCall is a call stopped at a breakpoint.
type heldCall struct {
	info   watch.HeldCall
	owner  string // the breakpoint's owner when it stopped
	call   Call
	done   func(outcome)
	decide chan watch.Release // cap 1; written once, under mu
}

func (e *Engine) registerBreakpoints() error {
	for _, f := range []Function{
		{ID: watch.FnBreakSet, Description: "Hold calls of function_ids until released (the breakpoint ends with the caller's connection)", Handler: e.fnBreakSet},
		{ID: watch.FnBreakClear, Description: "Remove breakpoints (function_ids, or all the caller set); their held calls continue", Handler: e.fnBreakClear},
		{ID: watch.FnBreakList, Description: "List breakpoints and the calls held at them", Handler: e.fnBreakList},
		{ID: watch.FnBreakRelease, Description: "Continue (with data), fail or drop a held call", Handler: e.fnBreakRelease},
	} {
		if err := e.RegisterFunction(BuiltinWorker, f); err != nil {
			return err
		}
	}
	return nil
}

// hold stops call if its function has a breakpoint, and then owns done.
func (e *Engine) hold(ctx context.Context, call Call, done func(outcome)) bool {
	if call.Trigger == watch.DeliveryKind {
		return false
	}
	b := &e.breaks
	b.mu.Lock()
	owner, ok := b.fns[call.FunctionID]
	if !ok {
		b.mu.Unlock()
		return false
	}
	if call.InvocationID == "" {
		call.InvocationID = uuid.NewString()
	}
	if call.Trigger == "" { // as route names it
		call.Trigger = TriggerKindEngine
		if call.CallerWorkerID != "" {
			call.Trigger = TriggerKindWorker
		}
	}
	now := time.Now()
	h := &heldCall{owner: owner, call: call, done: done, decide: make(chan watch.Release, 1),
		info: watch.HeldCall{HoldID: uuid.NewString(), InvocationID: call.InvocationID, FunctionID: call.FunctionID,
			Caller: call.CallerWorkerID, Trigger: call.Trigger, Data: call.Data, HeldAt: now,
			Deadline: now.Add(e.opts.InvocationTimeout)}}
	var gone <-chan struct{}
	if ctx != nil && !call.detached {
		gone = ctx.Done() // the caller left or gave up
	}
	// Exits on a decision, the deadline, the caller leaving or shutdown.
	if !e.group.Go(func() { e.awaitDecision(h, gone) }) {
		b.mu.Unlock()
		return false
	}
	if b.held == nil {
		b.held = map[string]*heldCall{}
	}
	b.held[h.info.HoldID] = h
	b.mu.Unlock()
	e.bus.Publish(event.CallHeld{HoldID: h.info.HoldID, InvocationID: call.InvocationID, FunctionID: call.FunctionID,
		CallerWorkerID: call.CallerWorkerID, Trigger: call.Trigger, Data: call.Data, Deadline: h.info.Deadline, At: now})
	return true
}

// awaitDecision is the held call's goroutine.
func (e *Engine) awaitDecision(h *heldCall, gone <-chan struct{}) {
	timer := time.NewTimer(time.Until(h.info.Deadline))
	defer timer.Stop()
	fn, timeout := h.call.FunctionID, e.opts.InvocationTimeout
	timedOut := failed(CodeTimeout, "invocation of %s timed out after %dms (held at a breakpoint)", fn, timeout.Milliseconds())
	select {
	case r := <-h.decide:
		switch r.Action {
		case watch.ActionFail:
			code := r.Code
			if code == "" {
				code = CodeBreakpointFailed
			}
			msg := r.Error
			if msg == "" {
				msg = "failed at a breakpoint"
			}
			e.endHeld(h, outcome{err: &protocol.ErrorBody{Code: code, Message: msg}})
		case watch.ActionDrop:
			// Never delivered: the caller sees what a lost call looks like.
			select {
			case <-timer.C:
				e.endHeld(h, timedOut)
			case <-gone:
				e.endHeld(h, failed(CodeInvocationStopped, "invocation of %s released: its caller gave up", fn))
			case <-e.ctx.Done():
				e.endHeld(h, failed(CodeShutdown, "engine is shutting down"))
			}
		default:
			call := h.call
			if len(r.Data) > 0 {
				call.Data = r.Data
				if call.CallerWorkerID != "" {
					call.Data = injectCaller(call.Data, call.CallerWorkerID)
				}
			}
			call.resumed, call.deadline = true, h.info.Deadline.UnixNano()
			//lint:ignore SA1012 a nil ctx is route's way of saying: never wait for room
			e.route(nil, nil, nil, call, h.done)
		}
		return
	case <-timer.C:
		e.endHeld(h, timedOut)
		e.resumed(h, event.HeldTimedOut)
	case <-gone:
		e.endHeld(h, failed(CodeInvocationStopped, "invocation of %s released: its caller gave up while it was held", fn))
		e.resumed(h, event.HeldStopped)
	case <-e.ctx.Done():
		e.endHeld(h, failed(CodeShutdown, "engine is shutting down"))
		e.resumed(h, event.HeldStopped)
	}
}

// endHeld answers a held call that is not delivered, and publishes its
// end so the invocation tail shows it like any failed call.
func (e *Engine) endHeld(h *heldCall, o outcome) {
	if e.bus.Active() && o.err != nil {
		status := event.StatusError
		if o.err.Code == CodeTimeout {
			status = event.StatusTimeout
		}
		e.bus.Publish(event.InvocationFinished{InvocationID: h.info.InvocationID, FunctionID: h.info.FunctionID,
			CallerWorkerID: h.call.CallerWorkerID, Trigger: h.call.Trigger, Status: status, ErrorCode: o.err.Code,
			ErrorMessage: o.err.Message, Duration: time.Since(h.info.HeldAt), At: time.Now()})
	}
	h.done(o)
}

// resumed forgets a call that ended on its own while held.
func (e *Engine) resumed(h *heldCall, outcome string) {
	b := &e.breaks
	b.mu.Lock()
	_, ok := b.held[h.info.HoldID]
	delete(b.held, h.info.HoldID)
	b.mu.Unlock()
	if ok {
		e.bus.Publish(event.CallResumed{HoldID: h.info.HoldID, InvocationID: h.info.InvocationID,
			FunctionID: h.info.FunctionID, Outcome: outcome, At: time.Now()})
	}
}

// decide hands r to the held call; false when it is not held (any more).
func (e *Engine) decide(r watch.Release) bool {
	b := &e.breaks
	b.mu.Lock()
	h := b.held[r.HoldID]
	delete(b.held, r.HoldID)
	if h != nil {
		h.decide <- r
	}
	b.mu.Unlock()
	if h == nil {
		return false
	}
	outcome := event.HeldContinued
	switch r.Action {
	case watch.ActionFail:
		outcome = event.HeldFailed
	case watch.ActionDrop:
		outcome = event.HeldDropped
	}
	e.bus.Publish(event.CallResumed{HoldID: h.info.HoldID, InvocationID: h.info.InvocationID,
		FunctionID: h.info.FunctionID, Outcome: outcome, At: time.Now()})
	return true
}

// setBreaks sets or clears breakpoints. clear with no ids removes all of
// owner's. The calls held at cleared breakpoints continue.
func (e *Engine) setBreaks(owner string, ids []string, set bool) {
	b := &e.breaks
	var release []string
	b.mu.Lock()
	if b.fns == nil {
		b.fns = map[string]string{}
	}
	switch {
	case set:
		for _, id := range ids {
			b.fns[id] = owner
		}
	case len(ids) == 0:
		for id, o := range b.fns {
			if o == owner {
				delete(b.fns, id)
			}
		}
	default:
		for _, id := range ids {
			delete(b.fns, id)
		}
	}
	for hid, h := range b.held {
		if _, ok := b.fns[h.info.FunctionID]; !ok {
			release = append(release, hid)
		}
	}
	b.armed.Store(len(b.fns) > 0)
	all := slices.Sorted(mapKeys(b.fns))
	b.mu.Unlock()
	e.bus.Publish(event.BreakpointsChanged{FunctionIDs: all, At: time.Now()})
	for _, hid := range release {
		e.decide(watch.Release{HoldID: hid, Action: watch.ActionContinue})
	}
}

// breakOwnerGone ends a session: its breakpoints go and their calls
// continue.
func (e *Engine) breakOwnerGone(owner string) {
	if !e.breaks.armed.Load() {
		return
	}
	e.breaks.mu.Lock()
	mine := false
	for _, o := range e.breaks.fns {
		mine = mine || o == owner
	}
	e.breaks.mu.Unlock()
	if mine {
		e.setBreaks(owner, nil, false)
	}
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// list copies the breakpoints and held calls, sorted.
func (b *breakpoints) list() ([]watch.Breakpoint, []watch.HeldCall) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bps := make([]watch.Breakpoint, 0, len(b.fns))
	for id, o := range b.fns {
		bps = append(bps, watch.Breakpoint{FunctionID: id, Owner: o})
	}
	slices.SortFunc(bps, func(a, b watch.Breakpoint) int { return strings.Compare(a.FunctionID, b.FunctionID) })
	held := make([]watch.HeldCall, 0, len(b.held))
	for _, h := range b.held {
		held = append(held, h.info)
	}
	slices.SortFunc(held, func(a, b watch.HeldCall) int { return a.HeldAt.Compare(b.HeldAt) })
	return bps, held
}

func (e *Engine) breakList() (json.RawMessage, error) {
	bps, held := e.breaks.list()
	return marshal(watch.BreakList{Breakpoints: bps, Held: held})
}

func breakArgs(call *Call) ([]string, error) {
	var in watch.BreakArgs
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	for _, id := range in.FunctionIDs {
		switch {
		case id == "":
			return nil, badArgs("function_ids: an id is empty")
		case strings.HasPrefix(id, "engine::"):
			return nil, badArgs("function_ids: %q is the engine's own; breakpoints are for workers' functions", id)
		}
	}
	return in.FunctionIDs, nil
}

func (e *Engine) fnBreakSet(_ context.Context, call *Call) (json.RawMessage, error) {
	ids, err := breakArgs(call)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, badArgs("function_ids is required")
	}
	e.setBreaks(call.CallerWorkerID, ids, true)
	return e.breakList()
}

func (e *Engine) fnBreakClear(_ context.Context, call *Call) (json.RawMessage, error) {
	ids, err := breakArgs(call)
	if err != nil {
		return nil, err
	}
	e.setBreaks(call.CallerWorkerID, ids, false)
	return e.breakList()
}

func (e *Engine) fnBreakList(context.Context, *Call) (json.RawMessage, error) { return e.breakList() }

func (e *Engine) fnBreakRelease(_ context.Context, call *Call) (json.RawMessage, error) {
	var in watch.Release
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	switch in.Action {
	case "", watch.ActionContinue, watch.ActionFail, watch.ActionDrop:
	default:
		return nil, badArgs("action must be continue, fail or drop, got %q", in.Action)
	}
	if len(in.Data) > 0 && !json.Valid(in.Data) {
		return nil, badArgs("data is not valid JSON")
	}
	if in.HoldID == "" {
		return nil, badArgs("hold_id is required")
	}
	if !e.decide(in) {
		return nil, &protocol.ErrorBody{Code: CodeNotFound, Message: fmt.Sprintf("no call is held as %s (released, failed, dropped or timed out)", in.HoldID)}
	}
	return json.RawMessage(`{"ok":true}`), nil
}

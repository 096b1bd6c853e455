package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/observe"
	"github.com/iii-workbench/iii/engine/protocol"
)

// This file turns observed calls into activations: routed calls of worker
// or in-process functions (evaluated here), local calls hosts report
// (invocationsobserved, already matched by the host), events of
// engine-hosted sources (Activate), and calls through an observer
// (invokefunction.activation from the source's host).

// observed is one observed call, whatever reported it.
type observed struct {
	functionID   string
	namespace    string
	invocationID string
	ok           bool
	input        json.RawMessage // nil: absent
	output       json.RawMessage
	err          json.RawMessage // {code, message}
	caller       json.RawMessage
	metadata     json.RawMessage
	startedAt    time.Time
	duration     time.Duration
	depth        uint32
	traceparent  string
	baggage      string
}

func (ob *observed) doc() observe.Doc {
	d := observe.Doc{Input: ob.input, Caller: ob.caller, Metadata: ob.metadata}
	if ob.ok {
		d.Output = ob.output
		if d.Output == nil {
			d.Output = json.RawMessage("null")
		}
	} else {
		d.Error = ob.err
	}
	if d.Input == nil {
		d.Input = json.RawMessage("null")
	}
	return d
}

func onAccepts(on string, ok bool) bool {
	switch on {
	case protocol.OnComplete:
		return true
	case protocol.OnError:
		return !ok
	}
	return ok
}

// activation is one invocation of an observer's target.
type activation struct {
	o       *observer
	ob      *observed
	payload json.RawMessage // set for a call through the observer: sent as is
	depth   uint32
	id      string
	// done receives the target's outcome (calls through an observer and
	// Activate wait for it); nil for fire-and-forget activations.
	done func(outcome)
}

// observeRouted evaluates the observers of a routed call that has ended.
// reg is the registration that served it (nil when none did).
func (e *Engine) observeRouted(key string, call *Call, reg *registration, o outcome, start time.Time) {
	if o.delivered {
		return // the host's deliver hook delivered it
	}
	if reg != nil && reg.obs != nil && reg.obs.owner {
		return // owner delivery: the host emits or calls through its observers
	}
	e.obs.mu.RLock()
	list := slices.Clone(e.obs.byFn[key])
	sourced := e.obs.sources[call.FunctionID] != nil
	e.obs.mu.RUnlock()
	if len(list) == 0 || sourced {
		// An engine-hosted source reports its own events (Activate,
		// ActivateAll): the calls that deliver them to it are not events.
		return
	}
	ob := &observed{functionID: call.FunctionID, namespace: orDefault(call.Namespace), invocationID: call.InvocationID, ok: o.err == nil,
		input: call.input, caller: e.callerDoc(call), metadata: call.Metadata, startedAt: start,
		duration: time.Since(start), depth: call.ObserveDepth, traceparent: call.Traceparent, baggage: call.Baggage}
	if ob.input == nil {
		ob.input = call.Data
	}
	if o.err != nil {
		ob.err = errorJSON(o.err)
	} else {
		ob.output = o.result
		if ob.output == nil {
			ob.output = json.RawMessage("null")
		}
	}
	doc := ob.doc()
	e.log.Debug("observed call", "function_id", call.FunctionID, "observers", len(list), "matched", o.matched, "has_matched", o.hasMatched)
	for _, obs := range list {
		if o.hasMatched && !slices.Contains(o.matched, obs.id) {
			continue
		}
		if !onAccepts(obs.on, ob.ok) || !obs.filter.Matches(doc) {
			continue
		}
		e.activate(obs, ob, nil, nil)
	}
}

func errorJSON(eb *protocol.ErrorBody) json.RawMessage {
	b, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{eb.Code, eb.Message})
	return b
}

// callerDoc is the caller of a routed call as observers see it: what the
// calling SDK asserted, stamped with the calling worker.
func (e *Engine) callerDoc(call *Call) json.RawMessage {
	if call.caller != nil {
		b, _ := json.Marshal(call.caller.stamp(call.Caller))
		return b
	}
	if call.CallerWorkerID == "" {
		return nil
	}
	e.mu.RLock()
	c := e.conns[call.CallerWorkerID]
	e.mu.RUnlock()
	doc := map[string]any{"worker_id": call.CallerWorkerID}
	if c != nil {
		doc["worker_name"] = c.name()
	}
	b, _ := json.Marshal(doc)
	return b
}

// activate starts (or queues) one activation of o's target for ob, or for
// a call through the observer with payload. It reports a refusal to done
// (before it returns) and returns false then.
func (e *Engine) activate(o *observer, ob *observed, payload json.RawMessage, done func(outcome)) bool {
	refuse := func(code, format string, args ...any) {
		if done != nil {
			done(failed(code, format, args...))
		}
	}
	var (
		a         *activation
		code, msg string
	)
	e.observersDo(func(ops *obsOps) {
		a, code, msg = e.admitLocked(o, ob, payload, done, ops)
	})
	if code != "" {
		refuse(code, "%s", msg)
		return false
	}
	if a != nil {
		e.sendActivation(*a)
	}
	return true
}

// admitLocked applies o's policy to one activation: it returns the
// activation to send now, nil when it was queued, or a refusal code.
func (e *Engine) admitLocked(o *observer, ob *observed, payload json.RawMessage, done func(outcome), ops *obsOps) (*activation, string, string) {
	if o.gone || o.state != protocol.ObserverActive {
		ops.events = append(ops.events, event.ObserverDropped{ObserverID: o.id, SourceFunction: o.fn, Reason: "INACTIVE", At: time.Now()})
		return nil, protocol.CodeObserverNotActive, fmt.Sprintf("observer %s of %s is %s", o.id, o.fn, o.state)
	}
	depth := ob.depth + 1
	if depth > MaxObserveDepth {
		e.drop(DropObserve, 1, "observer_id", o.id, "why", "loop guard", "depth", depth)
		ops.events = append(ops.events, event.ObserverDropped{ObserverID: o.id, SourceFunction: o.fn, Reason: protocol.CodeLoopGuard, At: time.Now()})
		msg := fmt.Sprintf("observer %s: %s was called %d observe hops deep (limit %d); the activation was not made", o.id, o.fn, ob.depth, MaxObserveDepth)
		if !o.loopWarned && o.owner != nil {
			o.loopWarned = true // told once: the state stays active
			o.notify(protocol.ObserverStateChanged{ID: o.id, State: o.state,
				Reason: &protocol.ErrorBody{Code: protocol.CodeLoopGuard, Message: msg}, Fires: o.fires})
		}
		return nil, protocol.CodeLoopGuard, msg
	}
	a := activation{o: o, ob: ob, payload: payload, depth: depth, id: uuid.NewString(), done: done}
	if o.maxFlight > 0 && o.inflight >= o.maxFlight {
		if payload != nil {
			return nil, protocol.CodeOverflow, fmt.Sprintf("observer %s has %d activations in flight (max_in_flight)", o.id, o.inflight)
		}
		if len(o.queue) >= maxQueuedActivations {
			o.dropped++
			e.drop(DropObserve, 1, "observer_id", o.id, "why", "activation queue full")
			ops.events = append(ops.events, event.ObserverDropped{ObserverID: o.id, SourceFunction: o.fn, Reason: protocol.CodeOverflow, At: time.Now()})
			return nil, protocol.CodeOverflow, fmt.Sprintf("observer %s: %d activations wait already", o.id, len(o.queue))
		}
		e.countFireLocked(o, ops)
		o.queue = append(o.queue, a)
		return nil, "", ""
	}
	o.inflight++
	e.countFireLocked(o, ops)
	return &a, "", ""
}

// countFireLocked counts one activation; the last one max_fires allows
// disposes the observer (what is already in flight or queued still goes).
func (e *Engine) countFireLocked(o *observer, ops *obsOps) {
	o.fires++
	if o.maxFires > 0 && o.fires >= o.maxFires {
		queue := o.queue
		e.disposeLocked(o, &protocol.ErrorBody{Code: protocol.CodeMaxFires,
			Message: fmt.Sprintf("observer %s fired %d times (max_fires)", o.id, o.fires)}, ops)
		o.queue = queue
		return
	}
	ops.events = append(ops.events, o.changed())
}

// drainLocked takes the queued activations that fit in o's in-flight room.
func (e *Engine) drainLocked(o *observer) []activation {
	var out []activation
	for len(o.queue) > 0 && (o.maxFlight == 0 || o.inflight < o.maxFlight) && (o.state == protocol.ObserverActive || o.gone) {
		out = append(out, o.queue[0])
		o.queue = o.queue[1:]
		o.inflight++
	}
	return out
}

// sendActivation invokes the target of one admitted activation.
func (e *Engine) sendActivation(a activation) {
	o, ob := a.o, a.ob
	var data json.RawMessage
	if a.payload != nil {
		data = a.payload
	} else {
		data = o.payloadFor(ob, a.id)
	}
	call := Call{FunctionID: o.target, Namespace: o.targetNS, Data: data, Metadata: o.metadata, Trigger: TriggerKindObserve,
		Traceparent: ob.traceparent, Baggage: ob.baggage, ObserveDepth: a.depth,
		Activation: &protocol.Activation{ObserverID: o.id, ActivationID: a.id}}
	call.InvocationID = uuid.NewString()
	e.log.Debug("observer activated", "observer_id", o.id, "function_id", o.fn, "target", o.target, "depth", a.depth)
	e.bus.Publish(event.ObserverActivated{ObserverID: o.id, ActivationID: a.id, SourceFunction: o.fn, TargetFunction: o.target,
		ObservedInvocationID: ob.invocationID, InvocationID: call.InvocationID, Depth: a.depth, At: time.Now()})
	e.dispatch(call, func(out outcome) {
		var ops obsOps
		e.obs.mu.Lock()
		o.inflight--
		ops.drained = e.drainLocked(o)
		e.obs.mu.Unlock()
		e.obsFinish(&ops)
		if a.done != nil {
			a.done(out)
		}
	})
}

// payloadFor is the target's input for one activation: the envelope with
// what the observer captures, or the observed input or output alone.
func (o *observer) payloadFor(ob *observed, activationID string) json.RawMessage {
	switch o.deliver {
	case protocol.DeliverInput:
		if ob.input == nil {
			return json.RawMessage("null")
		}
		return ob.input
	case protocol.DeliverOutput:
		if !ob.ok || ob.output == nil {
			return json.RawMessage("null")
		}
		return ob.output
	}
	b := make([]byte, 0, 256+len(ob.input)+len(ob.output))
	b = append(b, `{"observer_id":`...)
	b = appendJSONString(b, o.id)
	b = append(b, `,"activation_id":`...)
	b = appendJSONString(b, activationID)
	b = append(b, `,"function_id":`...)
	b = appendJSONString(b, ob.functionID)
	b = append(b, `,"namespace":`...)
	b = appendJSONString(b, o.ns)
	b = append(b, `,"invocation_id":`...)
	b = appendJSONString(b, ob.invocationID)
	status := "success"
	if !ob.ok {
		status = "error"
	}
	b = append(b, `,"status":"`+status+`"`...)
	has := func(c string) bool { return slices.Contains(o.capture, c) }
	field := func(name string, v json.RawMessage) {
		if v != nil {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, '"', ':')
			b = append(b, v...)
		}
	}
	if has(protocol.CaptureInput) {
		in := ob.input
		if in == nil {
			in = json.RawMessage("null")
		}
		field("input", in)
	}
	if has(protocol.CaptureOutput) && ob.ok {
		field("output", ob.output) // absent from a report that carries none (an emit)
	}
	if has(protocol.CaptureError) && !ob.ok {
		field("error", ob.err)
	}
	if has(protocol.CaptureCaller) && len(ob.caller) > 0 && string(ob.caller) != "null" {
		field("caller", ob.caller)
	}
	if has(protocol.CaptureMetadata) && len(ob.metadata) > 0 {
		field("metadata", ob.metadata)
	}
	started := ob.startedAt
	if started.IsZero() {
		started = time.Now()
	}
	b = append(b, `,"started_at_ms":`...)
	b = strconv.AppendInt(b, started.UnixMilli(), 10)
	b = append(b, `,"duration_ms":`...)
	d := float64(ob.duration.Microseconds()) / 1000
	if math.IsNaN(d) || math.IsInf(d, 0) || d < 0 {
		d = 0
	}
	b = strconv.AppendFloat(b, d, 'f', -1, 64)
	b = append(b, '}')
	if !json.Valid(b) {
		// A raw field that was not JSON (a host's malformed report): the
		// envelope without the payloads.
		b, _ = json.Marshal(map[string]any{"observer_id": o.id, "activation_id": activationID, "function_id": ob.functionID,
			"invocation_id": ob.invocationID, "status": status, "started_at_ms": started.UnixMilli(), "duration_ms": d})
	}
	return b
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// Activate reports one event of an engine-hosted source to one of its
// observers: the engine applies the observer's on, filters, capture,
// deliver and policy (max_fires, max_in_flight, loop guard), invokes its
// target with invokefunction.activation and returns the target's result.
// ctx bounds the wait for that result.
func (e *Engine) Activate(ctx context.Context, observerID string, ob Observation) (json.RawMessage, error) {
	e.obs.mu.RLock()
	o := e.obs.byID[observerID]
	e.obs.mu.RUnlock()
	if o == nil {
		return nil, fmt.Errorf("engine: activate %s: %w", observerID, ErrObserverNotFound)
	}
	item := observationItem(o.fn, ob)
	if !onAccepts(o.on, item.ok) || !o.filter.Matches(item.doc()) {
		return nil, ErrNotMatched
	}
	ch := make(chan outcome, 1)
	e.activate(o, item, nil, func(out outcome) { ch <- out })
	select {
	case out := <-ch:
		if out.err != nil {
			if out.err.Code == protocol.CodeObserverNotActive {
				return nil, fmt.Errorf("engine: activate %s: %w (%s)", observerID, ErrObserverNotActive, out.err.Message)
			}
			return nil, out.err
		}
		return out.result, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("engine: activate %s: %w", observerID, ctx.Err())
	}
}

// ActivateAll reports one event of the engine-hosted source functionID to
// every active observer of it whose on and filters accept it, without
// waiting for the targets' results. It returns how many were activated.
func (e *Engine) ActivateAll(functionID string, ob Observation) int {
	if e.obs.n.Load() == 0 {
		return 0
	}
	e.obs.mu.RLock()
	list := slices.Clone(e.obs.byFn[functionID])
	e.obs.mu.RUnlock()
	item := observationItem(functionID, ob)
	doc := item.doc()
	n := 0
	for _, o := range list {
		if !onAccepts(o.on, item.ok) || !o.filter.Matches(doc) {
			continue
		}
		n++
		e.activate(o, item, nil, nil)
	}
	return n
}

func observationItem(fn string, ob Observation) *observed {
	item := &observed{functionID: fn, invocationID: ob.InvocationID, ok: ob.Error == nil, input: ob.Input,
		caller: ob.Caller, metadata: ob.Metadata, startedAt: ob.StartedAt, duration: ob.Duration,
		depth: ob.ObserveDepth, traceparent: ob.Traceparent, baggage: ob.Baggage}
	if item.invocationID == "" {
		item.invocationID = uuid.NewString()
	}
	if ob.Error != nil {
		item.err = errorJSON(ob.Error)
	} else {
		item.output = ob.Output
	}
	return item
}

// handleInvocationsObserved activates the observers a host matched in its
// local calls (and its owner emits). Items for functions the connection
// does not host, or observers that are not active, are dropped and counted.
func (e *Engine) handleInvocationsObserved(c *conn, m protocol.InvocationsObserved) {
	for i := range m.Items {
		it := &m.Items[i]
		ns := it.Namespace
		if ns == "" {
			ns = c.namespace()
		}
		key := fnKey(ns, it.FunctionID)
		e.mu.RLock()
		_, hosts := c.fnIDs[key]
		e.mu.RUnlock()
		if !hosts {
			e.drop(DropObserve, 1, "worker_id", c.id, "function_id", it.FunctionID, "why", "report for a function the worker does not host")
			continue
		}
		ob := &observed{functionID: it.FunctionID, namespace: it.Namespace, invocationID: it.InvocationID,
			ok: it.Status != "error", input: it.Input, output: it.Output, err: it.Error, caller: it.Caller,
			metadata: rawNotNull(it.Metadata), depth: it.ObserveDepth, traceparent: it.Traceparent, baggage: it.Baggage,
			startedAt: time.UnixMilli(int64(it.StartedAtMS)), duration: time.Duration(it.DurationMS * float64(time.Millisecond))}
		if it.OutputIsInput {
			ob.output = ob.input
		}
		if ob.caller == nil || string(ob.caller) == "null" {
			ob.caller = e.callerDoc(&Call{CallerWorkerID: c.id})
		}
		e.publishLocalCall(c, ob)
		for _, id := range it.Matched {
			e.obs.mu.RLock()
			o := e.obs.byID[id]
			e.obs.mu.RUnlock()
			if o == nil || o.key != key {
				e.drop(DropObserve, 1, "worker_id", c.id, "observer_id", id, "why", "report for an unknown observer")
				continue
			}
			e.activate(o, ob, nil, nil)
		}
	}
}

func rawNotNull(r json.RawMessage) json.RawMessage {
	if string(r) == "null" {
		return nil
	}
	return r
}

// publishLocalCall shows a reported local call among the invocations.
func (e *Engine) publishLocalCall(c *conn, ob *observed) {
	if !e.bus.Active() {
		return
	}
	name := c.name()
	e.bus.Publish(event.InvocationStarted{InvocationID: ob.invocationID, FunctionID: ob.functionID, CallerWorkerID: c.id,
		TargetWorkerID: c.id, Worker: name, Trigger: TriggerKindLocal, Data: ob.input, At: ob.startedAt})
	fin := event.InvocationFinished{InvocationID: ob.invocationID, FunctionID: ob.functionID, CallerWorkerID: c.id,
		TargetWorkerID: c.id, Worker: name, Trigger: TriggerKindLocal, Status: event.StatusOK, Result: ob.output,
		Duration: ob.duration, At: ob.startedAt.Add(ob.duration)}
	if !ob.ok {
		fin.Status = event.StatusError
		var eb protocol.ErrorBody
		if json.Unmarshal(ob.err, &eb) == nil {
			fin.ErrorCode, fin.ErrorMessage = eb.Code, eb.Message
		}
	}
	e.bus.Publish(fin)
}

// handleLocalStats publishes a host's local invocation counts.
func (e *Engine) handleLocalStats(c *conn, m protocol.LocalInvocationStats) {
	now := time.Now()
	for _, f := range m.Functions {
		e.bus.Publish(event.LocalInvocations{WorkerID: c.id, FunctionID: f.FunctionID, Window: time.Duration(m.WindowMS) * time.Millisecond,
			Count: f.Count, Errors: f.Errors, DurationTotal: time.Duration(f.DurationMSSum * float64(time.Millisecond)), At: now})
	}
	for _, d := range m.DroppedReports {
		if d.Count > 0 {
			c.log.Warn("worker dropped observe reports", "function_id", d.FunctionID, "reason", d.Reason, "count", d.Count)
		}
	}
}

// callThroughObserver routes a host's call through one of its observers
// (invokefunction.activation): to the observer's stored target, with the
// payload as given and the observer's metadata, under its policy.
func (e *Engine) callThroughObserver(caller *conn, m protocol.InvokeFunction) {
	void := m.Action != nil && m.Action.Type == protocol.ActionVoid
	reply := func(o outcome) {
		if m.InvocationID == "" || void {
			return
		}
		caller.send(mustEncode(protocol.InvocationResult{InvocationID: m.InvocationID, FunctionID: m.FunctionID,
			Result: o.result, Error: o.err, Traceparent: m.Traceparent, Baggage: m.Baggage}))
	}
	id := m.Activation.ObserverID
	e.obs.mu.RLock()
	o := e.obs.byID[id]
	e.obs.mu.RUnlock()
	if o == nil {
		reply(failed(protocol.CodeObserverNotFound, "no observer %s", id))
		return
	}
	e.mu.RLock()
	_, hosts := caller.fnIDs[o.key]
	e.mu.RUnlock()
	if !hosts {
		reply(failed(protocol.CodeNotFunctionOwner, "only the worker hosting %s may call through its observer %s", o.fn, id))
		return
	}
	data := m.Data
	if data == nil {
		data = json.RawMessage("null")
	}
	ob := &observed{functionID: o.fn, invocationID: m.InvocationID, ok: true, input: data, depth: m.ObserveDepth,
		traceparent: m.Traceparent, baggage: m.Baggage, startedAt: time.Now()}
	e.activate(o, ob, data, reply)
}

// invokeThroughObserver is Invoke of a call its direct binding fires (an
// HTTP request to an observer's route, a queue message, ...): the
// observer's target gets the payload as given, under the observer's
// policy, as a host's call through an observer does. A call the observer
// does not admit (it is gone, not active, or at its max_in_flight) fails
// with an error that wraps ErrNotAdmitted and the refusal's
// *protocol.ErrorBody: nothing reached the target.
func (e *Engine) invokeThroughObserver(ctx context.Context, observerID string, req Request) (json.RawMessage, error) {
	e.obs.mu.RLock()
	o := e.obs.byID[observerID]
	e.obs.mu.RUnlock()
	if o == nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAdmitted, &protocol.ErrorBody{Code: protocol.CodeObserverNotFound,
			Message: fmt.Sprintf("observer %s (binding %s) is gone", observerID, req.Binding)})
	}
	ob := &observed{functionID: o.fn, invocationID: uuid.NewString(), ok: true, input: req.Data,
		traceparent: req.Traceparent, baggage: req.Baggage, startedAt: time.Now()}
	ch := make(chan outcome, 1)
	if !e.activate(o, ob, req.Data, func(out outcome) { ch <- out }) {
		// Refused by the observer's policy: the target was not called.
		return nil, fmt.Errorf("%w: %w", ErrNotAdmitted, (<-ch).err)
	}
	select {
	case out := <-ch:
		if out.err != nil {
			return nil, out.err
		}
		return out.result, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("engine: invoke %s through observer %s: %w", o.target, observerID, ctx.Err())
	}
}

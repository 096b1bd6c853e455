package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Trigger is one binding of a function to a trigger type.
type Trigger struct {
	ID          string
	Type        string
	FunctionID  string
	Config      json.RawMessage
	Metadata    json.RawMessage
	OwnerWorker string // worker id of the owner; empty for ownerless bindings
}

func triggerFrom(m protocol.RegisterTrigger) Trigger {
	return Trigger{ID: m.ID, Type: m.TriggerType, FunctionID: m.FunctionID, Config: m.Config, Metadata: m.Metadata}
}

// TriggerProvider is an in-process trigger type implementation (HTTP, cron,
// ...). RegisterTrigger may reject a binding with an error; the originator
// then gets trigger_registration_failed with the error's text.
// RegisterTrigger with an id it already holds replaces that binding.
type TriggerProvider interface {
	RegisterTrigger(ctx context.Context, t Trigger) error
	UnregisterTrigger(ctx context.Context, t Trigger) error
}

// TriggerType describes an in-process trigger type.
type TriggerType struct {
	ID                   string
	Description          string
	TriggerRequestFormat json.RawMessage
	CallRequestFormat    json.RawMessage
	Provider             TriggerProvider
}

type triggerType struct {
	id, description string
	trf, crf        json.RawMessage
	conn            *conn           // remote provider, or nil
	local           TriggerProvider // in-process provider, or nil
	worker          string          // in-process worker name
}

func (tt *triggerType) workerName() string {
	if tt.conn != nil {
		return tt.conn.name()
	}
	return tt.worker
}

// binding is a stored trigger. active means it was handed to the type's
// provider; otherwise it is parked until the type (re)appears.
type binding struct {
	Trigger
	owner  *conn // nil for ownerless bindings
	active bool
}

// delivery is a provider call to make after the engine lock is released.
type delivery struct {
	tt       *triggerType
	b        Trigger
	register bool
}

func (e *Engine) deliver(ds []delivery) {
	for _, d := range ds {
		switch {
		case d.tt.conn != nil && d.register:
			d.tt.conn.send(mustEncode(protocol.RegisterTrigger{ID: d.b.ID, TriggerType: d.b.Type,
				FunctionID: d.b.FunctionID, Config: d.b.Config, Metadata: d.b.Metadata}))
		case d.tt.conn != nil:
			d.tt.conn.send(mustEncode(protocol.UnregisterTrigger{ID: d.b.ID, TriggerType: d.b.Type}))
		case d.register:
			if err := d.tt.local.RegisterTrigger(e.ctx, d.b); err != nil {
				e.rejectBinding(d.b, err)
			}
		default:
			if err := d.tt.local.UnregisterTrigger(e.ctx, d.b); err != nil {
				e.log.Warn("trigger provider failed to unregister", "trigger_id", d.b.ID, "trigger_type", d.b.Type, "err", err)
			}
		}
	}
}

// rejectBinding removes a binding its in-process provider refused and tells
// the owner.
func (e *Engine) rejectBinding(t Trigger, cause error) {
	e.mu.Lock()
	b := e.triggers[t.ID]
	var owner *conn
	if b != nil {
		owner = b.owner
		delete(e.triggers, t.ID)
		if owner != nil {
			delete(owner.triggerIDs, t.ID)
		}
	}
	e.mu.Unlock()
	e.log.Info("trigger registration rejected", "trigger_id", t.ID, "trigger_type", t.Type, "function_id", t.FunctionID, "err", cause)
	e.resolveAck(t.ID, &protocol.ErrorBody{Code: CodeTriggerRegFailed, Message: cause.Error()})
	if owner != nil {
		owner.send(mustEncode(protocol.TriggerRegistrationResult{ID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID,
			Error: &protocol.ErrorBody{Code: CodeTriggerRegFailed, Message: cause.Error()}}))
	}
}

// registerTrigger stores a binding owned by c (nil: ownerless), hands it to
// the type's provider, or parks it until the type exists.
func (e *Engine) registerTrigger(c *conn, t Trigger) {
	if c != nil {
		t.OwnerWorker = c.id
	}
	var ds []delivery
	e.mu.Lock()
	if c != nil && c.removed {
		e.mu.Unlock()
		return
	}
	tt := e.ttypes[t.Type]
	if old := e.triggers[t.ID]; old != nil {
		if old.owner != nil {
			delete(old.owner.triggerIDs, t.ID)
		}
		// Replacing a binding on another type: withdraw it there first. On
		// the same type the provider replaces it by id.
		if oldTT := e.ttypes[old.Type]; old.active && oldTT != nil && old.Type != t.Type {
			ds = append(ds, delivery{tt: oldTT, b: old.Trigger})
		}
	}
	b := &binding{Trigger: t, owner: c, active: tt != nil}
	e.triggers[t.ID] = b
	if c != nil {
		c.triggerIDs[t.ID] = struct{}{}
	}
	if tt != nil {
		ds = append(ds, delivery{tt: tt, b: t, register: true})
	}
	e.mu.Unlock()
	e.bus.Publish(event.TriggerRegistered{TriggerID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID,
		WorkerID: t.OwnerWorker, Config: t.Config, Active: tt != nil, At: time.Now()})
	e.deliver(ds)
}

// unregisterTriggerFrom removes a binding at a worker's request. Only its
// owner (or anyone, for ownerless bindings) may remove it.
func (e *Engine) unregisterTriggerFrom(c *conn, id string) bool {
	e.mu.Lock()
	b := e.triggers[id]
	if b == nil || (b.owner != nil && b.owner != c) {
		e.mu.Unlock()
		return false
	}
	ds := e.removeBindingLocked(b)
	e.mu.Unlock()
	e.bus.Publish(event.TriggerUnregistered{TriggerID: id, TriggerType: b.Type, FunctionID: b.FunctionID, At: time.Now()})
	e.deliver(ds)
	return true
}

func (e *Engine) removeBindingLocked(b *binding) []delivery {
	delete(e.triggers, b.ID)
	if b.owner != nil {
		delete(b.owner.triggerIDs, b.ID)
	}
	if tt := e.ttypes[b.Type]; tt != nil && b.active {
		return []delivery{{tt: tt, b: b.Trigger}}
	}
	return nil
}

// RegisterTriggerType installs an in-process trigger type. Bindings that
// were parked waiting for it are delivered to it.
func (e *Engine) RegisterTriggerType(worker string, t TriggerType) error {
	if t.ID == "" || t.Provider == nil {
		return fmt.Errorf("engine: register trigger type %q: id and provider are required", t.ID)
	}
	tt := &triggerType{id: t.ID, description: t.Description, trf: t.TriggerRequestFormat,
		crf: t.CallRequestFormat, local: t.Provider, worker: worker}
	e.mu.Lock()
	e.localWorker(worker)
	if old := e.ttypes[t.ID]; old != nil {
		e.mu.Unlock()
		return fmt.Errorf("engine: trigger type %s is already provided by %s", t.ID, old.workerName())
	}
	ds := e.installTypeLocked(tt)
	e.mu.Unlock()
	e.bus.Publish(event.TriggerTypeRegistered{TriggerType: t.ID, At: time.Now()})
	e.deliver(ds)
	return nil
}

// installTypeLocked makes tt the provider of its id and returns the
// deliveries of every binding of that type.
func (e *Engine) installTypeLocked(tt *triggerType) []delivery {
	e.ttypes[tt.id] = tt
	if tt.conn != nil {
		tt.conn.ttypeIDs[tt.id] = struct{}{}
	}
	var ds []delivery
	for _, b := range e.triggers {
		if b.Type == tt.id {
			b.active = true
			ds = append(ds, delivery{tt: tt, b: b.Trigger, register: true})
		}
	}
	return ds
}

func (e *Engine) registerRemoteTriggerType(c *conn, m protocol.RegisterTriggerType) {
	tt := &triggerType{id: m.ID, description: m.Description, trf: m.TriggerRequestFormat,
		crf: m.CallRequestFormat, conn: c}
	e.mu.Lock()
	if c.removed {
		e.mu.Unlock()
		return
	}
	if old := e.ttypes[m.ID]; old != nil {
		if old.local != nil {
			e.mu.Unlock()
			c.log.Warn("worker tried to provide a built-in trigger type; ignored", "trigger_type", m.ID)
			return
		}
		if old.conn != c {
			delete(old.conn.ttypeIDs, m.ID)
		}
	}
	ds := e.installTypeLocked(tt)
	e.mu.Unlock()
	e.bus.Publish(event.TriggerTypeRegistered{TriggerType: m.ID, WorkerID: c.id, At: time.Now()})
	e.deliver(ds)
}

func (e *Engine) unregisterRemoteTriggerType(c *conn, id string) {
	e.mu.Lock()
	tt := e.ttypes[id]
	if tt == nil || tt.conn != c {
		e.mu.Unlock()
		return
	}
	e.dropTypeLocked(tt)
	e.mu.Unlock()
	e.bus.Publish(event.TriggerTypeUnregistered{TriggerType: id, WorkerID: c.id, At: time.Now()})
}

// dropTypeLocked removes a trigger type; its bindings are parked and come
// back when the type is registered again.
func (e *Engine) dropTypeLocked(tt *triggerType) {
	delete(e.ttypes, tt.id)
	if tt.conn != nil {
		delete(tt.conn.ttypeIDs, tt.id)
	}
	for _, b := range e.triggers {
		if b.Type == tt.id {
			b.active = false
		}
	}
}

// triggerResultFromProvider handles a provider's ack of a delivered
// binding. Errors park the binding and reach its owner.
func (e *Engine) triggerResultFromProvider(c *conn, m protocol.TriggerRegistrationResult) {
	e.mu.Lock()
	b := e.triggers[m.ID]
	if b == nil {
		e.mu.Unlock()
		return
	}
	tt := e.ttypes[b.Type]
	if tt == nil || tt.conn != c {
		e.mu.Unlock()
		return // only the current provider may answer
	}
	var owner *conn
	t := b.Trigger
	if m.Error != nil {
		b.active = false
		owner = b.owner
	}
	e.mu.Unlock()
	e.resolveAck(m.ID, m.Error)
	if m.Error == nil {
		return
	}
	c.log.Info("provider rejected trigger", "trigger_id", t.ID, "trigger_type", t.Type, "code", m.Error.Code, "message", m.Error.Message)
	if owner != nil {
		owner.send(mustEncode(protocol.TriggerRegistrationResult{ID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID, Error: m.Error}))
	}
}

type ackResult struct{ err *protocol.ErrorBody }

func (e *Engine) resolveAck(id string, eb *protocol.ErrorBody) {
	e.ackMu.Lock()
	ch := e.ackWait[id]
	delete(e.ackWait, id)
	e.ackMu.Unlock()
	if ch != nil {
		ch <- &ackResult{err: eb} // buffered, one send
	}
}

// RegisterTrigger creates an ownerless binding (it survives every worker)
// and waits up to 10 s for a remote provider's verdict; on timeout the
// binding is kept. It returns the new trigger id.
func (e *Engine) RegisterTrigger(ctx context.Context, t Trigger) (string, error) {
	if t.Type == "" || t.FunctionID == "" {
		return "", &protocol.ErrorBody{Code: CodeInvalidArguments, Message: "trigger_type and function_id are required"}
	}
	if t.ID == "" {
		t.ID = uuid.NewString()
	}
	if len(t.Config) == 0 {
		t.Config = json.RawMessage("{}")
	}
	ch := make(chan *ackResult, 1)
	e.ackMu.Lock()
	e.ackWait[t.ID] = ch
	e.ackMu.Unlock()
	defer func() {
		e.ackMu.Lock()
		delete(e.ackWait, t.ID)
		e.ackMu.Unlock()
	}()
	e.registerTrigger(nil, t)

	e.mu.RLock()
	b := e.triggers[t.ID]
	remote := b != nil && b.active && e.ttypes[t.Type] != nil && e.ttypes[t.Type].conn != nil
	e.mu.RUnlock()
	if !remote {
		select {
		case r := <-ch: // an in-process provider answered synchronously
			if r.err != nil {
				return "", r.err
			}
		default:
		}
		return t.ID, nil
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			e.UnregisterTrigger(t.ID)
			return "", r.err
		}
	case <-timer.C:
	case <-ctx.Done():
		return "", fmt.Errorf("engine: register trigger: %w", ctx.Err())
	}
	return t.ID, nil
}

// UnregisterTrigger removes any binding by id.
func (e *Engine) UnregisterTrigger(id string) bool {
	e.mu.Lock()
	b := e.triggers[id]
	if b == nil {
		e.mu.Unlock()
		return false
	}
	ds := e.removeBindingLocked(b)
	e.mu.Unlock()
	e.bus.Publish(event.TriggerUnregistered{TriggerID: id, TriggerType: b.Type, FunctionID: b.FunctionID, At: time.Now()})
	e.deliver(ds)
	return true
}

// Bindings returns copies of the active bindings of a trigger type, for
// in-process providers that fire by scanning.
func (e *Engine) Bindings(triggerType string) []Trigger {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var out []Trigger
	for _, b := range e.triggers {
		if b.Type == triggerType && b.active {
			out = append(out, b.Trigger)
		}
	}
	return out
}

// Fire invokes every function bound to an in-process trigger type with
// payload, fire-and-forget, passing each binding's metadata along.
func (e *Engine) Fire(triggerType string, payload json.RawMessage) {
	for _, t := range e.Bindings(triggerType) {
		e.dispatch(Call{FunctionID: t.FunctionID, Data: payload, Metadata: t.Metadata}, func(o outcome) {
			if o.err != nil && !errors.Is(e.ctx.Err(), context.Canceled) {
				e.log.Debug("trigger handler failed", "trigger_type", triggerType, "function_id", t.FunctionID, "code", o.err.Code)
			}
		})
	}
}

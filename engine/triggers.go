package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
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
	// TriggerNamespace is where its type's provider is looked up (Python
	// 0.25's registertrigger.trigger_namespace): a name is strict; ""
	// resolves, in its owner's namespace first, then in the default one.
	TriggerNamespace string
}

func triggerFrom(m protocol.RegisterTrigger) Trigger {
	return Trigger{ID: m.ID, Type: m.TriggerType, FunctionID: m.FunctionID, Config: m.Config, Metadata: m.Metadata,
		TriggerNamespace: m.TriggerNamespace}
}

// inNamespace points a trigger at its function in namespace ns: its
// FunctionID becomes the function key (namespace.go), which is what the
// binding stores and fires.
func (t *Trigger) inNamespace(ns string) {
	t.FunctionID = fnKey(ns, t.FunctionID)
}

// Namespace is the namespace of the function the trigger fires (its
// FunctionID is the function key once the engine bound it). The functions
// a binding's config names besides it (condition_function_id,
// middleware_function_ids) resolve there too, as iii resolves them in the
// trigger's namespace: a worker in namespace orders binds
// orders::is-priority, its own, not a default-namespace one.
func (t Trigger) Namespace() string {
	ns, _ := splitKey(t.FunctionID)
	return ns
}

// bareID is the function id of a trigger's FunctionID, without its
// namespace.
func bareID(fid string) string {
	_, id := splitKey(fid)
	return id
}

// ErrTriggerConflict is matched (errors.Is) by a provider's refusal of a
// binding that conflicts with one it serves (an HTTP route of the same
// shape). A binding refused so while another binding of its type and
// function is served is parked, not dropped: see rejectBinding.
var ErrTriggerConflict = errors.New("trigger conflicts with a served binding")

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
	ns              string // namespace it serves; "" = the default one (always, in-process)
	trf, crf        json.RawMessage
	conn            *conn           // remote provider, or nil
	local           TriggerProvider // in-process provider, or nil
	worker          string          // in-process worker name
	// implicit: a worker's type registered without a namespace, before the
	// worker declared its own; it moves there when it does (settleTypes).
	implicit bool
}

// Trigger types are scoped per namespace (iii 0.25): the engine's own live
// in the default namespace, a worker's in the namespace its
// registertriggertype names, else the worker's. Engine.ttypes is keyed by
// ttKey, which is fnKey: the bare id in the default namespace, as before
// namespaces.
func ttKey(ns, id string) string { return fnKey(ns, id) }

func (tt *triggerType) key() string { return ttKey(tt.ns, tt.id) }

func (tt *triggerType) workerName() string {
	if tt.conn != nil {
		return tt.conn.name()
	}
	return tt.worker
}

// A trigger registration is a claim on a binding. A binding is what the
// type's provider serves: one per (trigger type, function id, config
// compared as JSON). Claims with the same key share one binding, so a
// worker that replaces another (a hot reload, a reconnect) and registers
// the same trigger takes the binding over without a gap: the provider sees
// it registered when the first claim arrives and unregistered when the
// last one goes. The binding keeps the id of its first claim (the id its
// provider knows); its owner and metadata are those of its newest claim
// by a worker (or, with none, its newest ownerless claim).

// claim is one registration, under the id the registrant chose.
type claim struct {
	id       string
	owner    *conn // nil for ownerless claims (engine::register_trigger)
	metadata json.RawMessage
	b        *binding
}

// bindingKey identifies a binding: same type, function and config (in
// canonical JSON) mean the same binding.
type bindingKey struct{ typ, fn, config, tns string }

func keyOf(t Trigger) bindingKey {
	return bindingKey{typ: t.Type, fn: t.FunctionID, config: canonicalJSON(t.Config), tns: t.TriggerNamespace}
}

// binding is a stored trigger. active means it was handed to the type's
// provider (and not refused); otherwise it is parked until the type
// (re)appears or another claim retries it.
type binding struct {
	Trigger
	key    bindingKey
	claims []*claim // in arrival order; see owner
	active bool
	// waiting: refused while a twin was served; retried when a binding of
	// its type and function goes (see rejectBinding).
	waiting bool
	// published: a TriggerRegistered of it went out. Guarded by tmu.
	published bool
	// prov is the ttKey of the provider it was handed to (while active),
	// or the one that refused it; "" when none.
	prov string
}

// home is the namespace a binding looks for its provider in first (when
// it names none): its owner's.
func (b *binding) home() string {
	if o := b.owner().owner; o != nil {
		return o.namespace()
	}
	return DefaultNamespace
}

// providerOfLocked is the trigger type that serves b: in the namespace it
// names (strict), else in its owner's namespace, else in the default one.
// Callers hold Engine.mu.
func (e *Engine) providerOfLocked(b *binding) *triggerType {
	if b.TriggerNamespace != "" {
		return e.ttypes[ttKey(b.TriggerNamespace, b.Type)]
	}
	if tt := e.ttypes[ttKey(b.home(), b.Type)]; tt != nil {
		return tt
	}
	return e.ttypes[b.Type]
}

// servingLocked is the provider an active binding was handed to.
func (e *Engine) servingLocked(b *binding) *triggerType {
	if !b.active || b.prov == "" {
		return nil
	}
	return e.ttypes[b.prov]
}

// resettleLocked hands b to the provider it resolves to now, if that is
// not the one it was handed to: the old one is told to let go, the new one
// gets it; with none, b is parked. A binding the same provider refused
// stays as it is. It reports whether anything changed.
func (e *Engine) resettleLocked(b *binding, ops *triggerOps) bool {
	tt := e.providerOfLocked(b)
	var cur *triggerType
	if b.prov != "" {
		cur = e.ttypes[b.prov]
	}
	if tt == cur {
		return false
	}
	if cur != nil && b.active {
		ops.deliver(cur, b, false)
	}
	if tt == nil {
		b.active, b.prov = false, ""
	} else {
		b.active, b.waiting, b.prov = true, false, tt.key()
		ops.deliver(tt, b, true)
	}
	ops.registered(b)
	return true
}

// owner is the current owner's claim: the newest claim of a worker, else
// the newest ownerless one.
func (b *binding) owner() *claim {
	for i := len(b.claims) - 1; i >= 0; i-- {
		if b.claims[i].owner != nil {
			return b.claims[i]
		}
	}
	return b.claims[len(b.claims)-1]
}

// restate points the binding's owner fields at its owner claim and
// reports whether the owner or the metadata changed.
func (b *binding) restate() (ownerChanged, metaChanged bool) {
	cl := b.owner()
	ownerID := ""
	if cl.owner != nil {
		ownerID = cl.owner.id
	}
	ownerChanged = ownerID != b.OwnerWorker
	metaChanged = canonicalJSON(cl.metadata) != canonicalJSON(b.Metadata)
	b.OwnerWorker, b.Metadata = ownerID, cl.metadata
	return ownerChanged, metaChanged
}

// canonicalJSON renders raw with sorted keys, no insignificant space and
// numbers in one form, so equal JSON values compare equal. Empty input is
// null; invalid input is compared as it is.
func canonicalJSON(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 {
		return "null"
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return string(raw)
	}
	b, err := json.Marshal(canonicalNumbers(v))
	if err != nil {
		return string(raw)
	}
	return string(b)
}

func canonicalNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		f, ok := new(big.Float).SetPrec(256).SetString(string(v))
		if !ok {
			return v
		}
		return json.Number(f.Text('g', -1))
	case map[string]any:
		for k, x := range v {
			v[k] = canonicalNumbers(x)
		}
	case []any:
		for i, x := range v {
			v[i] = canonicalNumbers(x)
		}
	}
	return v
}

// delivery is a provider call to make after the engine lock is released.
type delivery struct {
	tt       *triggerType
	b        Trigger
	ref      *binding // the binding delivered; a refused registration removes it
	register bool
}

// triggerOps are the effects of one trigger change: provider calls, then
// events. They are applied under tmu, in the order of the changes.
type triggerOps struct {
	ds  []delivery
	evs []triggerEvent
}

// triggerEvent is an event about a binding; a TriggerRegistered of a
// binding its provider refused is not published.
type triggerEvent struct {
	ev event.Event
	b  *binding
}

func (ops *triggerOps) deliver(tt *triggerType, b *binding, register bool) {
	ops.ds = append(ops.ds, delivery{tt: tt, b: b.Trigger, ref: b, register: register})
}

func (ops *triggerOps) registered(b *binding) {
	ops.evs = append(ops.evs, triggerEvent{b: b, ev: event.TriggerRegistered{TriggerID: b.ID, TriggerType: b.Type,
		FunctionID: bareID(b.FunctionID), WorkerID: b.OwnerWorker, Config: b.Config, Active: b.active, At: time.Now()}})
}

func (ops *triggerOps) unregistered(b *binding) {
	ops.evs = append(ops.evs, triggerEvent{ev: event.TriggerUnregistered{TriggerID: b.ID, TriggerType: b.Type,
		FunctionID: bareID(b.FunctionID), At: time.Now()}})
}

// apply makes the provider calls and publishes the events. The caller
// holds tmu and not mu.
func (e *Engine) apply(ops triggerOps) {
	refused := e.deliver(ops.ds)
	for _, te := range ops.evs {
		if te.b != nil {
			if refused[te.b] {
				continue
			}
			te.b.published = true
		}
		e.bus.Publish(te.ev)
	}
}

// deliver makes provider calls in order and returns the bindings an
// in-process provider refused (they are removed and their owners told).
func (e *Engine) deliver(ds []delivery) map[*binding]bool {
	var refused map[*binding]bool
	for _, d := range ds {
		switch {
		case d.tt.conn != nil && d.register:
			ns, id := splitKey(d.b.FunctionID)
			if ns == DefaultNamespace {
				ns = "" // as before namespaces
			}
			// As iii: the target's namespace, and the provider's own (a
			// provider serving several namespaces tells them apart), each
			// omitted when it is the default one.
			d.tt.conn.send(mustEncode(protocol.RegisterTrigger{ID: d.b.ID, TriggerType: d.b.Type,
				FunctionID: id, Config: d.b.Config, Metadata: d.b.Metadata, Namespace: ns, TriggerNamespace: d.tt.ns}))
		case d.tt.conn != nil:
			d.tt.conn.send(mustEncode(protocol.UnregisterTrigger{ID: d.b.ID, TriggerType: d.b.Type}))
		case d.register:
			if err := d.tt.local.RegisterTrigger(e.ctx, d.b); err != nil {
				if refused == nil {
					refused = map[*binding]bool{}
				}
				refused[d.ref] = true
				e.rejectBinding(d.ref, err)
			}
		default:
			if err := d.tt.local.UnregisterTrigger(e.ctx, d.b); err != nil {
				e.log.Warn("trigger provider failed to unregister", "trigger_id", d.b.ID, "trigger_type", d.b.Type, "err", err)
			}
		}
	}
	return refused
}

// rejectBinding removes a binding its in-process provider refused, with
// every claim on it, and tells their owners. The caller holds tmu.
//
// A binding refused as a conflict (ErrTriggerConflict) while another
// binding of the same type and function is served (a reloaded worker
// changed a trigger's config, and the old version's route is in the way)
// is parked instead: its owners are told,
// it is listed as not active, and it is offered to the provider again when
// a binding of that type and function goes.
func (e *Engine) rejectBinding(b *binding, cause error) {
	e.mu.Lock()
	claims := slices.Clone(b.claims)
	live := e.triggers[b.ID] == b
	park := live && errors.Is(cause, ErrTriggerConflict) && e.servedTwinLocked(b)
	switch {
	case park:
		b.active, b.waiting = false, true
	case live:
		e.dropBindingLocked(b)
	}
	t := b.Trigger
	e.mu.Unlock()
	t.FunctionID = bareID(t.FunctionID)
	msg := cause.Error()
	switch {
	case park:
		b.published = true
		e.bus.Publish(event.TriggerRegistered{TriggerID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID,
			WorkerID: t.OwnerWorker, Config: t.Config, At: time.Now()})
		msg += fmt.Sprintf(" (parked: tried again when another %s trigger of %s goes)", t.Type, t.FunctionID)
	case b.published:
		e.bus.Publish(event.TriggerUnregistered{TriggerID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID, At: time.Now()})
	}
	e.log.Info("trigger registration rejected", "trigger_id", t.ID, "trigger_type", t.Type, "function_id", t.FunctionID,
		"parked", park, "err", cause)
	e.tellClaims(t, claims, &protocol.ErrorBody{Code: CodeTriggerRegFailed, Message: msg})
}

// servedTwinLocked reports whether another binding of b's type and
// function is active.
func (e *Engine) servedTwinLocked(b *binding) bool {
	for _, o := range e.triggers {
		if o != b && o.active && o.prov == b.prov && o.Type == b.Type && o.FunctionID == b.FunctionID {
			return true
		}
	}
	return false
}

// tellClaims reports a provider's refusal to every claim of a binding:
// their waiters and their owners.
func (e *Engine) tellClaims(t Trigger, claims []*claim, eb *protocol.ErrorBody) {
	for _, cl := range claims {
		e.resolveAck(cl.id, eb)
		if cl.owner != nil {
			cl.owner.send(mustEncode(protocol.TriggerRegistrationResult{ID: cl.id, TriggerType: t.Type,
				FunctionID: bareID(t.FunctionID), Error: eb}))
		}
	}
}

// dropBindingLocked forgets a binding and every claim on it.
func (e *Engine) dropBindingLocked(b *binding) {
	for _, cl := range b.claims {
		if e.claims[cl.id] == cl {
			delete(e.claims, cl.id)
		}
		if cl.owner != nil {
			delete(cl.owner.triggerIDs, cl.id)
		}
	}
	b.claims = nil
	delete(e.triggers, b.ID)
	if e.boundKeys[b.key] == b {
		delete(e.boundKeys, b.key)
	}
}

// regOutcome says what a registration did.
type regOutcome struct {
	created bool // a new binding (not a claim on an existing one)
	remote  bool // it was handed to a worker-provided type
}

// registerTrigger stores a claim by c (nil: ownerless) under t.ID. A claim
// with the key of an existing binding joins it; otherwise a new binding is
// handed to the type's provider, or parked until the type exists. A
// known t.ID is re-registered: moved to c, and to another binding if its
// key changed.
func (e *Engine) registerTrigger(c *conn, t Trigger) regOutcome {
	key := keyOf(t)
	e.tmu.Lock()
	defer e.tmu.Unlock()
	var ops triggerOps
	var out regOutcome
	e.mu.Lock()
	if c != nil && c.removed {
		e.mu.Unlock()
		return out
	}
	cl := e.claims[t.ID]
	if cl != nil && cl.b.key != key {
		e.removeClaimLocked(cl, &ops)
		cl = nil
	}
	if cl != nil {
		// The same trigger again (a reconnect replaying it): it becomes the
		// newest claim of its binding, owned by c.
		if cl.owner != nil {
			delete(cl.owner.triggerIDs, cl.id)
		}
		b := cl.b
		b.claims = slices.DeleteFunc(b.claims, func(x *claim) bool { return x == cl })
		cl.owner, cl.metadata = c, t.Metadata
	} else {
		cl = &claim{id: t.ID, owner: c, metadata: t.Metadata}
		e.claims[t.ID] = cl
	}
	if c != nil {
		c.triggerIDs[t.ID] = struct{}{}
	}
	b := e.boundKeys[key]
	if b == nil {
		id := t.ID
		if e.triggers[id] != nil {
			id = uuid.NewString() // the id names another binding still claimed by others
		}
		b = &binding{Trigger: Trigger{ID: id, Type: t.Type, FunctionID: t.FunctionID, Config: t.Config,
			TriggerNamespace: t.TriggerNamespace}, key: key}
		e.triggers[id], e.boundKeys[key] = b, b
		out.created = true
	}
	b.claims = append(b.claims, cl)
	cl.b = b
	_, metaChanged := b.restate()
	tt := e.providerOfLocked(b)
	switch {
	case tt != nil && (out.created || !b.active || b.prov != tt.key()):
		// New, refused before and tried again by this claim, or its new
		// owner finds its provider elsewhere.
		if cur := e.servingLocked(b); cur != nil && cur != tt {
			ops.deliver(cur, b, false)
		}
		b.active, b.waiting, b.prov = true, false, tt.key()
		out.remote = tt.conn != nil
		ops.deliver(tt, b, true)
	case tt != nil && metaChanged:
		ops.deliver(tt, b, true) // providers replace a binding by id
	case tt == nil && out.created && t.TriggerNamespace != "":
		e.log.Warn("trigger parked: no provider of its type in the namespace it names (trigger_namespace); "+
			"it is delivered when one registers there", "trigger_id", t.ID, "trigger_type", t.Type,
			"trigger_namespace", t.TriggerNamespace)
	}
	ops.registered(b)
	e.mu.Unlock()
	e.apply(ops)
	return out
}

// removeClaimLocked drops a claim. The last claim of a binding takes the
// binding with it (its provider is told); otherwise the binding stays with
// its newest remaining claim as owner.
func (e *Engine) removeClaimLocked(cl *claim, ops *triggerOps) {
	if e.claims[cl.id] == cl {
		delete(e.claims, cl.id)
	}
	if cl.owner != nil {
		delete(cl.owner.triggerIDs, cl.id)
	}
	b := cl.b
	b.claims = slices.DeleteFunc(b.claims, func(x *claim) bool { return x == cl })
	if len(b.claims) > 0 {
		ownerChanged, metaChanged := b.restate()
		if ownerChanged && b.TriggerNamespace == "" && e.resettleLocked(b, ops) {
			return // its new owner finds its provider in another namespace
		}
		if tt := e.servingLocked(b); tt != nil && metaChanged {
			ops.deliver(tt, b, true)
		}
		if ownerChanged || metaChanged {
			ops.registered(b)
		}
		return
	}
	e.removeBindingLocked(b, ops)
}

// removeBindingLocked drops a binding with its claims and tells its
// provider.
func (e *Engine) removeBindingLocked(b *binding, ops *triggerOps) {
	e.dropBindingLocked(b)
	tt := e.servingLocked(b)
	if tt != nil {
		ops.deliver(tt, b, false)
	}
	ops.unregistered(b)
	if tt == nil {
		return
	}
	// Bindings parked behind this one (see rejectBinding) get their turn.
	for _, w := range e.triggers {
		if w.waiting && w.prov == b.prov && w.Type == b.Type && w.FunctionID == b.FunctionID {
			w.waiting, w.active = false, true
			ops.deliver(tt, w, true)
			ops.registered(w)
		}
	}
}

// unregisterTriggerFrom removes a claim at a worker's request. Only its
// owner (or anyone, for ownerless claims) may remove it.
func (e *Engine) unregisterTriggerFrom(c *conn, id string) bool {
	e.tmu.Lock()
	defer e.tmu.Unlock()
	var ops triggerOps
	e.mu.Lock()
	cl := e.claims[id]
	if cl == nil || (cl.owner != nil && cl.owner != c) {
		e.mu.Unlock()
		return false
	}
	e.removeClaimLocked(cl, &ops)
	e.mu.Unlock()
	e.apply(ops)
	return true
}

// RegisterTriggerType installs an in-process trigger type. Bindings that
// were parked waiting for it are delivered to it.
func (e *Engine) RegisterTriggerType(worker string, t TriggerType) error {
	if err := e.registerTriggerType(worker, t); err != nil {
		return err
	}
	// Without the trigger lock: the sources' functions reach the observers.
	e.installBuiltinSources(worker, t.ID) // sources.go
	return nil
}

func (e *Engine) registerTriggerType(worker string, t TriggerType) error {
	if t.ID == "" || t.Provider == nil {
		return fmt.Errorf("engine: register trigger type %q: id and provider are required", t.ID)
	}
	tt := &triggerType{id: t.ID, description: t.Description, trf: t.TriggerRequestFormat,
		crf: t.CallRequestFormat, local: t.Provider, worker: worker}
	e.tmu.Lock()
	defer e.tmu.Unlock()
	e.mu.Lock()
	e.localWorker(worker)
	if old := e.ttypes[t.ID]; old != nil {
		e.mu.Unlock()
		return fmt.Errorf("engine: trigger type %s is already provided by %s", t.ID, old.workerName())
	}
	ops := e.installTypeLocked(tt)
	e.mu.Unlock()
	e.bus.Publish(event.TriggerTypeRegistered{TriggerType: t.ID, At: time.Now()})
	e.apply(ops)
	return nil
}

// installTypeLocked makes tt the provider of its id in its namespace and
// returns the deliveries of every binding that resolves to it: new ones,
// parked ones, and those that fell back to the default namespace's
// provider while their owner's namespace had none (they move, as in iii).
func (e *Engine) installTypeLocked(tt *triggerType) triggerOps {
	key := tt.key()
	e.ttypes[key] = tt
	if tt.conn != nil {
		tt.conn.ttypeIDs[key] = struct{}{}
	}
	var ops triggerOps
	for _, b := range e.triggers {
		if b.Type != tt.id || e.providerOfLocked(b) != tt {
			continue
		}
		if b.active && b.prov != key {
			if cur := e.ttypes[b.prov]; cur != nil {
				ops.deliver(cur, b, false)
			}
		}
		b.active, b.waiting, b.prov = true, false, key
		ops.deliver(tt, b, true)
		ops.registered(b)
	}
	return ops
}

// ttNamespace reads a registertriggertype/unregistertriggertype namespace:
// absent is the connection's; blank is refused (ok false).
func ttNamespace(c *conn, named string) (ns string, implicit, ok bool) {
	if named == "" {
		ns, implicit = c.namespace(), true
	} else if ns = strings.TrimSpace(named); ns == "" {
		return "", false, false
	}
	if ns == DefaultNamespace {
		ns = ""
	}
	return ns, implicit, true
}

func (e *Engine) registerRemoteTriggerType(c *conn, m protocol.RegisterTriggerType) {
	ns, implicit, ok := ttNamespace(c, m.Namespace)
	if !ok {
		c.log.Warn("registertriggertype refused: its namespace is blank; name one or omit it for the worker's own",
			"trigger_type", m.ID)
		return
	}
	tt := &triggerType{id: m.ID, description: m.Description, trf: m.TriggerRequestFormat,
		crf: m.CallRequestFormat, conn: c, ns: ns}
	e.tmu.Lock()
	defer e.tmu.Unlock()
	e.mu.Lock()
	if c.removed {
		e.mu.Unlock()
		return
	}
	if implicit && c.decl.Load() == nil {
		// Sent before the worker declared its namespace (the 0.25 SDKs
		// replay registrations first): it serves the default namespace
		// for now and moves to the worker's when the declaration arrives
		// (settleTriggers). It does not displace a provider another live
		// worker or the engine has there meanwhile: it waits for the
		// declaration instead.
		tt.implicit = true
		if old := e.ttypes[tt.key()]; old != nil && old.conn != c && (old.local != nil || e.liveOwnerLocked(old.conn)) {
			c.held = append(slices.DeleteFunc(c.held, func(h *triggerType) bool { return h.id == tt.id }), tt)
			e.mu.Unlock()
			return
		}
	}
	ops, ok := e.placeRemoteTypeLocked(tt)
	e.mu.Unlock()
	if !ok {
		return
	}
	e.bus.Publish(event.TriggerTypeRegistered{TriggerType: m.ID, Namespace: nsOrDefault(ns), WorkerID: c.id, At: time.Now()})
	e.apply(ops)
}

// placeRemoteTypeLocked installs a worker's trigger type, replacing
// another worker's of the same id and namespace; it refuses (false) to
// replace one of the engine's.
func (e *Engine) placeRemoteTypeLocked(tt *triggerType) (triggerOps, bool) {
	c := tt.conn
	if old := e.ttypes[tt.key()]; old != nil {
		if old.local != nil {
			c.log.Warn("worker tried to provide a built-in trigger type; ignored", "trigger_type", tt.id)
			return triggerOps{}, false
		}
		if old.conn != c {
			delete(old.conn.ttypeIDs, tt.key())
		}
	}
	return e.installTypeLocked(tt), true
}

func (e *Engine) unregisterRemoteTriggerType(c *conn, m protocol.UnregisterTriggerType) {
	ns, _, ok := ttNamespace(c, m.Namespace)
	if !ok {
		c.log.Warn("unregistertriggertype ignored: its namespace is blank", "trigger_type", m.ID)
		return
	}
	e.tmu.Lock()
	defer e.tmu.Unlock()
	e.mu.Lock()
	c.held = slices.DeleteFunc(c.held, func(h *triggerType) bool { return h.id == m.ID && h.ns == ns })
	tt := e.ttypes[ttKey(ns, m.ID)]
	if tt == nil || tt.conn != c {
		e.mu.Unlock()
		return
	}
	ops := e.dropTypeLocked(tt)
	e.mu.Unlock()
	e.bus.Publish(event.TriggerTypeUnregistered{TriggerType: m.ID, Namespace: nsOrDefault(ns), WorkerID: c.id, At: time.Now()})
	e.apply(ops)
}

// dropTypeLocked removes a trigger type. Each binding it served resolves
// again: one that found it in its owner's namespace falls back to the
// default namespace's provider, if any; the others are parked (their
// events say so) and come back when the type is registered again.
func (e *Engine) dropTypeLocked(tt *triggerType) triggerOps {
	key := tt.key()
	delete(e.ttypes, key)
	if tt.conn != nil {
		delete(tt.conn.ttypeIDs, key)
	}
	var ops triggerOps
	for _, b := range e.triggers {
		if b.prov != key {
			continue
		}
		wasActive := b.active
		b.active, b.prov = false, ""
		if next := e.providerOfLocked(b); next != nil && wasActive {
			b.active, b.prov = true, next.key()
			ops.deliver(next, b, true)
		}
		if wasActive {
			ops.registered(b)
		}
	}
	return ops
}

// settleTriggers runs when a worker's first declaration arrives: the
// trigger types it registered before, without a namespace, move to its
// namespace (those that waited behind another provider are placed now),
// and its bindings that name no provider namespace resolve again from
// its namespace.
func (e *Engine) settleTriggers(c *conn) {
	e.tmu.Lock()
	defer e.tmu.Unlock()
	e.mu.Lock()
	if c.removed {
		e.mu.Unlock()
		return
	}
	ns := c.namespace()
	if ns == DefaultNamespace {
		ns = ""
	}
	var (
		ops        triggerOps
		gone, came []*triggerType
	)
	for key := range c.ttypeIDs {
		tt := e.ttypes[key]
		if tt == nil || tt.conn != c || !tt.implicit {
			continue
		}
		tt.implicit = false
		if tt.ns == ns {
			continue
		}
		lost := e.dropTypeLocked(tt)
		ops.ds, ops.evs = append(ops.ds, lost.ds...), append(ops.evs, lost.evs...)
		gone = append(gone, &triggerType{id: tt.id, ns: tt.ns})
		tt.ns = ns
		c.held = append(c.held, tt)
	}
	held := c.held
	c.held = nil
	for _, tt := range held {
		tt.implicit, tt.ns = false, ns
		if more, ok := e.placeRemoteTypeLocked(tt); ok {
			ops.ds, ops.evs = append(ops.ds, more.ds...), append(ops.evs, more.evs...)
			came = append(came, tt)
		}
	}
	for id := range c.triggerIDs {
		if cl := e.claims[id]; cl != nil && cl.b.TriggerNamespace == "" && cl.b.owner() == cl {
			e.resettleLocked(cl.b, &ops)
		}
	}
	e.mu.Unlock()
	now := time.Now()
	for _, tt := range gone {
		e.bus.Publish(event.TriggerTypeUnregistered{TriggerType: tt.id, Namespace: nsOrDefault(tt.ns), WorkerID: c.id, At: now})
	}
	for _, tt := range came {
		e.bus.Publish(event.TriggerTypeRegistered{TriggerType: tt.id, Namespace: nsOrDefault(tt.ns), WorkerID: c.id, At: now})
	}
	e.apply(ops)
}

// triggerResultFromProvider handles a provider's ack of a delivered
// binding. Errors park the binding and reach the owners of its claims.
func (e *Engine) triggerResultFromProvider(c *conn, m protocol.TriggerRegistrationResult) {
	e.tmu.Lock()
	defer e.tmu.Unlock()
	e.mu.Lock()
	b := e.triggers[m.ID]
	if b == nil {
		e.mu.Unlock()
		return
	}
	tt := e.ttypes[b.prov]
	if b.prov == "" || tt == nil || tt.conn != c {
		e.mu.Unlock()
		return // only the current provider may answer
	}
	t, claims := b.Trigger, slices.Clone(b.claims)
	var ops triggerOps
	if m.Error != nil && b.active {
		b.active = false
		ops.registered(b)
	}
	e.mu.Unlock()
	e.apply(ops)
	if m.Error == nil {
		for _, cl := range claims {
			e.resolveAck(cl.id, nil)
		}
		return
	}
	c.log.Info("provider rejected trigger", "trigger_id", t.ID, "trigger_type", t.Type, "code", m.Error.Code, "message", m.Error.Message)
	e.tellClaims(t, claims, m.Error)
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

// RegisterTrigger creates an ownerless claim (it survives every worker)
// and, when it creates a binding of a worker-provided type, waits up to
// 10 s for that provider's verdict; on timeout the binding is kept. It
// returns the new trigger id. A claim on an existing binding is accepted
// at once.
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
	out := e.registerTrigger(nil, t)
	if !out.remote {
		select {
		case r := <-ch: // an in-process provider refused it synchronously
			if r.err != nil {
				e.unregisterTriggerFrom(nil, t.ID) // its claim, in case it was parked
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

// UnregisterTrigger removes the claim with this id (its binding stays
// while other claims hold it), or else the binding with this id and every
// claim on it.
func (e *Engine) UnregisterTrigger(id string) bool {
	e.tmu.Lock()
	defer e.tmu.Unlock()
	var ops triggerOps
	e.mu.Lock()
	if cl := e.claims[id]; cl != nil {
		e.removeClaimLocked(cl, &ops)
	} else if b := e.triggers[id]; b != nil {
		e.removeBindingLocked(b, &ops)
	} else {
		e.mu.Unlock()
		return false
	}
	e.mu.Unlock()
	e.apply(ops)
	return true
}

// Bindings returns copies of the active bindings of a trigger type, for
// in-process providers that fire by scanning.
func (e *Engine) Bindings(triggerType string) []Trigger {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var out []Trigger
	for _, b := range e.triggers {
		if b.prov == triggerType && b.active { // an in-process type's key is its id
			out = append(out, b.Trigger)
		}
	}
	return out
}

// Binding returns the active binding with id, and whether there is one.
func (e *Engine) Binding(id string) (Trigger, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if b := e.triggers[id]; b != nil && b.active {
		return b.Trigger, true
	}
	return Trigger{}, false
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

package engine

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Namespaces (iii 0.25). Every worker connection has one namespace, which
// its engine::workers::register names (absent: DefaultNamespace); its
// function registrations live there. Calls name the namespace they
// resolve in (absent: the default one) and resolve strictly there, except
// engine::* ids, which are the engine's and resolve in the default
// namespace from everywhere. A connection that names no namespace (every
// 0.22 SDK) lives in the default namespace, exactly as before.
//
// The function table is keyed by fnKey: the bare id in the default
// namespace (so every default-namespace lookup is the id, as before
// namespaces), "namespace\x00id" elsewhere. Trigger bindings and enqueued
// calls carry that key as their function id, which route splits again.

// DefaultNamespace is what an absent namespace means.
const DefaultNamespace = protocol.DefaultNamespace

func nsOrDefault(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

// fnKey is the function table key of id in namespace ns.
func fnKey(ns, id string) string {
	if ns == "" || ns == DefaultNamespace {
		return id
	}
	return ns + "\x00" + id
}

// splitKey is the inverse of fnKey.
func splitKey(key string) (ns, id string) {
	if i := strings.IndexByte(key, 0); i >= 0 {
		return key[:i], key[i+1:]
	}
	return DefaultNamespace, key
}

// namespace is the connection's namespace: the one its first
// engine::workers::register named, else the default one.
func (c *conn) namespace() string {
	if d := c.decl.Load(); d != nil && d.namespace != "" {
		return d.namespace
	}
	return DefaultNamespace
}

// liveOwnerLocked reports whether o counts as the owner of what it
// registered when another worker registers the same identity: it is
// connected (not tearing down) and not being replaced by a reload
// (SetRetiring). Callers hold Engine.mu.
func (e *Engine) liveOwnerLocked(o *conn) bool {
	return o != nil && !o.removed && o.ctx.Err() == nil && !o.retiring.Load()
}

// holder is the worker a registration belongs to (its conn, or the owner
// of an HTTP-invoked function); nil for the engine's own functions.
func (r *registration) holder() *conn {
	if r.conn != nil {
		return r.conn
	}
	return r.owner
}

// conflictLocked returns the owner that keeps id in f against c's
// registration: the first registration before c's (all of them when c has
// none yet) held by another live owner; "" when there is none. Callers
// hold Engine.mu.
func (e *Engine) conflictLocked(f *function, c *conn) string {
	for _, r := range f.regs {
		h := r.holder()
		switch {
		case h == c:
			return ""
		case h == nil:
			return r.local.name // an in-process function of the engine's
		case e.liveOwnerLocked(h):
			return h.id
		}
	}
	return ""
}

// enforcesConflicts reports whether c's registrations are refused when
// they collide with another live owner's: only for workers that declared
// features (0.25+ SDKs, which understand registrationrejected), and not
// when the engine shares functions (Options.SharedFunctions).
func (e *Engine) enforcesConflicts(c *conn) bool {
	return !e.opts.SharedFunctions && c.declared()
}

// rejected is one registrationrejected to send.
type rejected struct {
	fnKey string
	owner string
}

// SetRetiring marks a worker as being replaced (a hot reload of its
// process): a new worker that registers the same worker name or function
// ids is not in conflict with it, and shares its functions until it
// leaves. It clears the mark with false (a failed reload).
func (e *Engine) SetRetiring(workerID string, retiring bool) error {
	e.mu.RLock()
	c := e.conns[workerID]
	e.mu.RUnlock()
	if c == nil {
		return fmt.Errorf("engine: worker %s: %w", workerID, ErrWorkerNotFound)
	}
	c.retiring.Store(retiring)
	return nil
}

// settleDeclaration runs when a worker's first engine::workers::register
// arrives, after the registrations the SDK replays before it: it refuses
// a worker name another live worker holds in the namespace (and closes the
// connection), moves the connection's functions into its namespace, and
// refuses those another live worker already serves there.
func (e *Engine) settleDeclaration(c *conn) {
	ns := c.namespace()
	name := c.declaredName()
	var (
		moved, dropped []string // function keys
		rejects        []rejected
		nameOwner      *conn
	)
	e.mu.Lock()
	if c.removed {
		e.mu.Unlock()
		return
	}
	if e.enforcesConflicts(c) && name != "" {
		for _, o := range e.conns {
			if o != c && e.liveOwnerLocked(o) && o.namespace() == ns && o.declaredName() == name {
				nameOwner = o
				break
			}
		}
	}
	if nameOwner != nil {
		c.nameRefused.Store(true)
		for key := range c.fnIDs {
			if e.dropRegistrationLocked(c, key) {
				dropped = append(dropped, key)
			}
		}
	} else {
		if ns != DefaultNamespace {
			for key := range c.fnIDs {
				if kns, id := splitKey(key); kns == DefaultNamespace && !strings.HasPrefix(id, "engine::") {
					if e.moveRegistrationLocked(c, key, fnKey(ns, id)) {
						moved = append(moved, id)
					}
				}
			}
		}
		if e.enforcesConflicts(c) {
			for key := range c.fnIDs {
				f := e.functions[key]
				if f == nil {
					continue
				}
				if owner := e.conflictLocked(f, c); owner != "" && e.dropRegistrationLocked(c, key) {
					dropped = append(dropped, key)
					rejects = append(rejects, rejected{fnKey: key, owner: owner})
				}
			}
		}
	}
	e.mu.Unlock()

	now := time.Now()
	for _, key := range dropped {
		_, id := splitKey(key)
		e.bus.Publish(event.FunctionUnregistered{FunctionID: id, WorkerID: c.id, At: now})
	}
	if len(moved) > 0 {
		c.log.Debug("functions moved into the worker's namespace", "namespace", ns, "functions", moved)
	}
	if len(moved)+len(dropped) > 0 {
		e.notifyFunctionsChanged()
	}
	for _, r := range rejects {
		e.rejectFunction(c, r.fnKey, r.owner)
	}
	if nameOwner != nil {
		reason := fmt.Sprintf("worker name %q is taken in namespace %s by worker %s", name, ns, nameOwner.id)
		c.log.Warn("worker refused: its name is taken in its namespace", "name", name, "namespace", ns, "owner_worker_id", nameOwner.id)
		c.send(mustEncode(protocol.RegistrationRejected{Code: protocol.CodeWorkerNamespaceConflict, Namespace: ns,
			WorkerName: name, OwnerWorkerID: nameOwner.id}))
		c.close(websocket.StatusPolicyViolation, reason)
	}
}

// declaredName is the worker name from the connection's metadata ("" if
// it sent none).
func (c *conn) declaredName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta.Name
}

// rejectFunction tells c its registration of a function key was refused
// because owner serves it in the namespace.
func (e *Engine) rejectFunction(c *conn, key, owner string) {
	ns, id := splitKey(key)
	c.log.Warn("function registration refused: another worker serves it in the namespace",
		"function_id", id, "namespace", ns, "owner_worker_id", owner)
	c.send(mustEncode(protocol.RegistrationRejected{Code: protocol.CodeFunctionNamespaceConflict, Namespace: ns,
		FunctionID: id, OwnerWorkerID: owner}))
}

// moveRegistrationLocked moves c's registration from one function key to
// another (its namespace became known after it registered).
func (e *Engine) moveRegistrationLocked(c *conn, from, to string) bool {
	f := e.functions[from]
	if f == nil || from == to {
		return false
	}
	var mine []*registration
	rest := make([]*registration, 0, len(f.regs))
	for _, r := range f.regs {
		if r.conn == c || r.owner == c {
			mine = append(mine, r)
		} else {
			rest = append(rest, r)
		}
	}
	if len(mine) == 0 {
		return false
	}
	if len(rest) == 0 {
		delete(e.functions, from)
	} else {
		f.regs = rest
	}
	delete(c.fnIDs, from)
	ns, id := splitKey(to)
	g := e.functions[to]
	if g == nil {
		g = &function{id: id, ns: ns}
		e.functions[to] = g
	}
	g.regs = append(slices.Clip(g.regs), mine...)
	c.fnIDs[to] = struct{}{}
	return true
}

// namespacesOfLocked lists the namespaces other than ns where id is
// registered, sorted.
func (e *Engine) namespacesOfLocked(id, ns string) []string {
	var out []string
	for key, f := range e.functions {
		if len(f.regs) == 0 {
			continue
		}
		if kns, kid := splitKey(key); kid == id && kns != ns {
			out = append(out, kns)
		}
	}
	sort.Strings(out)
	return out
}

// stamp is the caller of a call this worker makes: what its SDK asserted
// (the handler it calls from, one parent level), with the worker's id and
// name stamped in by the engine.
func (c *conn) stamp(asserted *protocol.Caller) *protocol.Caller {
	out := &protocol.Caller{WorkerID: c.id, WorkerName: c.declaredName()}
	if asserted != nil {
		out.FunctionID, out.InvocationID = asserted.FunctionID, asserted.InvocationID
		if p := asserted.Parent; p != nil {
			out.Parent = &protocol.Caller{WorkerID: p.WorkerID, WorkerName: p.WorkerName,
				FunctionID: p.FunctionID, InvocationID: p.InvocationID}
		}
	}
	return out
}

// namespacesOK refuses a registertrigger whose namespace or
// trigger_namespace was named and left blank, telling the worker which
// one (as iii: INVALID_NAMESPACE). Names are trimmed in place.
func (c *conn) namespacesOK(m protocol.RegisterTrigger) bool {
	for _, f := range []struct{ field, value string }{{"namespace", m.Namespace}, {"trigger_namespace", m.TriggerNamespace}} {
		if f.value != "" && strings.TrimSpace(f.value) == "" {
			c.log.Warn("trigger registration refused: a blank namespace", "trigger_id", m.ID, "field", f.field)
			c.send(mustEncode(protocol.TriggerRegistrationResult{ID: m.ID, TriggerType: m.TriggerType, FunctionID: m.FunctionID,
				Error: &protocol.ErrorBody{Code: protocol.CodeInvalidNamespace, Message: fmt.Sprintf(
					"registertrigger %s: %s is blank; name a namespace or omit it (%s)", m.ID, f.field, blankMeaning(f.field))}}))
			return false
		}
	}
	return true
}

func blankMeaning(field string) string {
	if field == "namespace" {
		return "absent binds the function in the default namespace"
	}
	return "absent looks for the provider in the worker's namespace, then in the default one"
}

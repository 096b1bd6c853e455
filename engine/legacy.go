package engine

import (
	"slices"

	"github.com/iii-workbench/iii/engine/protocol"
)

// The legacy shim of the Python 0.25 SDK. A worker registers a function
// with observe.legacy_trigger_type T: the function stands in for the old
// trigger type T. A registertrigger of type T then becomes an observer of
// that function (the trigger's id is the observer's, its config the
// observer's args, its function the target, its metadata the observer's)
// whose view carries legacy {trigger_type, config}, so the host's
// on_observer_added sees what was asked in the old terms. Unregistering
// the trigger disposes the observer; so does its worker leaving.
//
// A trigger type provider of T wins: the shim applies only when no
// trigger type resolves for the trigger (trigger_namespace, else the
// worker's namespace, then the default one); the function is looked up
// in the same namespaces, in the same order. A trigger registered before
// any such function exists is parked as an ordinary binding until one
// registers (adoptLegacyTriggers): workers start in any order.

// legacyShim turns a registertrigger into an observer when a function
// stands in for its type; it reports whether it did. A refusal is told in
// a triggerregistrationresult with the observer's error code.
func (e *Engine) legacyShim(c *conn, t Trigger, targetNS string) bool {
	m := protocol.RegisterTrigger{ID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID, Config: t.Config,
		Metadata: t.Metadata, Namespace: targetNS, TriggerNamespace: t.TriggerNamespace}
	spaces := []string{m.TriggerNamespace}
	if m.TriggerNamespace == "" {
		spaces = []string{c.namespace(), DefaultNamespace}
	}
	e.mu.RLock()
	for _, ns := range spaces {
		if e.ttypes[ttKey(ns, m.TriggerType)] != nil {
			e.mu.RUnlock()
			return false
		}
	}
	var src, srcNS string
	for _, ns := range spaces {
		if src = e.legacyFunctionLocked(ns, m.TriggerType); src != "" {
			srcNS = ns
			break
		}
	}
	e.mu.RUnlock()
	if src == "" {
		return false
	}
	config := m.Config
	if len(config) == 0 {
		config = []byte("{}")
	}
	obs := protocol.Observe{ID: m.ID, Source: protocol.ObserveSource{FunctionID: src, Namespace: srcNS, Args: config},
		Target: protocol.FunctionRef{FunctionID: m.FunctionID, Namespace: m.Namespace}, Metadata: m.Metadata}
	var res protocol.ObserveResult
	e.observersDo(func(ops *obsOps) {
		res = e.observeLocked(c, obs, ops, &protocol.LegacyTrigger{TriggerType: m.TriggerType, Config: config})
	})
	c.log.Debug("registertrigger made an observer of the function standing in for its type", "trigger_id", m.ID,
		"trigger_type", m.TriggerType, "function_id", src, "namespace", srcNS, "state", res.State)
	if res.State == protocol.ObserverError && res.Error != nil {
		c.send(mustEncode(protocol.TriggerRegistrationResult{ID: m.ID, TriggerType: m.TriggerType, FunctionID: m.FunctionID,
			Error: res.Error}))
	}
	return true
}

// legacyFunctionLocked is the id of a function in namespace ns that
// stands in for trigger type typ ("" if none; the first by id if several).
// Callers hold Engine.mu.
func (e *Engine) legacyFunctionLocked(ns, typ string) string {
	var ids []string
	for key, f := range e.functions {
		if kns, _ := splitKey(key); kns != nsOrDefault(ns) {
			continue
		}
		if slices.ContainsFunc(f.regs, func(r *registration) bool { return r.obs != nil && r.obs.legacyType == typ }) {
			ids = append(ids, f.id)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	return slices.Min(ids)
}

// unregisterLegacy disposes the observer a worker's registertrigger made
// (legacyShim); it reports whether there was one.
func (e *Engine) unregisterLegacy(c *conn, id string) bool {
	var found bool
	e.observersDo(func(ops *obsOps) {
		o := e.obs.byID[id]
		found = o != nil && o.owner == c && o.legacy != nil
		if found {
			e.disposeLocked(o, &protocol.ErrorBody{Code: protocol.CodeUnobserved, Message: "its trigger was unregistered"}, ops)
		}
	})
	return found
}

// adoptLegacyTriggers runs when c registers fnID standing in for trigger
// type typ: the parked bindings of typ that nothing provides and for
// which the shim would now pick this function become its observers, one
// per worker's claim (ownerless claims, engine::register_trigger's, stay
// parked).
func (e *Engine) adoptLegacyTriggers(c *conn, fnID, typ string) {
	type adoption struct {
		owner    *conn
		t        Trigger
		targetNS string
	}
	var (
		adopt []adoption
		ops   triggerOps
	)
	ns := c.namespace()
	e.tmu.Lock()
	e.mu.Lock()
	for _, b := range e.triggers {
		if b.Type != typ || b.active || b.waiting || e.providerOfLocked(b) != nil {
			continue
		}
		spaces := []string{b.TriggerNamespace}
		if b.TriggerNamespace == "" {
			spaces = []string{b.home(), DefaultNamespace}
		}
		picked := false
		for _, s := range spaces {
			if id := e.legacyFunctionLocked(s, typ); id != "" {
				picked = id == fnID && nsOrDefault(s) == nsOrDefault(ns)
				break
			}
		}
		if !picked {
			continue
		}
		targetNS, fid := splitKey(b.FunctionID)
		for _, cl := range slices.Clone(b.claims) {
			if cl.owner == nil {
				continue
			}
			adopt = append(adopt, adoption{owner: cl.owner, targetNS: targetNS, t: Trigger{ID: cl.id, Type: typ, FunctionID: fid,
				Config: b.Config, Metadata: cl.metadata, TriggerNamespace: b.TriggerNamespace}})
			e.removeClaimLocked(cl, &ops)
		}
	}
	e.mu.Unlock()
	e.apply(ops)
	e.tmu.Unlock()
	for _, a := range adopt {
		e.legacyShim(a.owner, a.t, a.targetNS)
	}
}

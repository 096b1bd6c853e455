package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// ExternalFunction is a worker's registerfunction that carries an
// invocation block: a function the engine serves itself by calling out to
// an HTTP endpoint (spec §2.11).
type ExternalFunction struct {
	ID          string
	Invocation  json.RawMessage // the registerfunction's invocation object, as sent
	Description string
	Metadata    json.RawMessage
	WorkerID    string // the registering worker; the function goes when it does
}

// ExternalFunctionProvider serves HTTP-invoked functions: the
// iii-http-functions module. ExternalHandler returns the in-process handler
// for one registration, or an error refusing it (a malformed invocation).
type ExternalFunctionProvider interface {
	ExternalHandler(fn ExternalFunction) (Handler, error)
}

type externalProvider struct {
	worker string
	p      ExternalFunctionProvider
}

// SetExternalFunctionProvider installs the provider of HTTP-invoked
// functions, served on behalf of the named in-process worker. Without one,
// registrations carrying an invocation are ignored (as iii does without its
// iii-http-functions worker). Clearing it (nil) removes every HTTP-invoked
// function.
func (e *Engine) SetExternalFunctionProvider(worker string, p ExternalFunctionProvider) {
	if p != nil {
		e.external.Store(&externalProvider{worker: worker, p: p})
		return
	}
	e.external.Store(nil)
	var gone []string
	e.mu.Lock()
	for id, f := range e.functions {
		regs := f.regs[:0:0]
		for _, r := range f.regs {
			if r.owner == nil {
				regs = append(regs, r)
			} else {
				delete(r.owner.fnIDs, id)
			}
		}
		if len(regs) == len(f.regs) {
			continue
		}
		gone = append(gone, id)
		if len(regs) == 0 {
			delete(e.functions, id)
		} else {
			f.regs = regs
		}
	}
	e.mu.Unlock()
	for _, id := range gone {
		e.bus.Publish(event.FunctionUnregistered{FunctionID: id, At: time.Now()})
	}
	if len(gone) > 0 {
		e.notifyFunctionsChanged()
	}
}

// externalRegistration builds the registration of an HTTP-invoked
// function, or reports (false) that it is ignored.
func (e *Engine) externalRegistration(c *conn, m protocol.RegisterFunction) (*registration, bool) {
	ep := e.external.Load()
	if ep == nil {
		c.log.Warn("HTTP-invoked function ignored: the iii-http-functions module is not loaded (add it to config.yaml)",
			"function_id", m.ID)
		e.refuse(c, m.ID, "it is an HTTP-invoked function and the iii-http-functions module is not loaded")
		return nil, false
	}
	h, err := ep.p.ExternalHandler(ExternalFunction{ID: m.ID, Invocation: m.Invocation,
		Description: m.Description, Metadata: m.Metadata, WorkerID: c.id})
	if err != nil {
		c.log.Warn("HTTP-invoked function refused", "function_id", m.ID, "err", err)
		e.refuse(c, m.ID, fmt.Sprintf("its HTTP invocation was refused: %v", err))
		return nil, false
	}
	e.mu.Lock()
	lw := e.localWorker(ep.worker)
	e.mu.Unlock()
	return &registration{description: m.Description, requestFormat: m.RequestFormat,
		responseFormat: m.ResponseFormat, metadata: m.Metadata,
		local: lw, handler: h, owner: c, at: time.Now()}, true
}

// refusal is why a function registration was turned down.
type refusal struct {
	reason string
	by     *conn
}

// refuse records that c's registration of id was turned down, so calls
// of id explain themselves (the SDKs have no reply to registerfunction).
func (e *Engine) refuse(c *conn, id, reason string) {
	e.mu.Lock()
	if !c.removed {
		if key := fnKey(c.namespace(), id); e.functions[key] == nil {
			e.refused[key] = refusal{reason: reason, by: c}
		}
	}
	e.mu.Unlock()
}

// notFound is the error for a call of an id nobody serves in namespace
// ns; it names the namespaces where the id is registered.
func (e *Engine) notFound(ns, id string) outcome {
	e.mu.RLock()
	r, ok := e.refused[fnKey(ns, id)]
	var elsewhere []string
	if !ok {
		elsewhere = e.namespacesOfLocked(id, ns)
	}
	e.mu.RUnlock()
	if v := e.clusterView(); v != nil && !ok {
		// Other engines' namespaces too: the call could have been
		// forwarded to any of them.
		for _, f := range v.RemoteFunctions() {
			if f.ID == id && nsOrDefault(f.Namespace) != ns {
				elsewhere = append(elsewhere, nsOrDefault(f.Namespace))
			}
		}
		sort.Strings(elsewhere)
		elsewhere = slices.Compact(elsewhere)
	}
	switch {
	case ok:
		return failed(CodeFunctionNotFound, "Function %s not found (its registration by worker %s was refused: %s)", id, r.by.id, r.reason)
	case len(elsewhere) > 0:
		return failed(CodeFunctionNotFound, "Function %s not found in namespace %s. It is registered in namespace(s): %s",
			id, ns, strings.Join(elsewhere, ", "))
	case ns != DefaultNamespace:
		return failed(CodeFunctionNotFound, "Function %s not found in namespace %s", id, ns)
	}
	return failed(CodeFunctionNotFound, "Function %s not found", id)
}

// forgetRefusalsLocked drops the refusals of a departed worker.
func (e *Engine) forgetRefusalsLocked(c *conn) {
	for id, r := range e.refused {
		if r.by == c {
			delete(e.refused, id)
		}
	}
}

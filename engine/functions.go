package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// ErrFunctionExists is returned when an in-process function id is taken.
var ErrFunctionExists = errors.New("engine: function already registered")

// Call is one invocation as an in-process handler sees it.
type Call struct {
	InvocationID   string
	FunctionID     string
	Data           json.RawMessage
	Metadata       json.RawMessage
	Traceparent    string
	Baggage        string
	CallerWorkerID string // empty when the engine itself is the caller
	Trigger        string // what caused the call: TriggerKindWorker, "http", ...

	// detached marks a worker's void call: it outlives its caller (the
	// caller leaving does not release it).
	detached bool
	// resumed marks a call released from a breakpoint, deadline the
	// engine-side deadline it keeps (unix nanos; 0: from dispatch).
	resumed  bool
	deadline int64
	// Namespace the function resolves in ("" = DefaultNamespace).
	Namespace string
	// Caller is what the calling SDK asserted about who made the call
	// (invokefunction.caller); the engine stamps the calling worker in
	// when it sends the call on.
	Caller *protocol.Caller
	caller *conn // the worker whose invokefunction this is; nil for the engine's calls

	// declared marks an engine::workers::register already applied on the
	// caller's reader.
	declared bool

	// ObserveDepth is the call's causal depth in observe hops; Activation
	// marks an observer activation (observe.go).
	ObserveDepth uint32
	Activation   *protocol.Activation
	// input is the payload as the calling worker sent it (Data carries
	// the engine's _caller_worker_id too); observers see this.
	input json.RawMessage
	// vouched may vouch for Data (protocol.Compact): the calling worker's
	// payload, scanned by its connection's decoder.
	vouched protocol.Compact
}

// StampedCaller is the caller a worker serving the call is told of: what
// the calling SDK asserted, with the calling worker's id and name stamped
// in (nil for a call no worker made and no caller was given for).
func (c *Call) StampedCaller() *protocol.Caller {
	if c.caller != nil {
		return c.caller.stamp(c.Caller)
	}
	return c.Caller
}

// Trigger kinds the router fills in when the caller did not.
const (
	TriggerKindWorker = "worker" // a worker's invokefunction
	TriggerKindEngine = "engine" // an in-process call without a kind
	// TriggerKindObserve marks an observer activation; TriggerKindLocal a
	// call a worker ran in-process and reported (local dispatch).
	TriggerKindObserve = "observe"
	TriggerKindLocal   = "local"
)

// Handler serves an in-process function. Returning a *protocol.ErrorBody
// (or an error wrapping one) sets the error code the caller sees; any other
// error becomes invocation_failed. A nil result means "no result".
type Handler func(ctx context.Context, call *Call) (json.RawMessage, error)

// Function is an in-process function registered by the engine or a module.
type Function struct {
	ID             string
	Description    string
	RequestFormat  json.RawMessage
	ResponseFormat json.RawMessage
	Metadata       json.RawMessage
	Handler        Handler
}

// function is one function id and every live registration serving it.
type function struct {
	id   string
	ns   string          // DefaultNamespace for in-process functions
	regs []*registration // copy-on-write under Engine.mu
	next atomic.Uint32   // rotates the start of the least-busy scan
}

// registration is one worker's (or the engine's) claim to serve a function.
type registration struct {
	description    string
	requestFormat  json.RawMessage
	responseFormat json.RawMessage
	metadata       json.RawMessage
	conn           *conn        // remote worker, or nil
	local          *localWorker // in-process owner, or nil
	handler        Handler
	at             time.Time
	// owner is the worker that registered an HTTP-invoked function: the
	// engine serves it in-process (handler, local) and drops it when the
	// owner disconnects.
	owner *conn
	// obs is how the function takes observers (args_format, private,
	// observable, owner delivery); nil for a plain registration.
	obs *regObserve
}

func (r *registration) workerName() string {
	if r.conn != nil {
		return r.conn.name()
	}
	return r.local.name
}

// localWorker is an in-process provider of functions (the engine itself, a
// module), listed among the workers with runtime "engine".
type localWorker struct {
	name        string
	description string
	startedAt   time.Time
}

// pick chooses the registration for a new call: an in-process handler if
// there is one, else the least busy live worker that is not draining. A
// draining worker is used only when no other serves the id. Callers hold
// Engine.mu for reading.
func (f *function) pick() *registration {
	regs := f.regs
	switch len(regs) {
	case 0:
		return nil
	case 1:
		return regs[0]
	}
	start := int(f.next.Add(1))
	var best, fallback *registration
	bestLoad, fallbackLoad := int64(math.MaxInt64), int64(math.MaxInt64)
	for i := range regs {
		r := regs[(start+i)%len(regs)]
		if r.conn == nil {
			return r
		}
		load := r.conn.inflight.Load()
		if r.conn.draining.Load() {
			if load < fallbackLoad {
				fallback, fallbackLoad = r, load
			}
			continue
		}
		if load < bestLoad {
			best, bestLoad = r, load
		}
	}
	if best != nil {
		return best
	}
	return fallback
}

func (e *Engine) localWorker(name string) *localWorker {
	lw := e.locals[name]
	if lw == nil {
		lw = &localWorker{name: name, startedAt: time.Now()}
		e.locals[name] = lw
	}
	return lw
}

// RegisterFunction registers an in-process function served on behalf of
// the named in-process worker (e.g. "iii-engine-functions", "iii-http").
func (e *Engine) RegisterFunction(worker string, fn Function) error {
	if fn.ID == "" || fn.Handler == nil {
		return fmt.Errorf("engine: register function %q: id and handler are required", fn.ID)
	}
	e.mu.Lock()
	if f := e.functions[fn.ID]; f != nil && len(f.regs) > 0 {
		e.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrFunctionExists, fn.ID)
	}
	f := &function{id: fn.ID, ns: DefaultNamespace}
	f.regs = []*registration{{
		description: fn.Description, requestFormat: fn.RequestFormat,
		responseFormat: fn.ResponseFormat, metadata: fn.Metadata,
		local: e.localWorker(worker), handler: fn.Handler, at: time.Now(),
	}}
	e.functions[fn.ID] = f
	e.mu.Unlock()
	e.bus.Publish(event.FunctionRegistered{FunctionID: fn.ID, Worker: worker, At: time.Now()})
	e.notifyFunctionsChanged()
	e.obsFunctionChanged(fn.ID)
	return nil
}

// UnregisterFunction removes an in-process function.
func (e *Engine) UnregisterFunction(id string) {
	e.mu.Lock()
	f := e.functions[id]
	if f == nil || len(f.regs) == 0 || f.regs[0].local == nil {
		e.mu.Unlock()
		return
	}
	delete(e.functions, id)
	e.mu.Unlock()
	e.bus.Publish(event.FunctionUnregistered{FunctionID: id, At: time.Now()})
	e.notifyFunctionsChanged()
	e.obsFunctionChanged(id)
}

func (e *Engine) registerRemoteFunction(c *conn, m protocol.RegisterFunction) {
	if !e.admitObserveRegistration(c, &m) {
		return
	}
	reg := &registration{
		description: m.Description, requestFormat: m.RequestFormat,
		responseFormat: m.ResponseFormat, metadata: m.Metadata,
		conn: c, at: time.Now(), obs: regObserveOf(&m),
	}
	if len(m.Invocation) > 0 {
		var ok bool
		if reg, ok = e.externalRegistration(c, m); !ok {
			return
		}
	}
	ns := c.namespace()
	key := fnKey(ns, m.ID)
	e.mu.Lock()
	if c.removed || c.nameRefused.Load() {
		e.mu.Unlock()
		return
	}
	f := e.functions[key]
	if f != nil && len(f.regs) > 0 && f.regs[0].local != nil && f.regs[0].owner == nil {
		owner := f.regs[0].local.name
		e.mu.Unlock()
		c.log.Warn("worker tried to register a built-in function id; ignored", "function_id", m.ID)
		if c.declared() {
			e.rejectFunction(c, key, owner)
		}
		return
	}
	if f != nil && e.enforcesConflicts(c) {
		if owner := e.conflictLocked(f, c); owner != "" {
			e.mu.Unlock()
			e.rejectFunction(c, key, owner)
			return
		}
	}
	delete(e.refused, key)
	if f == nil {
		f = &function{id: m.ID, ns: ns}
		e.functions[key] = f
	}
	regs := make([]*registration, 0, len(f.regs)+1)
	for _, r := range f.regs {
		// An HTTP-invoked function is served by the engine alone: it
		// replaces, and is replaced by, every other registration.
		if r.conn != c && r.owner == nil && reg.owner == nil {
			regs = append(regs, r)
		}
	}
	f.regs = append(regs, reg)
	c.fnIDs[key] = struct{}{}
	servers := len(f.regs)
	e.mu.Unlock()
	if servers > 1 {
		c.log.Debug("function served by several workers", "function_id", m.ID, "namespace", ns, "workers", servers)
	}
	e.bus.Publish(event.FunctionRegistered{FunctionID: m.ID, WorkerID: c.id, Worker: c.name(), At: reg.at})
	e.notifyFunctionsChanged()
	e.obsRegistered(c, m.ID)
	if reg.obs != nil && reg.obs.legacyType != "" {
		e.adoptLegacyTriggers(c, m.ID, reg.obs.legacyType) // legacy.go
	}
}

func (e *Engine) unregisterRemoteFunction(c *conn, id string) {
	e.mu.Lock()
	removed := e.dropRegistrationLocked(c, fnKey(c.namespace(), id))
	e.mu.Unlock()
	if removed {
		e.bus.Publish(event.FunctionUnregistered{FunctionID: id, WorkerID: c.id, At: time.Now()})
		e.notifyFunctionsChanged()
		e.obsUnregistered(c, id)
	}
}

// dropRegistrationLocked removes c's registration of a function key
// (fnKey), if it still has one; other workers serving it keep serving it.
func (e *Engine) dropRegistrationLocked(c *conn, id string) bool {
	delete(c.fnIDs, id)
	f := e.functions[id]
	if f == nil {
		return false
	}
	regs := make([]*registration, 0, len(f.regs))
	for _, r := range f.regs {
		if r.conn != c && r.owner != c {
			regs = append(regs, r)
		}
	}
	if len(regs) == len(f.regs) {
		return false
	}
	if len(regs) == 0 {
		delete(e.functions, id)
	} else {
		f.regs = regs
	}
	return true
}

// SetDraining marks a worker as draining (it gets no new calls while other
// workers serve the same functions, and finishes its in-flight ones) or
// clears the mark.
func (e *Engine) SetDraining(workerID string, draining bool) error {
	e.mu.RLock()
	c := e.conns[workerID]
	e.mu.RUnlock()
	if c == nil {
		return fmt.Errorf("engine: worker %s: %w", workerID, ErrWorkerNotFound)
	}
	c.draining.Store(draining)
	c.mu.Lock()
	meta := c.meta
	c.mu.Unlock()
	e.bus.Publish(event.WorkerUpdated{WorkerID: c.id, Name: meta.Name, Runtime: meta.Runtime,
		Version: meta.Version, PID: meta.PID, Draining: draining, Namespace: c.namespace(), At: time.Now()})
	return nil
}

// InFlight is the number of calls routed to a worker and not yet answered.
func (e *Engine) InFlight(workerID string) (int64, error) {
	e.mu.RLock()
	c := e.conns[workerID]
	e.mu.RUnlock()
	if c == nil {
		return 0, fmt.Errorf("engine: worker %s: %w", workerID, ErrWorkerNotFound)
	}
	return c.inflight.Load(), nil
}

// ErrWorkerNotFound is returned for an unknown worker id.
var ErrWorkerNotFound = errors.New("engine: worker not found")

package engine

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/observe"
	"github.com/iii-workbench/iii/engine/protocol"
)

// This file is the observer registry (observe / unobserve, the observers'
// lifecycle, the host handshake) and its seam for engine-hosted sources:
// the source functions the engine itself serves (http::on-request,
// publish, state::on-changed, cron::on-tick, stream::on-*,
// engine::on-*-changed, ...) are made observable by implementing
// ObservableSource and registering it with RegisterSource. Observers of
// worker-hosted functions need no source: the engine sees their routed
// calls (observe_route.go) and hosts report their local ones.
//
// An observer is pending until its source function and its target are
// registered and every host of the source that speaks observe.v1 has
// acked it; then active. It is suspended while its target
// (TARGET_UNAVAILABLE) or every host of its source (OWNER_UNAVAILABLE) is
// gone after it was active, in error once refused (a host's rejection,
// args or filters its source does not accept), and disposed by unobserve,
// max_fires, expiry or its observing connection closing.

// ObservableSource is implemented by an engine-hosted source function.
//
// The registry calls Attach when an observer of the source is made (after
// its filters have been checked; the source checks its args), and Detach
// once for every observer Attach accepted, when it goes away (unobserve,
// max_fires, expiry, its observing worker leaving, an error). Between the
// two, the source reports each event that concerns the observer with
// Engine.Activate (or every observer at once with Engine.ActivateAll); the
// engine applies the observer's on, filters, capture, deliver and policy
// and invokes its target, and only while the observer is active (its
// target registered).
//
// Attach and Detach are called without engine locks held, one at a time
// for the whole engine, and must not block for long (no network I/O). An
// error from Attach refuses the observer: a *protocol.ErrorBody keeps its
// code (use protocol.CodeInvalidArgs for args the source cannot serve),
// any other error is OBSERVE_REJECTED.
type ObservableSource interface {
	Attach(ctx context.Context, o SourceObserver) error
	Detach(observerID string)
}

// SourceObserver is what an engine-hosted source sees of one observer.
type SourceObserver struct {
	ID         string
	FunctionID string // the source function
	Namespace  string // the namespace the observer resolved the source in
	// Args are the observer's args ({} when none): what the source serves
	// it (an HTTP route, a topic, a cron expression, a state scope).
	Args json.RawMessage
	// Filters in normal form ({} matches everything); Activate applies
	// them, the source may use them to skip work.
	Filters json.RawMessage
	Target  string // target function id
	// TargetNamespace is where the target resolves ("" or default: the
	// default namespace).
	TargetNamespace string
	Capture         []string
	On              string // success, error or complete
	Deliver         string // envelope, input or output
	// OwnerWorkerID is the connection that made the observer (empty for an
	// observer made in-process).
	OwnerWorkerID string
	// Metadata is the observer's metadata (nil when none): the sidecar its
	// target gets with every activation. A source that calls the target
	// itself (an HTTP route) passes it along.
	Metadata json.RawMessage
}

// LegacySource is implemented by an engine-hosted source whose observers
// stand for trigger bindings (the built-in sources, sources.go): the
// registry lists what Legacy returns as the observer's legacy field
// ({trigger_type, config}, the shape of the Python 0.25 SDK's observer
// view). ok is false for an observer the source does not hold. Legacy is
// called with the registry's lock held: it must take no engine lock.
type LegacySource interface {
	Legacy(observerID string) (lt *protocol.LegacyTrigger, ok bool)
}

// Observation is one event a source reports: what its "call" received and
// produced. Input is required; Output is the result when the event
// succeeded, Error its error otherwise. Nil raw fields are absent; the
// bytes null are a present null.
type Observation struct {
	InvocationID string // the event's id; a new one when empty
	Input        json.RawMessage
	Output       json.RawMessage
	Error        *protocol.ErrorBody
	Caller       json.RawMessage // {worker_id?, worker_name?, function_id?, invocation_id?}
	Metadata     json.RawMessage
	// Traceparent and Baggage continue the event's trace, if it has one.
	Traceparent string
	Baggage     string
	// ObserveDepth is the event's causal depth in observe hops (0 for an
	// event no activation caused); the activation runs at one more.
	ObserveDepth uint32
	StartedAt    time.Time     // zero: now
	Duration     time.Duration // how long the event took, if that means anything
}

// Errors of Activate.
var (
	// ErrObserverNotFound: no such observer, or it is not of this source.
	ErrObserverNotFound = errors.New("engine: observer not found")
	// ErrNotMatched: the observation did not pass the observer's on or
	// filters; nothing was invoked.
	ErrNotMatched = errors.New("engine: observation not matched by the observer")
	// ErrObserverNotActive: the observer is not active (its target is not
	// registered, it was refused or is being disposed).
	ErrObserverNotActive = errors.New("engine: observer not active")
	// ErrNotAdmitted: a call through an observer (Request.Binding naming
	// an observer's binding) was not made: the observer is gone, not
	// active, or at its max_in_flight. The error also wraps the refusal's
	// *protocol.ErrorBody (OBSERVER_NOT_FOUND, OBSERVER_NOT_ACTIVE,
	// OVERFLOW, LOOP_GUARD). A module that holds the event (a queue
	// message) may offer it again later.
	ErrNotAdmitted = errors.New("engine: not admitted by the observer")
	// ErrSourceExists: a source is already registered for the function id.
	ErrSourceExists = errors.New("engine: observable source already registered")
)

// Observe policy bounds.
const (
	// MaxObserveDepth is the deepest activation: an observed call made at
	// this depth (its caller an activation 8 hops down a chain) activates
	// nothing (LOOP_GUARD).
	MaxObserveDepth = 8
	// maxQueuedActivations bounds the activations an observer at its
	// max_in_flight holds back; more are dropped (OVERFLOW) and counted.
	maxQueuedActivations = 1024
	// maxObserversPerConn bounds the observers one connection may hold
	// (LIMIT_EXCEEDED).
	maxObserversPerConn = 10000
	// observeSweep is how often expiries are checked.
	observeSweep = 25 * time.Millisecond
)

// ownerAckTimeout is how long the hosts of a function have to ack an
// observer announced to them (observeradded → observerack) before it is
// refused with OWNER_TIMEOUT: the SDKs give their added hooks 30 s and
// expect the engine to enforce the same. A variable for the tests.
var ownerAckTimeout atomic.Int64

func init() { ownerAckTimeout.Store(int64(30 * time.Second)) }

// declareGrace is how long after connecting a worker that has not yet
// sent engine::workers::register is taken to be about to: the SDKs replay
// their registrations first and declare right after, so a new observer of
// a function such a worker hosts waits, pending, for the declaration (its
// host then acks it as an observe host, or is a 0.22 SDK and the engine
// activates it) rather than going active under the host's feet. A worker
// that never declares (a raw client) releases its observers after this
// long. A variable for the tests.
var declareGrace atomic.Int64

func init() { declareGrace.Store(int64(time.Second)) }

// regObserve is how a function registration takes observers (its
// registerfunction's observe descriptor or Rust 0.26 fields); nil on a
// registration that says nothing.
type regObserve struct {
	argsFormat json.RawMessage
	private    bool // only its host may call it
	closed     bool // observable: false / observe.allow: false
	owner      bool // Python delivery: owner (the host delivers)
	// legacyType: the function stands in for this old trigger type
	// (Python's observe.legacy_trigger_type): a registertrigger of the
	// type becomes an observer of it (legacy.go).
	legacyType string
}

func regObserveOf(m *protocol.RegisterFunction) *regObserve {
	ro := &regObserve{argsFormat: m.ArgsFormat, private: m.Private, closed: !m.IsObservable()}
	if d := m.Observe; d != nil {
		ro.owner = d.Delivery == protocol.DeliveryOwner
		ro.legacyType = strings.TrimSpace(d.LegacyTriggerType)
		if ro.argsFormat == nil {
			ro.argsFormat = d.ArgsFormat
		}
	}
	if ro.argsFormat == nil && !ro.private && !ro.closed && !ro.owner && ro.legacyType == "" {
		return nil
	}
	return ro
}

// observer is one observer. Guarded by observers.mu.
type observer struct {
	// legacy: the registertrigger it was made from (legacy.go), or nil.
	legacy    *protocol.LegacyTrigger
	id        string
	owner     *conn // the observing connection; nil when made in-process
	fn, ns    string
	key, tkey string // function keys (fnKey) of the source and the target
	args      json.RawMessage
	filter    *observe.Filter
	capture   []string
	on        string
	deliver   string
	target    string
	targetNS  string
	metadata  json.RawMessage
	maxFires  uint64    // 0: no limit
	expires   time.Time // zero: never
	maxFlight int       // 0: no limit
	created   time.Time

	state      string
	reason     *protocol.ErrorBody
	everActive bool
	refused    *protocol.ErrorBody // sticky error
	fires      uint64
	inflight   int
	queue      []activation
	dropped    uint64
	loopWarned bool

	acks      map[*conn]uint64 // hosts whose ack is awaited, by the revision announced
	ackDue    time.Time        // when the awaited acks time out (set by the sweep)
	announced map[*conn]bool   // hosts that were sent it
	src       ObservableSource // the engine-hosted source it is attached to
	gone      bool             // disposed
}

type hostKey struct {
	c  *conn
	fn string // function key (fnKey)
}

// observers is the registry. Lock order: Engine.mu, then observers.mu,
// then conn.mu and outq.mu; frames are queued (in memory) under it, events
// are published and sources called after it is released.
type observers struct {
	mu      sync.RWMutex
	sources map[string]ObservableSource
	byID    map[string]*observer
	byFn    map[string][]*observer // source function key (fnKey) -> observers, in creation order
	revs    map[hostKey]uint64     // host revision of a function's observer set
	acked   map[hostKey]bool       // functionregistered sent to the host
	perConn map[*conn]int
	// parked: the policy state (fires, expiry) of observers whose
	// observing connection closed, by observer id, kept parkTTL for the
	// same worker's reconnect: its SDK replays them under the same ids.
	parked map[string]*parkedObserver
	// successor: connections that reattached (with a valid token) as the
	// worker id they name, the worker whose parked observers they resume.
	successor map[*conn]string
	n         atomic.Int64 // observers held (fast path of the router)
	expiring  atomic.Int64 // observers with an expiry
	srcMu     sync.Mutex   // serialises Attach and Detach
}

func (o *observers) init() {
	o.sources = make(map[string]ObservableSource)
	o.byID = make(map[string]*observer)
	o.byFn = make(map[string][]*observer)
	o.revs = make(map[hostKey]uint64)
	o.acked = make(map[hostKey]bool)
	o.perConn = make(map[*conn]int)
	o.parked = make(map[string]*parkedObserver)
	o.successor = make(map[*conn]string)
}

// parkedObserver is what an observer leaves behind when its observing
// connection closes: the count and deadline its policy has used, for the
// replay of its worker's SDK after a reconnect.
type parkedObserver struct {
	worker, token string // the connection that held it
	fires         uint64
	expires       time.Time // zero: never
	until         time.Time // forgotten after
	// view is what engine::observers::get shows until the replay: the
	// observer suspended, its worker away. Nil for one that was in error.
	view *ObserverInfo
}

// parkTTL is how long a closed connection's observers are remembered for
// its worker's reconnect (the SDKs retry with backoff up to a few tens of
// seconds); maxParked bounds how many are.
const (
	parkTTL   = 5 * time.Minute
	maxParked = 100000
)

// parkLocked remembers o's policy state; its connection closed.
func (r *observers) parkLocked(o *observer, now time.Time) {
	if o.owner == nil || o.legacy != nil || len(r.parked) >= maxParked {
		return
	}
	p := &parkedObserver{worker: o.owner.id, token: o.owner.token, fires: o.fires,
		expires: o.expires, until: now.Add(parkTTL)}
	if o.state != protocol.ObserverError && o.state != protocol.ObserverDisposed {
		v := o.info(r.sources[o.fn])
		v.State, v.InFlight, v.Queued = protocol.ObserverSuspended, 0, 0
		v.Reason = &protocol.ErrorBody{Code: protocol.CodeObserverDisconnected,
			Message: fmt.Sprintf("observer %s: its worker %s is disconnected; its SDK replays it on reconnect", o.id, o.owner.id)}
		p.view = &v
	}
	r.parked[o.id] = p
}

// parkedViewLocked is the suspended view of the parked observer id, if
// its worker may still come back for it.
func (r *observers) parkedViewLocked(id string, now time.Time) (ObserverInfo, bool) {
	p := r.parked[id]
	if p == nil || p.view == nil || now.After(p.until) {
		return ObserverInfo{}, false
	}
	return *p.view, true
}

// resumeLocked gives a new observer the policy state its id left parked,
// when c is the reattached successor of the connection that held it. Any
// other use of the id forgets it.
func (r *observers) resumeLocked(c *conn, o *observer) {
	p := r.parked[o.id]
	if p == nil {
		return
	}
	delete(r.parked, o.id)
	if c == nil || r.successor[c] != p.worker {
		return
	}
	o.fires = p.fires
	if !p.expires.IsZero() && !o.expires.IsZero() {
		o.expires = p.expires // the replay's expires_in_ms counts from the first observe
	}
}

// obsReattached records that c reattached as worker prev (token checked
// against the live connection, or against what it parked).
func (e *Engine) obsReattached(c *conn, prev, token string, verified bool) {
	e.obs.mu.Lock()
	defer e.obs.mu.Unlock()
	if !verified {
		for _, p := range e.obs.parked {
			if p.worker == prev && subtle.ConstantTimeCompare([]byte(p.token), []byte(token)) == 1 {
				verified = true
				break
			}
		}
	}
	if verified {
		e.obs.successor[c] = prev
	}
}

// observed reports whether fn has observers (the router wraps a call's
// completion only then).
func (r *observers) observed(fn string) bool {
	if r.n.Load() == 0 {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byFn[fn]) > 0
}

// obsOps is what a registry change leaves to do once the lock is released.
type obsOps struct {
	events  []event.Event
	changes []event.ObserverChanged // state changes, for engine::on-observers-changed
	detach  []detachOp
	attach  []*observer
	drained []activation // queued activations that may go now
}

type detachOp struct {
	src ObservableSource
	id  string
}

// observersDo runs fn with the function table read-locked and the
// observer registry locked, then carries out the operations fn queued.
func (e *Engine) observersDo(fn func(ops *obsOps)) {
	var ops obsOps
	e.mu.RLock()
	e.obs.mu.Lock()
	fn(&ops)
	e.obs.mu.Unlock()
	e.mu.RUnlock()
	e.obsFinish(&ops)
}

func (e *Engine) obsFinish(ops *obsOps) {
	for _, o := range ops.attach {
		e.attachSource(o)
	}
	if len(ops.detach) > 0 {
		e.obs.srcMu.Lock()
		for _, d := range ops.detach {
			d.src.Detach(d.id)
		}
		e.obs.srcMu.Unlock()
	}
	for _, ev := range ops.events {
		e.bus.Publish(ev)
	}
	for _, a := range ops.drained {
		e.sendActivation(a)
	}
	for _, ch := range ops.changes {
		e.reportObserverChange(ch)
	}
}

// observerChange is the event of engine::on-observers-changed.
type observerChange struct {
	ObserverID      string              `json:"observer_id"`
	FunctionID      string              `json:"function_id"`
	Namespace       string              `json:"namespace"`
	Target          string              `json:"target"`
	TargetNamespace string              `json:"target_namespace"`
	State           string              `json:"state"`
	Fires           uint64              `json:"fires"`
	Reason          *protocol.ErrorBody `json:"reason,omitempty"`
}

// reportObserverChange activates the observers of
// engine::on-observers-changed with one state change. An observer's own
// changes reach it too once it is active (its creation does not: it is
// pending then); nothing an activation does changes a state, so this
// does not loop.
func (e *Engine) reportObserverChange(ch event.ObserverChanged) {
	e.obs.mu.RLock()
	n := len(e.obs.byFn[SourceObserversChanged])
	e.obs.mu.RUnlock()
	if n == 0 {
		return
	}
	in := observerChange{ObserverID: ch.ObserverID, FunctionID: ch.SourceFunction, Namespace: nsOrDefault(ch.Namespace),
		Target: ch.TargetFunction, TargetNamespace: nsOrDefault(ch.TargetNamespace), State: ch.State, Fires: ch.Fires}
	if ch.ReasonCode != "" {
		in.Reason = &protocol.ErrorBody{Code: ch.ReasonCode, Message: ch.ReasonMessage}
	}
	data, err := json.Marshal(in)
	if err != nil {
		return
	}
	e.ActivateAll(SourceObserversChanged, Observation{Input: data, Output: data})
}

// RegisterSource makes the engine-hosted function functionID observable
// through src. Register it before workers can observe it (module Start);
// observers made before it wait for it, pending.
func (e *Engine) RegisterSource(functionID string, src ObservableSource) error {
	if functionID == "" || src == nil {
		return fmt.Errorf("engine: register source %q: id and source are required", functionID)
	}
	e.obs.mu.Lock()
	if _, dup := e.obs.sources[functionID]; dup {
		e.obs.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrSourceExists, functionID)
	}
	e.obs.sources[functionID] = src
	e.obs.mu.Unlock()
	e.obsFunctionChanged(functionID)
	return nil
}

// sendObs queues an observe-family frame for c, which must speak observe.
func sendObs(c *conn, m protocol.Message) {
	if c == nil {
		return
	}
	c.send(mustEncode(m))
}

// notify sends the observing worker a frame about o. The worker of an
// observer the legacy shim made from a registertrigger (legacy.go) asked
// for a trigger: it hears only of a refusal (its host rejected it), as a
// triggerregistrationresult.
func (o *observer) notify(m protocol.Message) {
	if o.legacy == nil {
		sendObs(o.owner, m)
		return
	}
	if sc, ok := m.(protocol.ObserverStateChanged); ok && sc.State == protocol.ObserverError && sc.Reason != nil {
		sendObs(o.owner, protocol.TriggerRegistrationResult{ID: o.id, TriggerType: o.legacy.TriggerType, FunctionID: o.target,
			Error: sc.Reason})
	}
}

// speaksObserve reports whether c declared observe.v1 (or v2).
func speaksObserve(c *conn) bool {
	return c != nil && (c.hasFeature(protocol.FeatureObserveV1) || c.hasFeature(protocol.FeatureObserveV2))
}

func (e *Engine) handleObserve(c *conn, m protocol.Observe) {
	var ops obsOps
	e.mu.RLock()
	e.obs.mu.Lock()
	res := e.observeLocked(c, m, &ops, nil)
	// An engine-hosted source checks the observer's args as it attaches
	// it: the answer waits for its verdict, so a refusal is the
	// observeresult's error (the SDKs settle ready() on the first answer).
	var attaching *observer
	if res.State != protocol.ObserverError {
		if i := slices.IndexFunc(ops.attach, func(o *observer) bool { return o.id == m.ID }); i >= 0 {
			attaching = ops.attach[i]
			ops.attach = slices.Delete(ops.attach, i, i+1)
		}
	}
	if attaching == nil {
		sendObs(c, res)
	}
	e.obs.mu.Unlock()
	e.mu.RUnlock()
	if attaching != nil {
		e.attachSourceNotify(attaching, false)
		e.obs.mu.Lock()
		if attaching.refused != nil {
			res.State, res.Error = attaching.state, attaching.reason
		}
		e.obs.mu.Unlock()
		sendObs(c, res)
	}
	e.obsFinish(&ops)
}

func observeRefused(id, code, format string, args ...any) protocol.ObserveResult {
	return protocol.ObserveResult{ID: id, State: protocol.ObserverError,
		Error: &protocol.ErrorBody{Code: code, Message: fmt.Sprintf(format, args...)}}
}

// observeLocked makes (or answers the replay of) an observer and returns
// the observeresult; legacy is the registertrigger it is made from, if
// any (legacy.go). Callers hold Engine.mu (read) and observers.mu.
func (e *Engine) observeLocked(c *conn, m protocol.Observe, ops *obsOps, legacy *protocol.LegacyTrigger) protocol.ObserveResult {
	r := &e.obs
	if m.ID == "" {
		return observeRefused(m.ID, protocol.CodeInvalidArgs, "observe: id is empty")
	}
	if old := r.byID[m.ID]; old != nil {
		if old.owner != c {
			return observeRefused(m.ID, protocol.CodeObserverIDConflict, "observer id already in use: %s", m.ID)
		}
		// A replay on the same connection: the observer's current state.
		if old.state == protocol.ObserverError {
			res := protocol.ObserveResult{ID: m.ID, State: protocol.ObserverError, Error: old.reason}
			e.disposeLocked(old, nil, ops) // answered in error, and forgotten
			return res
		}
		return protocol.ObserveResult{ID: m.ID, State: old.state, Error: old.reason}
	}
	if c != nil && r.perConn[c] >= maxObserversPerConn {
		return observeRefused(m.ID, protocol.CodeLimitExceeded, "a connection may hold at most %d observers", maxObserversPerConn)
	}
	src := m.Source
	ns, tns := orDefault(src.Namespace), orDefault(m.Target.Namespace)
	if src.FunctionID == "" || m.Target.FunctionID == "" {
		return observeRefused(m.ID, protocol.CodeInvalidArgs, "observe: source.function_id and target.function_id are required")
	}
	if src.FunctionID == m.Target.FunctionID && ns == tns {
		return observeRefused(m.ID, protocol.CodeSelfTarget, "observer %s: %s cannot be its own target", m.ID, src.FunctionID)
	}
	o := &observer{
		id: m.ID, owner: c, fn: src.FunctionID, ns: ns, target: m.Target.FunctionID, targetNS: tns,
		args: src.Args, capture: src.Capture, on: src.On, deliver: src.Deliver, metadata: m.Metadata,
		created: time.Now(), state: protocol.ObserverPending,
		acks: map[*conn]uint64{}, announced: map[*conn]bool{}, legacy: legacy,
	}
	o.key, o.tkey = fnKey(ns, o.fn), fnKey(tns, o.target)
	if len(o.args) == 0 || string(o.args) == "null" {
		o.args = json.RawMessage("{}")
	} else if o.args[0] != '{' {
		return observeRefused(m.ID, protocol.CodeInvalidArgs, "observer %s: source.args must be an object", m.ID)
	}
	if o.capture == nil {
		o.capture = slices.Clone(protocol.DefaultCapture)
	}
	for _, cp := range o.capture {
		switch cp {
		case protocol.CaptureInput, protocol.CaptureOutput, protocol.CaptureError, protocol.CaptureCaller, protocol.CaptureMetadata:
		default:
			return observeRefused(m.ID, protocol.CodeInvalidArgs, "observer %s: unknown capture %q (input, output, error, caller, metadata)", m.ID, cp)
		}
	}
	switch o.on {
	case "":
		o.on = protocol.OnSuccess
	case protocol.OnSuccess, protocol.OnError, protocol.OnComplete:
	default:
		return observeRefused(m.ID, protocol.CodeInvalidArgs, "observer %s: unknown on %q (success, error, complete)", m.ID, o.on)
	}
	switch o.deliver {
	case "":
		o.deliver = protocol.DeliverEnvelope
	case protocol.DeliverEnvelope, protocol.DeliverInput, protocol.DeliverOutput:
	default:
		return observeRefused(m.ID, protocol.CodeInvalidArgs, "observer %s: unknown deliver %q (envelope, input, output)", m.ID, o.deliver)
	}
	f, err := observe.Parse(src.Filters)
	if err != nil {
		var fe *observe.Error
		if errors.As(err, &fe) {
			return observeRefused(m.ID, fe.Code, "observer %s: %s", m.ID, fe.Message)
		}
		return observeRefused(m.ID, protocol.CodeInvalidFilter, "observer %s: %v", m.ID, err)
	}
	o.filter = f
	if m.MaxFires != nil {
		if *m.MaxFires == 0 {
			return observeRefused(m.ID, protocol.CodeInvalidArgs, "observer %s: max_fires must be at least 1", m.ID)
		}
		o.maxFires = *m.MaxFires
	}
	if m.ExpiresInMS != nil {
		o.expires = o.created.Add(time.Duration(*m.ExpiresInMS) * time.Millisecond)
	}
	if m.MaxInFlight != nil {
		if *m.MaxInFlight == 0 {
			return observeRefused(m.ID, protocol.CodeInvalidArgs, "observer %s: max_in_flight must be at least 1", m.ID)
		}
		o.maxFlight = int(*m.MaxInFlight)
	}
	var warnings []string
	if eb, w := e.checkSourceLocked(o); eb != nil {
		return protocol.ObserveResult{ID: m.ID, State: protocol.ObserverError, Error: eb}
	} else {
		warnings = w
	}
	if eb := e.checkTargetLocked(o); eb != nil {
		return protocol.ObserveResult{ID: m.ID, State: protocol.ObserverError, Error: eb}
	}
	if !e.hasFunctionLocked(o.key, o.fn) && r.sources[o.fn] == nil {
		warnings = append(warnings, fmt.Sprintf("%s is not registered; the observer waits for it", o.fn))
	}
	if !e.hasFunctionLocked(o.tkey, o.target) {
		warnings = append(warnings, fmt.Sprintf("target %s is not registered; the observer waits for it", o.target))
	}
	if r.sources[o.fn] != nil {
		o.key = o.fn // engine-hosted sources serve every namespace
	}
	r.resumeLocked(c, o)
	r.byID[o.id] = o
	r.byFn[o.key] = append(r.byFn[o.key], o)
	r.perConn[c]++
	r.n.Add(1)
	if !o.expires.IsZero() {
		r.expiring.Add(1)
	}
	if s := r.sources[o.fn]; s != nil {
		o.src = s
		ops.attach = append(ops.attach, o)
	}
	ops.events = append(ops.events, o.changed())
	ops.changes = append(ops.changes, o.changed())
	// Announced to the hosts and made active if it can be, silently: the
	// observeresult below carries the state.
	e.reconcileLocked(o, ops, false)
	return protocol.ObserveResult{ID: o.id, State: o.state, Error: o.reason, Warnings: warnings}
}

func orDefault(ns string) string {
	if ns == "" {
		return protocol.DefaultNamespace
	}
	return ns
}

// attachSource attaches a new observer to its engine-hosted source; a
// refusal puts it in error.
func (e *Engine) attachSource(o *observer) { e.attachSourceNotify(o, true) }

// attachSourceNotify is attachSource; notify says whether a refusal is
// sent to the observing worker as a state change.
func (e *Engine) attachSourceNotify(o *observer, notify bool) {
	e.obs.mu.Lock()
	src, so := o.src, o.sourceView()
	gone := o.gone
	e.obs.mu.Unlock()
	if gone || src == nil {
		return
	}
	e.obs.srcMu.Lock()
	err := src.Attach(e.ctx, so)
	e.obs.srcMu.Unlock()
	if err == nil {
		return
	}
	eb := &protocol.ErrorBody{Code: protocol.CodeObserveRejected, Message: err.Error()}
	errors.As(err, &eb)
	e.observersDo(func(ops *obsOps) {
		o.src = nil // not attached: no Detach
		if !o.gone {
			o.refused = eb
			e.reconcileLocked(o, ops, notify)
		}
	})
}

func (o *observer) sourceView() SourceObserver {
	so := SourceObserver{ID: o.id, FunctionID: o.fn, Namespace: o.ns, Args: o.args, Filters: o.filter.Normalized(),
		Target: o.target, TargetNamespace: o.targetNS, Capture: slices.Clone(o.capture), On: o.on, Deliver: o.deliver,
		Metadata: o.metadata}
	if o.owner != nil {
		so.OwnerWorkerID = o.owner.id
	}
	if len(o.metadata) > 0 {
		so.Metadata = o.metadata
	}
	return so
}

// functionLocked is the function a key names, as the router resolves it
// (an engine::* function from any namespace). Callers hold Engine.mu.
func (e *Engine) functionLocked(key, id string) *function {
	f := e.functions[key]
	if f == nil && key != id && strings.HasPrefix(id, "engine::") {
		f = e.functions[id]
	}
	if f == nil || len(f.regs) == 0 {
		return nil
	}
	return f
}

// hasFunctionLocked reports whether key has a registration. Callers hold
// Engine.mu.
func (e *Engine) hasFunctionLocked(key, id string) bool {
	return e.functionLocked(key, id) != nil
}

// checkSourceLocked checks the observer against its source function's
// registrations: observable, args against args_format, filter paths
// against the formats. A missing function is not an error (the observer
// waits); an engine-hosted source checks args itself.
func (e *Engine) checkSourceLocked(o *observer) (*protocol.ErrorBody, []string) {
	if e.obs.sources[o.fn] != nil {
		return nil, nil
	}
	f := e.functionLocked(o.key, o.fn)
	if f == nil {
		return nil, nil
	}
	var format json.RawMessage
	for _, r := range f.regs {
		if r.obs != nil && r.obs.closed {
			return &protocol.ErrorBody{Code: protocol.CodeNotObservable, Message: fmt.Sprintf("%s is not observable", o.fn)}, nil
		}
		if r.obs != nil && r.obs.argsFormat != nil {
			format = r.obs.argsFormat
		}
	}
	hasArgs := string(o.args) != "{}"
	switch {
	case format != nil:
		if err := observe.ValidateArgs(format, o.args); err != nil {
			return &protocol.ErrorBody{Code: protocol.CodeInvalidArgs, Message: fmt.Sprintf("observer %s of %s: %s", o.id, o.fn, errMessage(err))}, nil
		}
	case hasArgs && o.legacy == nil: // a legacy trigger's config is its args; the host judges it
		return &protocol.ErrorBody{Code: protocol.CodeInvalidArgs, Message: fmt.Sprintf("observer %s: %s takes no args (it declares no args_format)", o.id, o.fn)}, nil
	}
	last := f.regs[len(f.regs)-1]
	w, err := o.filter.CheckPaths(last.requestFormat, last.responseFormat)
	if err != nil {
		return &protocol.ErrorBody{Code: protocol.CodeInvalidFilterPath, Message: fmt.Sprintf("observer %s: %s", o.id, errMessage(err))}, nil
	}
	return nil, w
}

// checkTargetLocked refuses a target private to another worker.
func (e *Engine) checkTargetLocked(o *observer) *protocol.ErrorBody {
	f := e.functionLocked(o.tkey, o.target)
	if f == nil {
		return nil
	}
	for _, r := range f.regs {
		if r.obs != nil && r.obs.private && r.conn != nil && r.conn != o.owner {
			return &protocol.ErrorBody{Code: protocol.CodeForbidden, Message: fmt.Sprintf("target %s is private to worker %s", o.target, r.conn.id)}
		}
	}
	return nil
}

func errMessage(err error) string {
	var fe *observe.Error
	if errors.As(err, &fe) {
		return fe.Message
	}
	return err.Error()
}

// hostsLocked are the connections serving fn that speak observe and were
// sent functionregistered for it.
func (e *Engine) hostsLocked(fn string) []*conn {
	f := e.functions[fn] // a key; the engine's own functions have no hosts
	if f == nil {
		return nil
	}
	var hosts []*conn
	for _, r := range f.regs {
		if r.conn != nil && e.obs.acked[hostKey{r.conn, fn}] && !slices.Contains(hosts, r.conn) {
			hosts = append(hosts, r.conn)
		}
	}
	return hosts
}

// reconcileLocked brings an observer in line with the registry: its
// source checked (once it appears), announced to its source's hosts, and
// its state recomputed; with notify, a state change is sent to its
// observing worker. Callers hold Engine.mu (read) and observers.mu.
func (e *Engine) reconcileLocked(o *observer, ops *obsOps, notify bool) {
	if o.gone {
		return
	}
	r := &e.obs
	if o.refused == nil && !o.everActive {
		if eb, _ := e.checkSourceLocked(o); eb != nil {
			o.refused = eb
		}
	}
	if o.refused == nil {
		// Announce it to every host that has not heard of it.
		for _, h := range e.hostsLocked(o.key) {
			if o.announced[h] {
				continue
			}
			k := hostKey{h, o.key}
			r.revs[k]++
			o.announced[h] = true
			o.acks[h] = r.revs[k]
			sendObs(h, protocol.ObserverAdded{FunctionID: o.fn, Namespace: o.ns, Revision: r.revs[k], Observer: o.view()})
		}
		// Hosts that went away owe no ack.
		for h := range o.acks {
			if !slices.Contains(e.hostsLocked(o.key), h) {
				delete(o.acks, h)
				delete(o.announced, h)
			}
		}
	}
	state, reason := e.desiredLocked(o)
	e.setStateLocked(o, state, reason, ops, notify)
}

func (e *Engine) desiredLocked(o *observer) (string, *protocol.ErrorBody) {
	if o.refused != nil {
		return protocol.ObserverError, o.refused
	}
	if o.src == nil && !e.hasFunctionLocked(o.key, o.fn) && e.obs.sources[o.fn] == nil {
		if o.everActive {
			return protocol.ObserverSuspended, &protocol.ErrorBody{Code: protocol.CodeOwnerUnavailable,
				Message: fmt.Sprintf("%s is not registered any more; the observer resumes when it is", o.fn)}
		}
		return protocol.ObserverPending, nil
	}
	if !e.hasFunctionLocked(o.tkey, o.target) {
		if o.everActive {
			return protocol.ObserverSuspended, &protocol.ErrorBody{Code: protocol.CodeTargetUnavailable,
				Message: fmt.Sprintf("target %s is not registered any more; the observer resumes when it is", o.target)}
		}
		return protocol.ObserverPending, nil
	}
	resuming := !o.everActive || o.state == protocol.ObserverSuspended
	if len(o.acks) > 0 {
		if !resuming {
			return o.state, o.reason
		}
		return protocol.ObserverPending, nil
	}
	if resuming && e.awaitsDeclarationLocked(o.key) {
		return protocol.ObserverPending, nil
	}
	return protocol.ObserverActive, nil
}

// awaitsDeclarationLocked reports whether a worker serving the function
// key has not declared itself yet and connected less than declareGrace
// ago; it arms that worker's timer to re-evaluate the function's
// observers when the grace is over. Callers hold Engine.mu (read) and
// observers.mu.
func (e *Engine) awaitsDeclarationLocked(key string) bool {
	f := e.functions[key]
	if f == nil {
		return false
	}
	grace := time.Duration(declareGrace.Load())
	waits := false
	for _, r := range f.regs {
		c := r.conn
		if c == nil || c.decl.Load() != nil {
			continue
		}
		left := grace - time.Since(c.connectedAt)
		if left <= 0 {
			continue
		}
		waits = true
		if c.declWait == nil {
			c.declWait = time.AfterFunc(left, func() { e.obsHostSettled(c) })
		}
	}
	return waits
}

// obsHostSettled re-evaluates the observers of the functions c serves,
// once c has declared itself or its declareGrace is over.
func (e *Engine) obsHostSettled(c *conn) {
	if e.obs.n.Load() == 0 {
		return
	}
	e.observersDo(func(ops *obsOps) {
		for _, o := range e.obs.byID {
			if _, serves := c.fnIDs[o.key]; serves {
				e.reconcileLocked(o, ops, true)
			}
		}
	})
}

// setStateLocked moves an observer to state; leaving for error withdraws
// it from its hosts and its source.
func (e *Engine) setStateLocked(o *observer, state string, reason *protocol.ErrorBody, ops *obsOps, notify bool) {
	if o.state == state && sameReason(o.reason, reason) {
		return
	}
	o.state, o.reason = state, reason
	if state == protocol.ObserverActive {
		o.everActive = true
		ops.drained = append(ops.drained, e.drainLocked(o)...)
	}
	if state == protocol.ObserverError {
		e.withdrawLocked(o, ops)
		o.queue = nil
	}
	if notify && o.owner != nil {
		o.notify(protocol.ObserverStateChanged{ID: o.id, State: state, Reason: reason, Fires: o.fires})
	}
	ops.events = append(ops.events, o.changed())
	ops.changes = append(ops.changes, o.changed())
}

func sameReason(a, b *protocol.ErrorBody) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Code == b.Code && a.Message == b.Message
}

// withdrawLocked tells the hosts that heard of o that it is gone, and
// detaches it from its engine-hosted source.
func (e *Engine) withdrawLocked(o *observer, ops *obsOps) {
	for h := range o.announced {
		k := hostKey{h, o.key}
		if !e.obs.acked[k] {
			continue
		}
		e.obs.revs[k]++
		sendObs(h, protocol.ObserverRemoved{FunctionID: o.fn, Namespace: o.ns, Revision: e.obs.revs[k], ID: o.id})
	}
	clear(o.announced)
	clear(o.acks)
	if o.src != nil {
		ops.detach = append(ops.detach, detachOp{o.src, o.id})
		o.src = nil
	}
}

// disposeLocked removes an observer for good. With a reason, its
// observing worker is told (disposed, reason).
func (e *Engine) disposeLocked(o *observer, reason *protocol.ErrorBody, ops *obsOps) {
	if o.gone {
		return
	}
	r := &e.obs
	e.withdrawLocked(o, ops)
	o.gone = true
	o.queue = nil
	delete(r.byID, o.id)
	r.byFn[o.key] = slices.DeleteFunc(r.byFn[o.key], func(x *observer) bool { return x == o })
	if len(r.byFn[o.key]) == 0 {
		delete(r.byFn, o.key)
	}
	if r.perConn[o.owner]--; r.perConn[o.owner] <= 0 {
		delete(r.perConn, o.owner)
	}
	r.n.Add(-1)
	if !o.expires.IsZero() {
		r.expiring.Add(-1)
	}
	o.state, o.reason = protocol.ObserverDisposed, reason
	if reason != nil && o.owner != nil {
		o.notify(protocol.ObserverStateChanged{ID: o.id, State: protocol.ObserverDisposed, Reason: reason, Fires: o.fires})
	}
	ops.events = append(ops.events, o.changed())
	ops.changes = append(ops.changes, o.changed())
}

func (o *observer) changed() event.ObserverChanged {
	ev := event.ObserverChanged{ObserverID: o.id, SourceFunction: o.fn, TargetFunction: o.target, State: o.state,
		Namespace: o.ns, TargetNamespace: o.targetNS, Fires: o.fires, InFlight: o.inflight, At: time.Now()}
	if o.owner != nil {
		ev.OwnerWorkerID = o.owner.id
	}
	if o.reason != nil {
		ev.ReasonCode, ev.ReasonMessage = o.reason.Code, o.reason.Message
	}
	return ev
}

// view is the observer as its source's hosts see it.
func (o *observer) view() protocol.ObserverView {
	// Only worker-hosted functions have hosts to send it to; the legacy
	// field of an engine-hosted source's observer (LegacySource) is shown
	// by engine::observers::get instead (Legacy is not called under the
	// registry's lock: sources take the engine's lock in it).
	return protocol.ObserverView{ID: o.id, Args: o.args, Filters: o.filter.Normalized(), Target: o.target,
		Capture: slices.Clone(o.capture), On: o.on, Legacy: o.legacy}
}

func (e *Engine) handleUnobserve(c *conn, m protocol.Unobserve) {
	e.observersDo(func(ops *obsOps) {
		if o := e.obs.byID[m.ID]; o != nil && o.owner == c {
			e.disposeLocked(o, &protocol.ErrorBody{Code: protocol.CodeUnobserved, Message: "disposed by the observing worker"}, ops)
		} else if p := e.obs.parked[m.ID]; o == nil && p != nil && e.obs.successor[c] == p.worker {
			delete(e.obs.parked, m.ID) // disposed by its worker before the replay
		}
	})
}

func (e *Engine) handleObserverAck(c *conn, m protocol.ObserverAck) {
	e.observersDo(func(ops *obsOps) {
		if o := e.obs.byID[m.ID]; o != nil && o.fn == m.FunctionID && o.announced[c] {
			if rev, waiting := o.acks[c]; waiting && m.Revision >= rev {
				delete(o.acks, c)
			}
			if m.Error != nil && o.announced[c] {
				// A rejection, possibly late: the observer is in error; the
				// engine keeps it until its observing worker unobserves it.
				o.refused = &protocol.ErrorBody{Code: m.Error.Code, Message: m.Error.Message}
			}
			e.reconcileLocked(o, ops, true)
		}
	})
}

// obsFunctionChanged re-evaluates the observers whose source or target is
// the function key id (or, for the engine's own functions, the id from
// any namespace), after a registration of it came or went.
func (e *Engine) obsFunctionChanged(id string) {
	if e.obs.n.Load() == 0 {
		return
	}
	e.observersDo(func(ops *obsOps) {
		for _, o := range e.obs.byID {
			if o.key == id || o.tkey == id || (!strings.ContainsRune(id, 0) && (o.fn == id || o.target == id)) {
				e.reconcileLocked(o, ops, true)
			}
		}
	})
}

// obsRegistered acknowledges a worker's registerfunction with
// functionregistered (when it speaks observe) and re-evaluates the
// observers of the function. id is its function id; the key is in c's
// namespace.
func (e *Engine) obsRegistered(c *conn, fnID string) {
	id := fnKey(c.namespace(), fnID)
	if speaksObserve(c) {
		e.ackRegistration(c, id)
	}
	e.obsFunctionChanged(id)
}

// ackRegistration sends c functionregistered for the function key id,
// with the observers it is to hold (each then awaits its ack).
func (e *Engine) ackRegistration(c *conn, id string) {
	var ops obsOps
	e.mu.RLock()
	if _, serves := c.fnIDs[id]; !serves {
		e.mu.RUnlock()
		return
	}
	e.obs.mu.Lock()
	k := hostKey{c, id}
	e.obs.revs[k]++
	e.obs.acked[k] = true
	rev := e.obs.revs[k]
	views := []protocol.ObserverView{}
	for _, o := range e.obs.byFn[id] {
		if o.refused != nil || o.gone {
			continue
		}
		o.announced[c] = true
		o.acks[c] = rev
		views = append(views, o.view())
	}
	// Not behind a listener's RBAC or middleware: those see every call,
	// and a local call would pass them by.
	local := e.advertises(protocol.FeatureLocalDispatchV1) && c.hasFeature(protocol.FeatureLocalDispatchV1) && c.session == nil
	ns, fnID := splitKey(id)
	sendObs(c, protocol.FunctionRegistered{ID: fnID, Namespace: ns, Revision: rev, LocalDispatch: local, Observers: views})
	for _, o := range e.obs.byFn[id] {
		e.reconcileLocked(o, &ops, true)
	}
	e.obs.mu.Unlock()
	e.mu.RUnlock()
	e.obsFinish(&ops)
}

// advertises reports whether the engine lists token in workerregistered.
func (e *Engine) advertises(token string) bool {
	e.featMu.RLock()
	defer e.featMu.RUnlock()
	return slices.Contains(e.features, token)
}

// obsDeclared runs when a worker declares its features: the functions it
// registered before (the SDKs replay registrations first) are acknowledged
// now if it speaks observe.
func (e *Engine) obsDeclared(c *conn, _ bool) {
	e.obs.mu.Lock()
	if c.declWait != nil {
		c.declWait.Stop()
	}
	e.obs.mu.Unlock()
	if !speaksObserve(c) {
		e.obsHostSettled(c) // a 0.22 host: its waiting observers go active
		return
	}
	e.mu.RLock()
	var ids []string
	for id := range c.fnIDs { // function keys, in any namespace
		ids = append(ids, id)
	}
	e.mu.RUnlock()
	slices.Sort(ids)
	for _, id := range ids {
		e.obs.mu.Lock()
		done := e.obs.acked[hostKey{c, id}]
		e.obs.mu.Unlock()
		if !done {
			e.ackRegistration(c, id)
		}
	}
}

// obsConnClosed disposes the observers a closed connection made and
// re-evaluates those whose source it hosted (their functions' other
// hosts, if any, keep them).
func (e *Engine) obsConnClosed(c *conn) {
	e.observersDo(func(ops *obsOps) {
		if c.declWait != nil {
			c.declWait.Stop()
		}
		for k := range e.obs.acked {
			if k.c == c {
				delete(e.obs.acked, k)
				delete(e.obs.revs, k)
			}
		}
		delete(e.obs.successor, c)
		now := time.Now()
		for _, o := range e.obs.byID {
			if o.owner == c {
				e.obs.parkLocked(o, now)     // for its worker's reconnect
				e.disposeLocked(o, nil, ops) // nobody to tell
				continue
			}
			if o.announced[c] || o.acks[c] != 0 {
				delete(o.announced, c)
				delete(o.acks, c)
			}
			e.reconcileLocked(o, ops, true)
		}
	})
}

// obsUnregistered forgets that c was told about its function fnID (it
// unregistered it).
func (e *Engine) obsUnregistered(c *conn, fnID string) {
	id := fnKey(c.namespace(), fnID)
	e.obs.mu.Lock()
	k := hostKey{c, id}
	delete(e.obs.acked, k)
	delete(e.obs.revs, k)
	for _, o := range e.obs.byFn[id] {
		delete(o.announced, c)
		delete(o.acks, c)
	}
	e.obs.mu.Unlock()
	e.obsFunctionChanged(id)
}

// sweepAcks refuses, with OWNER_TIMEOUT, the observers whose hosts have
// not acked them within timeout of the sweep that first saw them waiting
// (so at most one sweep interval late), as a host's rejection would.
func (e *Engine) sweepAcks(now time.Time, timeout time.Duration) {
	if e.obs.n.Load() == 0 {
		return
	}
	e.observersDo(func(ops *obsOps) {
		for _, o := range e.obs.byID {
			switch {
			case len(o.acks) == 0 || o.gone || o.refused != nil:
				o.ackDue = time.Time{}
			case o.ackDue.IsZero():
				o.ackDue = now.Add(timeout)
			case now.After(o.ackDue):
				var hosts []string
				for h := range o.acks {
					hosts = append(hosts, h.id)
				}
				slices.Sort(hosts)
				o.refused = &protocol.ErrorBody{Code: protocol.CodeOwnerTimeout, Message: fmt.Sprintf(
					"observer %s: the host(s) of %s (%s) did not ack it within %v", o.id, o.fn, strings.Join(hosts, ", "), timeout)}
				e.reconcileLocked(o, ops, true)
			}
		}
	})
}

// sweepParked forgets parked observer state past its time.
func (e *Engine) sweepParked(now time.Time) {
	e.obs.mu.Lock()
	defer e.obs.mu.Unlock()
	for id, p := range e.obs.parked {
		if now.After(p.until) {
			delete(e.obs.parked, id)
		}
	}
}

// observeLoop disposes expired observers. It exits when the engine shuts
// down.
func (e *Engine) observeLoop() {
	t := time.NewTicker(observeSweep)
	defer t.Stop()
	timeout := time.Duration(ownerAckTimeout.Load())
	acks := time.NewTicker(min(max(timeout/4, 10*time.Millisecond), time.Second))
	defer acks.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-acks.C:
			e.sweepAcks(now, timeout)
			e.sweepParked(now)
		case now := <-t.C:
			if e.obs.expiring.Load() == 0 {
				continue
			}
			e.observersDo(func(ops *obsOps) {
				for _, o := range e.obs.byID {
					if !o.expires.IsZero() && !now.Before(o.expires) {
						e.disposeLocked(o, &protocol.ErrorBody{Code: protocol.CodeExpired,
							Message: fmt.Sprintf("observer %s expired", o.id)}, ops)
					}
				}
			})
		}
	}
}

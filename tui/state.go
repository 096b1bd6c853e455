package tui

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine/event"
)

// Limits of what the TUI keeps. Everything it holds is bounded.
const (
	invocationRing = 1000   // finished invocations in the tail
	logRing        = 5000   // log lines
	pendingLimit   = 20_000 // started, not yet finished calls whose payload is kept
	latencySamples = 256    // per function, for p50/p99
	latencyWindow  = time.Minute
	rateWindow     = 120 // seconds of per-second counters
	payloadLimit   = 256 << 10
)

// internalKey is the registry key of an in-process worker (which has no id).
func internalKey(name string) string { return "internal:" + name }

// ring is a fixed-capacity FIFO that overwrites its oldest element.
type ring[T any] struct {
	buf   []T
	start int
	n     int
}

func newRing[T any](capacity int) ring[T] { return ring[T]{buf: make([]T, capacity)} }

func (r *ring[T]) push(v T) {
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = v
		r.n++
		return
	}
	r.buf[r.start] = v
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring[T]) len() int { return r.n }

// at returns the i-th element, oldest first.
func (r *ring[T]) at(i int) T { return r.buf[(r.start+i)%len(r.buf)] }

func (r *ring[T]) reset() { r.start, r.n = 0, 0; clear(r.buf) }

// workerState is one row of the Workers view.
type workerState struct {
	key         string // worker id, or internalKey(name)
	id          string
	name        string
	runtime     string
	version     string
	pid         int
	status      string
	draining    bool
	internal    bool
	connectedAt time.Time
	inFlight    int64
	funcs       map[string]struct{}
	engine      string // in a cluster: the engine it is connected to
	namespace   string // "" is the default namespace
}

// funcState is one row of the Functions view.
type funcState struct {
	id          string
	description string
	regs        map[string]string // worker key -> worker name
	calls       uint64
	errors      uint64
	lat         latWindow
	p50, p99    time.Duration
	engines     []string // in a cluster: the engines serving it
}

// latWindow keeps the most recent durations of a function with their
// finishing times.
type latWindow struct {
	d     [latencySamples]time.Duration
	at    [latencySamples]time.Time
	next  int
	n     int
	dirty bool
}

func (w *latWindow) add(d time.Duration, at time.Time) {
	w.d[w.next], w.at[w.next] = d, at
	w.next = (w.next + 1) % latencySamples
	w.n = min(w.n+1, latencySamples)
	w.dirty = true
}

// percentiles of the samples no older than latencyWindow before now.
func (w *latWindow) percentiles(now time.Time, scratch []time.Duration) (p50, p99 time.Duration, _ []time.Duration) {
	scratch = scratch[:0]
	cut := now.Add(-latencyWindow)
	for i := range w.n {
		if !w.at[i].Before(cut) {
			scratch = append(scratch, w.d[i])
		}
	}
	slices.Sort(scratch)
	return percentile(scratch, 0.50), percentile(scratch, 0.99), scratch
}

// invocation is one finished call in the tail.
type invocation struct {
	seq          uint64
	id           string
	functionID   string
	caller       string // caller worker's name, or the trigger kind
	target       string // serving worker's name
	trigger      string
	traceID      string
	spanID       string
	parentSpanID string
	// activation is set when the call is an observer's activation.
	activation   *activation
	status       string
	errorCode    string
	errorMessage string
	data         json.RawMessage
	dataKept     bool // false when the payload was not seen or too large
	result       json.RawMessage
	duration     time.Duration
	started      time.Time
	at           time.Time
}

// logEntry is one line in the Logs view.
type logEntry struct {
	at     time.Time
	worker string
	stream string // stdout, stderr, install, or a severity from the log store
	line   string
}

// activation is an observer's call of its target for an observed call.
type activation struct {
	observerID   string
	activationID string
	source       string // the observed function
	observedID   string // the observed call's invocation id
}

func (a *activation) String() string {
	return a.observerID + " on " + a.source + " (activation " + a.activationID + " for call " + a.observedID + ")"
}

type pendingCall struct {
	data json.RawMessage
	kept bool
	at   time.Time
}

// rateSeries counts calls and errors per second over the last rateWindow
// seconds, by the events' own timestamps.
type rateSeries struct {
	sec   [rateWindow]int64
	calls [rateWindow]int
	errs  [rateWindow]int
}

func (r *rateSeries) add(at time.Time, failed bool) {
	s := at.Unix()
	i := int(s % rateWindow)
	if r.sec[i] != s {
		r.sec[i], r.calls[i], r.errs[i] = s, 0, 0
	}
	r.calls[i]++
	if failed {
		r.errs[i]++
	}
}

// last returns the calls of the n complete seconds before now, oldest first.
func (r *rateSeries) last(now time.Time, n int) []int {
	n = min(n, rateWindow-1)
	out := make([]int, n)
	end := now.Unix() - 1
	for k := range n {
		s := end - int64(n-1-k)
		if i := int(s % rateWindow); r.sec[i] == s {
			out[k] = r.calls[i]
		}
	}
	return out
}

// state is everything the TUI knows, fed by events and snapshots. It is
// owned by the model and touched only from Update.
type state struct {
	workers map[string]*workerState
	procs   map[string]*Process
	// statusSince is when each process entered its current status, for
	// how long a start (an install) has taken so far.
	statusSince map[string]time.Time
	funcs       map[string]*funcState
	triggers    map[string]Trigger
	pending     map[string]pendingCall
	inv         ring[invocation]
	logs        ring[logEntry]
	seq         uint64
	calls       uint64
	errors      uint64
	rates       rateSeries
	dropped     uint64 // events the subscription missed
	resyncs     int
	scratch     []time.Duration
	// breaks are the function ids with a breakpoint, held the calls
	// stopped at them by hold id.
	breaks []string
	held   map[string]HeldCall
	// engine names this engine in a cluster and peers the others (from
	// the last snapshot); empty for a single engine.
	engine string
	peers  []string
	// observers by id; disposed ones go.
	observers map[string]*Observer
	// activations are the observer activations not yet finished, by the
	// target's invocation id.
	activations map[string]*activation
}

func newState() *state {
	return &state{
		workers:     make(map[string]*workerState),
		procs:       make(map[string]*Process),
		statusSince: make(map[string]time.Time),
		funcs:       make(map[string]*funcState),
		triggers:    make(map[string]Trigger),
		pending:     make(map[string]pendingCall),
		inv:         newRing[invocation](invocationRing),
		logs:        newRing[logEntry](logRing),
		held:        make(map[string]HeldCall),
		observers:   make(map[string]*Observer),
		activations: make(map[string]*activation),
	}
}

func (s *state) worker(key string) *workerState {
	w := s.workers[key]
	if w == nil {
		w = &workerState{key: key, id: key, status: "connected", funcs: make(map[string]struct{})}
		s.workers[key] = w
	}
	return w
}

func (s *state) function(id string) *funcState {
	f := s.funcs[id]
	if f == nil {
		f = &funcState{id: id, regs: make(map[string]string)}
		s.funcs[id] = f
	}
	return f
}

// workerName names a worker id for display ("" when unknown).
func (s *state) workerName(id string) string {
	if w := s.workers[id]; w != nil {
		return w.name
	}
	return ""
}

// apply folds one event into the state.
func (s *state) apply(ev event.Event) {
	switch e := ev.(type) {
	case event.WorkerConnected:
		w := s.worker(e.WorkerID)
		w.connectedAt = e.At
	case event.WorkerUpdated:
		w := s.worker(e.WorkerID)
		w.name, w.runtime, w.version, w.pid, w.draining = oneLine(e.Name), oneLine(e.Runtime), oneLine(e.Version), e.PID, e.Draining
		w.namespace = nsOf(e.Namespace)
		w.status = "connected"
		if e.Draining {
			w.status = "draining"
		}
		if w.connectedAt.IsZero() {
			w.connectedAt = e.At
		}
	case event.WorkerDisconnected:
		if w := s.workers[e.WorkerID]; w != nil {
			for id := range w.funcs {
				s.unregister(id, e.WorkerID)
			}
		}
		delete(s.workers, e.WorkerID)
	case event.FunctionRegistered:
		key := e.WorkerID
		if key == "" {
			key = internalKey(e.Worker)
			w := s.worker(key)
			w.id, w.name, w.internal, w.runtime, w.status = "", e.Worker, true, "engine", "available"
		}
		f := s.function(e.FunctionID)
		f.regs[key] = oneLine(e.Worker)
		s.worker(key).funcs[e.FunctionID] = struct{}{}
	case event.FunctionUnregistered:
		if e.WorkerID != "" {
			s.unregister(e.FunctionID, e.WorkerID)
			break
		}
		if f := s.funcs[e.FunctionID]; f != nil {
			for key := range f.regs {
				if strings.HasPrefix(key, "internal:") {
					s.unregister(e.FunctionID, key)
				}
			}
		}
	case event.TriggerRegistered:
		if isClientFunction(e.FunctionID) {
			return // an attached TUI's event subscription
		}
		name := ""
		if e.WorkerID != "" {
			name = s.workerName(e.WorkerID)
		}
		s.triggers[e.TriggerID] = Trigger{ID: e.TriggerID, Type: e.TriggerType, FunctionID: e.FunctionID,
			Worker: name, WorkerID: e.WorkerID, Config: e.Config, Active: e.Active}
	case event.TriggerUnregistered:
		delete(s.triggers, e.TriggerID)
	case event.InvocationStarted:
		if e.Trigger == TriggerQuery {
			return
		}
		if len(s.pending) >= pendingLimit {
			// Only reachable when finish events were lost; start afresh.
			clear(s.pending)
		}
		p := pendingCall{at: e.At, kept: len(e.Data) <= payloadLimit}
		if p.kept {
			p.data = e.Data
		}
		s.pending[e.InvocationID] = p
		if w := s.workers[e.TargetWorkerID]; w != nil && e.TargetWorkerID != "" {
			w.inFlight++
		}
	case event.InvocationFinished:
		if e.Trigger == TriggerQuery || s.cliPlumbing(e) {
			delete(s.pending, e.InvocationID)
			delete(s.activations, e.InvocationID)
			return
		}
		s.finish(e)
	case event.LogLine:
		line := e.Line
		if level, rest, ok := workerRecord(line); ok {
			line = level + " " + rest // the entry has its own time
		}
		s.logs.push(logEntry{at: e.At, worker: e.Worker, stream: e.Stream, line: oneLine(line)})
	case event.CallHeld:
		s.held[e.HoldID] = HeldCall{HoldID: e.HoldID, InvocationID: e.InvocationID, FunctionID: e.FunctionID,
			Caller: e.CallerWorkerID, Trigger: e.Trigger, Data: e.Data, HeldAt: e.At, Deadline: e.Deadline}
	case event.CallResumed:
		delete(s.held, e.HoldID)
	case event.BreakpointsChanged:
		s.breaks = slices.Clone(e.FunctionIDs)
	case event.ObserverChanged:
		if e.State == ObserverDisposed {
			delete(s.observers, e.ObserverID)
			return
		}
		o := s.observers[e.ObserverID]
		if o == nil {
			o = &Observer{ID: e.ObserverID}
			s.observers[e.ObserverID] = o
		}
		o.Source, o.Target, o.State, o.Fires, o.InFlight = e.SourceFunction, e.TargetFunction, e.State, e.Fires, e.InFlight
		o.Owner, o.Reason = e.OwnerWorkerID, ""
		if e.ReasonCode != "" {
			o.Reason = e.ReasonCode + ": " + e.ReasonMessage
		}
	case event.ObserverActivated:
		if len(s.activations) >= pendingLimit {
			clear(s.activations) // finish events were lost; start afresh
		}
		s.activations[e.InvocationID] = &activation{observerID: e.ObserverID, activationID: e.ActivationID,
			source: e.SourceFunction, observedID: e.ObservedInvocationID}
	case event.ObserverDropped:
		if o := s.observers[e.ObserverID]; o != nil {
			o.Dropped++
		}
	case event.ProcessChanged:
		p := s.procs[e.Worker]
		if p == nil {
			p = &Process{Worker: e.Worker}
			s.procs[e.Worker] = p
		}
		if e.PID != p.PID && e.PID != 0 {
			p.Since = e.At
		}
		if e.Status != p.Status {
			s.statusSince[e.Worker] = e.At
		}
		p.Status, p.PID, p.Restarts, p.Reloads, p.ExitCode, p.Error = e.Status, e.PID, e.Restarts, e.Reloads, e.ExitCode, e.Error
		if len(e.LastLines) > 0 {
			p.LastLines = e.LastLines
		}
	}
}

// CLIClientName is the worker name of iii's own command-line clients (iii
// invoke, iii functions, ...): short-lived connections the views leave out,
// keeping only the calls they make.
const CLIClientName = "iii-cli"

// FnRegisterWorker is the call each SDK makes to send its name and runtime.
const FnRegisterWorker = "engine::workers::register"

// cliPlumbing reports whether e is a CLI client's connection bookkeeping.
func (s *state) cliPlumbing(e event.InvocationFinished) bool {
	return e.FunctionID == FnRegisterWorker && s.workerName(e.CallerWorkerID) == CLIClientName
}

func (s *state) unregister(functionID, key string) {
	if w := s.workers[key]; w != nil {
		delete(w.funcs, functionID)
	}
	f := s.funcs[functionID]
	if f == nil {
		return
	}
	delete(f.regs, key)
	if len(f.regs) == 0 && f.calls == 0 {
		delete(s.funcs, functionID)
	}
}

func (s *state) finish(e event.InvocationFinished) {
	p, seen := s.pending[e.InvocationID]
	delete(s.pending, e.InvocationID)
	act := s.activations[e.InvocationID]
	delete(s.activations, e.InvocationID)
	if w := s.workers[e.TargetWorkerID]; w != nil && e.TargetWorkerID != "" && w.inFlight > 0 {
		w.inFlight--
	}
	failed := e.Status != event.StatusOK
	s.calls++
	if failed {
		s.errors++
	}
	s.rates.add(e.At, failed)
	f := s.function(e.FunctionID)
	f.calls++
	if failed {
		f.errors++
	}
	f.lat.add(e.Duration, e.At)

	caller := e.Trigger
	if e.CallerWorkerID != "" {
		if n := s.workerName(e.CallerWorkerID); n != "" {
			caller = n
		} else {
			caller = shortID(e.CallerWorkerID)
		}
	}
	if caller == "" {
		caller = "engine"
	}
	s.seq++
	started := e.At.Add(-e.Duration)
	if seen {
		started = p.at
	}
	s.inv.push(invocation{
		seq: s.seq, id: e.InvocationID, functionID: e.FunctionID, caller: oneLine(caller),
		target: oneLine(e.Worker), trigger: e.Trigger, traceID: e.Span.TraceID, spanID: e.Span.SpanID,
		parentSpanID: e.Span.ParentSpanID, activation: act, status: e.Status, errorCode: e.ErrorCode,
		errorMessage: oneLine(e.ErrorMessage), data: p.data, dataKept: seen && p.kept,
		result: e.Result, duration: e.Duration, started: started, at: e.At,
	})
}

// refreshLatency recomputes p50/p99 of the functions that got samples
// since the last refresh.
func (s *state) refreshLatency(now time.Time) {
	for _, f := range s.funcs {
		if f.lat.dirty {
			f.p50, f.p99, s.scratch = f.lat.percentiles(now, s.scratch)
			f.lat.dirty = false
		}
	}
}

// resync replaces the registries with a snapshot, keeping call counters
// and the tails.
func (s *state) resync(snap Snapshot) {
	s.resyncs++
	workers := make(map[string]*workerState, len(snap.Workers))
	for _, w := range snap.Workers {
		key := w.ID
		if w.Internal || key == "" {
			key = internalKey(w.Name)
		}
		ws := &workerState{key: key, id: w.ID, name: oneLine(w.Name), runtime: oneLine(w.Runtime),
			version: oneLine(w.Version), pid: w.PID, status: w.Status, draining: w.Draining,
			internal: w.Internal, connectedAt: w.ConnectedAt, inFlight: w.InFlight,
			funcs: make(map[string]struct{}, len(w.Functions)), engine: oneLine(w.Engine), namespace: nsOf(w.Namespace)}
		if w.Internal {
			ws.id, ws.runtime = "", cmp.Or(ws.runtime, "engine")
		}
		for _, f := range w.Functions {
			ws.funcs[f] = struct{}{}
		}
		workers[key] = ws
	}
	s.workers = workers

	for _, f := range s.funcs {
		clear(f.regs)
	}
	seen := make(map[string]bool, len(snap.Functions))
	for _, fn := range snap.Functions {
		f := s.function(fn.ID)
		// One row per id: an id served in several namespaces (one
		// snapshot entry each) names every engine serving it.
		if !seen[fn.ID] {
			seen[fn.ID] = true
			f.description, f.engines = fn.Description, slices.Clone(fn.Engines)
		} else {
			f.description = cmp.Or(f.description, fn.Description)
			f.engines = append(f.engines, fn.Engines...)
			slices.Sort(f.engines)
			f.engines = slices.Compact(f.engines)
		}
		for i, name := range fn.Workers {
			key := internalKey(name)
			if !fn.Internal && i < len(fn.WorkerIDs) {
				key = fn.WorkerIDs[i]
			}
			f.regs[key] = oneLine(name)
			if w := s.workers[key]; w != nil {
				w.funcs[fn.ID] = struct{}{}
			}
		}
	}
	for id, f := range s.funcs {
		if len(f.regs) == 0 && f.calls == 0 {
			delete(s.funcs, id)
		}
	}

	s.triggers = make(map[string]Trigger, len(snap.Triggers))
	for _, t := range snap.Triggers {
		if isClientFunction(t.FunctionID) {
			continue
		}
		t.Worker = oneLine(t.Worker)
		s.triggers[t.ID] = t
	}
	s.engine, s.peers = oneLine(snap.Engine), slices.Clone(snap.Peers)
	s.observers = make(map[string]*Observer, len(snap.Observers))
	for _, o := range snap.Observers {
		s.observers[o.ID] = &o
	}
	s.breaks = slices.Clone(snap.Breakpoints)
	s.held = make(map[string]HeldCall, len(snap.Held))
	for _, h := range snap.Held {
		s.held[h.HoldID] = h
	}
	if snap.Processes != nil {
		s.procs = make(map[string]*Process, len(snap.Processes))
		for _, p := range snap.Processes {
			s.procs[p.Worker] = &p
		}
	}
}

// Sorted views of the state for the tables.

func (s *state) sortedWorkers() []*workerState {
	out := make([]*workerState, 0, len(s.workers))
	for _, w := range s.workers {
		if w.name != CLIClientName {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b *workerState) int {
		if a.internal != b.internal {
			if a.internal {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(a.key, b.key))
	})
	return out
}

func (s *state) sortedFuncs() []*funcState {
	out := make([]*funcState, 0, len(s.funcs))
	for _, f := range s.funcs {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *funcState) int { return cmp.Compare(a.id, b.id) })
	return out
}

func (s *state) sortedTriggers() []Trigger {
	out := make([]Trigger, 0, len(s.triggers))
	for _, t := range s.triggers {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Trigger) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.FunctionID, b.FunctionID), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func (s *state) sortedProcs() []*Process {
	out := make([]*Process, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Process) int { return cmp.Compare(a.Worker, b.Worker) })
	return out
}

// recentInvocations returns the tail newest first, up to seq (0: all).
func (s *state) recentInvocations(upTo uint64) []invocation {
	out := make([]invocation, 0, s.inv.len())
	for i := s.inv.len() - 1; i >= 0; i-- {
		v := s.inv.at(i)
		if upTo == 0 || v.seq <= upTo {
			out = append(out, v)
		}
	}
	return out
}

// DefaultNamespace is the namespace of workers that declare none.
const DefaultNamespace = "default"

// nsOf is a namespace as the state keeps it: "" for the default one.
func nsOf(ns string) string {
	ns = oneLine(ns)
	if ns == DefaultNamespace {
		return ""
	}
	return ns
}

// namespaced reports whether any worker is outside the default namespace:
// only then do the Workers and Functions views have a NAMESPACE column.
func (s *state) namespaced() bool {
	for _, w := range s.workers {
		if w.namespace != "" {
			return true
		}
	}
	return false
}

// funcNamespaces names the namespaces a function is registered in: its
// workers' (in-process functions are the engine's, in the default one).
func (s *state) funcNamespaces(f *funcState) []string {
	ns := make([]string, 0, 1)
	for key := range f.regs {
		n := ""
		if w := s.workers[key]; w != nil {
			n = w.namespace
		}
		ns = append(ns, cmp.Or(n, DefaultNamespace))
	}
	slices.Sort(ns)
	return slices.Compact(ns)
}

// funcWorkers names the workers serving a function, sorted, deduplicated.
// A worker's current name wins over the one at registration (SDKs
// register functions before they report their name).
func (s *state) funcWorkers(f *funcState) []string {
	names := make([]string, 0, len(f.regs))
	for key, n := range f.regs {
		if w := s.workers[key]; w != nil && w.name != "" {
			n = w.name
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// lastPayload is the most recent kept payload sent to a function.
func (s *state) lastPayload(functionID string) (json.RawMessage, bool) {
	for i := s.inv.len() - 1; i >= 0; i-- {
		if v := s.inv.at(i); v.functionID == functionID && v.dataKept {
			return v.data, true
		}
	}
	return nil, false
}

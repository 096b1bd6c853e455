// Package event is the engine's in-process event stream: every state change
// (workers, functions, triggers, invocations) is published as an immutable
// value. Subscribers each have their own bounded buffer; a full buffer drops
// the event and counts it, so publishing never blocks the router.
package event

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"
)

// Event is implemented by every event type. Events are values and must not
// be mutated after publishing.
type Event interface {
	// Kind names the event, past tense: "worker.connected", ...
	Kind() string
}

// WorkerConnected is published when a worker socket is accepted.
type WorkerConnected struct {
	WorkerID string
	Addr     string
	At       time.Time
}

// WorkerUpdated is published when a worker reports its metadata or changes
// state (draining).
type WorkerUpdated struct {
	WorkerID string
	Name     string
	Runtime  string
	Version  string
	PID      int
	Draining bool
	// Namespace is the worker's namespace ("default" unless it declared
	// one).
	Namespace string
	At        time.Time
}

// WorkerDisconnected is published once a worker's cleanup has finished.
type WorkerDisconnected struct {
	WorkerID string
	Reason   string
	At       time.Time
}

// FunctionRegistered is published for each registration of a function id
// by a worker (several workers may serve one id).
type FunctionRegistered struct {
	FunctionID string
	WorkerID   string // empty for in-process functions
	Worker     string // worker name
	At         time.Time
}

// FunctionUnregistered is published when a worker's registration of a
// function id goes away.
type FunctionUnregistered struct {
	FunctionID string
	WorkerID   string
	At         time.Time
}

// TriggerTypeRegistered is published when a trigger type gets a provider.
type TriggerTypeRegistered struct {
	TriggerType string
	Namespace   string // "" = the default one (the engine's own types)
	WorkerID    string
	At          time.Time
}

// TriggerTypeUnregistered is published when a trigger type loses its provider.
type TriggerTypeUnregistered struct {
	TriggerType string
	Namespace   string // "" = the default one
	WorkerID    string
	At          time.Time
}

// TriggerRegistered is published when a binding is stored (Active reports
// whether it reached its provider or is parked).
type TriggerRegistered struct {
	TriggerID   string
	TriggerType string
	FunctionID  string
	WorkerID    string
	Config      json.RawMessage
	Active      bool
	At          time.Time
}

// TriggerUnregistered is published when a binding is removed.
type TriggerUnregistered struct {
	TriggerID   string
	TriggerType string
	FunctionID  string
	At          time.Time
}

// SpanIDs locate the engine's span for one call (lowercase hex).
type SpanIDs struct {
	TraceID      string
	SpanID       string
	ParentSpanID string // empty for a root span
}

// InvocationStarted is published when the router dispatches a call.
type InvocationStarted struct {
	InvocationID   string
	FunctionID     string
	CallerWorkerID string // empty for engine-originated calls
	TargetWorkerID string // empty for in-process functions
	Worker         string // name of the worker serving the call
	Trigger        string // worker, engine, http, cron, queue, ...
	Data           json.RawMessage
	Span           SpanIDs
	At             time.Time
}

// Invocation statuses.
const (
	StatusOK      = "ok"
	StatusError   = "error"
	StatusTimeout = "timeout"
)

// InvocationFinished is published when a call ends, whatever the outcome.
type InvocationFinished struct {
	InvocationID   string
	FunctionID     string
	CallerWorkerID string
	TargetWorkerID string
	Worker         string
	Trigger        string
	Span           SpanIDs
	Status         string // StatusOK, StatusError or StatusTimeout
	ErrorCode      string
	ErrorMessage   string
	Result         json.RawMessage
	Duration       time.Duration
	At             time.Time
}

// LogLine is one line of output of a process the exec module manages (its
// run command, or an install command).
type LogLine struct {
	Worker string // the exec worker's name in config.yaml
	PID    int    // the process that wrote it
	Stream string // "stdout", "stderr" or "install"
	Line   string // without the newline; cut at the module's line limit
	At     time.Time
}

// Statuses of a managed process (ProcessChanged.Status).
const (
	ProcessStarting   = "starting"   // installing or waiting for it to register
	ProcessRunning    = "running"    // serving
	ProcessReloading  = "reloading"  // a new process is starting beside the old one
	ProcessDraining   = "draining"   // the old process finishes its in-flight calls
	ProcessRestarting = "restarting" // waiting out the backoff after a crash
	ProcessCrashed    = "crashed"    // exited on its own; a restart follows
	ProcessFailed     = "failed"     // install failed; waiting for a change
	ProcessStopped    = "stopped"    // stopped at shutdown
)

// ProcessChanged is published when a process the exec module manages
// changes status, and after each reload (successful or not).
type ProcessChanged struct {
	Worker    string
	Status    string        // one of the Process* statuses
	PID       int           // the serving process; 0 when none runs
	Restarts  int           // crash restarts so far
	Reloads   int           // completed reloads so far
	ExitCode  int           // of the last exit; -1 when killed by a signal or none yet
	Error     string        // what went wrong last (crash, failed install or reload)
	RestartIn time.Duration // while restarting: the backoff before the next start
	LastLines []string
	// FailedPID is the process Error and LastLines are about when it is
	// not PID: the new process of a failed reload (PID is the old one,
	// still serving) or a crashed process (PID is 0). 0 when unknown.
	FailedPID int
	At        time.Time
}

// HTTPRequestServed is published by the HTTP trigger module when it has
// answered a request, for request metrics (by route, method and status).
type HTTPRequestServed struct {
	Route    string // the trigger's api_path (the route pattern, not the URL path); "" when no route matched
	Method   string
	Status   int
	Duration time.Duration
	At       time.Time
}

func (WorkerConnected) Kind() string         { return "worker.connected" }
func (WorkerUpdated) Kind() string           { return "worker.updated" }
func (WorkerDisconnected) Kind() string      { return "worker.disconnected" }
func (FunctionRegistered) Kind() string      { return "function.registered" }
func (FunctionUnregistered) Kind() string    { return "function.unregistered" }
func (TriggerTypeRegistered) Kind() string   { return "triggertype.registered" }
func (TriggerTypeUnregistered) Kind() string { return "triggertype.unregistered" }
func (TriggerRegistered) Kind() string       { return "trigger.registered" }
func (TriggerUnregistered) Kind() string     { return "trigger.unregistered" }
func (InvocationStarted) Kind() string       { return "invocation.started" }
func (InvocationFinished) Kind() string      { return "invocation.finished" }
func (LogLine) Kind() string                 { return "log.line" }
func (ProcessChanged) Kind() string          { return "process.changed" }
func (HTTPRequestServed) Kind() string       { return "http.request.served" }

// Bus fans events out to subscribers. The zero value is ready to use.
type Bus struct {
	mu   sync.Mutex                      // serialises subscribe/unsubscribe
	subs atomic.Pointer[[]*Subscription] // copy-on-write; read without a lock
}

// Subscription receives events on a bounded channel.
type Subscription struct {
	bus     *Bus
	ch      chan Event
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe returns a subscription whose channel holds up to buffer events
// (at least 1). Call Close when done.
func (b *Bus) Subscribe(buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{bus: b, ch: make(chan Event, buffer)}
	b.mu.Lock()
	defer b.mu.Unlock()
	var next []*Subscription
	if cur := b.subs.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, s)
	b.subs.Store(&next)
	return s
}

// Active reports whether anyone is subscribed; publishers use it to skip
// building events nobody will read.
func (b *Bus) Active() bool {
	cur := b.subs.Load()
	return cur != nil && len(*cur) > 0
}

// Publish offers ev to every subscriber without blocking: a subscriber whose
// buffer is full misses the event and its drop counter goes up.
func (b *Bus) Publish(ev Event) {
	cur := b.subs.Load()
	if cur == nil {
		return
	}
	for _, s := range *cur {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

// C is the subscription's event channel. It is never closed: stop reading
// after Close.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped is how many events this subscriber missed because its buffer was
// full. A subscriber that sees it grow should resync from a snapshot.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close removes the subscription from its bus. It is safe to call twice.
func (s *Subscription) Close() {
	s.once.Do(func() {
		b := s.bus
		b.mu.Lock()
		defer b.mu.Unlock()
		cur := b.subs.Load()
		if cur == nil {
			return
		}
		next := make([]*Subscription, 0, len(*cur))
		for _, o := range *cur {
			if o != s {
				next = append(next, o)
			}
		}
		b.subs.Store(&next)
	})
}

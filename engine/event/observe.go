package event

import "time"

// ObserverChanged is published when an observer is made, changes state
// (pending, active, suspended, error, disposed) or fires.
type ObserverChanged struct {
	ObserverID     string
	OwnerWorkerID  string // the observing worker; empty for in-process observers
	SourceFunction string // the observed function
	TargetFunction string // the function each activation invokes
	// Namespace and TargetNamespace are where they resolve ("" = default).
	Namespace       string
	TargetNamespace string
	State           string
	ReasonCode      string
	ReasonMessage   string
	Fires           uint64
	InFlight        int
	At              time.Time
}

// ObserverActivated is published when an observer's target is invoked for
// an observed call (or a call through the observer); InvocationID is the
// target's invocation, ObservedInvocationID the observed call's.
type ObserverActivated struct {
	ObserverID           string
	ActivationID         string
	SourceFunction       string
	TargetFunction       string
	ObservedInvocationID string
	InvocationID         string
	Depth                uint32
	At                   time.Time
}

// ObserverDropped is published when an activation is not made: the loop
// guard (LOOP_GUARD), a full activation queue (OVERFLOW) or a report for an
// observer that is not active (INACTIVE).
type ObserverDropped struct {
	ObserverID     string
	SourceFunction string
	Reason         string
	At             time.Time
}

// LocalInvocations is published for each function a worker reported in
// localinvocationstats: calls it ran in-process without the engine.
type LocalInvocations struct {
	WorkerID      string
	FunctionID    string
	Window        time.Duration
	Count         uint64
	Errors        uint64
	DurationTotal time.Duration
	At            time.Time
}

func (ObserverChanged) Kind() string   { return "observer.changed" }
func (ObserverActivated) Kind() string { return "observer.activated" }
func (ObserverDropped) Kind() string   { return "observer.dropped" }
func (LocalInvocations) Kind() string  { return "local.invocations" }

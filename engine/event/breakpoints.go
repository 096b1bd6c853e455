package event

import (
	"encoding/json"
	"time"
)

// CallHeld is published when a call stops at a breakpoint. It waits for
// a decision (release, fail, drop) until Deadline, when it times out.
type CallHeld struct {
	HoldID         string
	InvocationID   string
	FunctionID     string
	CallerWorkerID string
	Trigger        string
	Data           json.RawMessage
	Deadline       time.Time
	At             time.Time
}

// Outcomes of a held call (CallResumed.Outcome).
const (
	HeldContinued = "continued" // delivered, maybe with an edited payload
	HeldFailed    = "failed"    // answered with an error without delivery
	HeldDropped   = "dropped"   // never delivered; the caller times out
	HeldTimedOut  = "timeout"   // its deadline passed while held
	HeldStopped   = "stopped"   // its caller left, or the engine stopped
)

// CallResumed is published when a held call leaves its breakpoint.
type CallResumed struct {
	HoldID       string
	InvocationID string
	FunctionID   string
	Outcome      string // one of the Held* outcomes
	At           time.Time
}

// BreakpointsChanged is published when a breakpoint is set or cleared;
// FunctionIDs are all of them after the change.
type BreakpointsChanged struct {
	FunctionIDs []string
	At          time.Time
}

func (CallHeld) Kind() string           { return "call.held" }
func (CallResumed) Kind() string        { return "call.resumed" }
func (BreakpointsChanged) Kind() string { return "breakpoints.changed" }

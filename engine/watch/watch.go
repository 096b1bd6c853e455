// Package watch is the wire form of what a client needs to watch an engine
// from outside (iii tui --address, iii break): the engine::events trigger
// type that streams the engine's events to a function of the subscribing
// worker, the engine::snapshot query to resync from, and the breakpoint
// functions. The engine serves them (engine/watch.go, engine/breakpoints.go);
// clients decode with the same types. It imports nothing of the engine but
// its event values.
package watch

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/iii-workbench/iii/engine/event"
)

// Names of the engine's watch functions and trigger type.
const (
	// TriggerType streams events: bind a function of yours to it and the
	// engine calls it with a Batch at most every Config.BatchMS while
	// events arrive. The binding ends with its worker's connection.
	TriggerType = "engine::events"
	// FnSnapshot answers a Snapshot of the registries.
	FnSnapshot = "engine::snapshot"

	FnBreakSet     = "engine::breakpoints::set"     // BreakArgs → BreakList
	FnBreakClear   = "engine::breakpoints::clear"   // BreakArgs (empty: all of yours) → BreakList
	FnBreakList    = "engine::breakpoints::list"    // → BreakList
	FnBreakRelease = "engine::breakpoints::release" // Release → {"ok":true}

	// DeliveryKind is the Trigger kind of the engine's calls that deliver
	// batches; their own invocation events are never delivered.
	DeliveryKind = "engine::events"
)

// Config configures an engine::events binding; every key is optional.
type Config struct {
	// Buffer is how many events wait while a batch is being delivered
	// (default 4096, at most 65536); beyond it events are dropped and
	// counted in Batch.Dropped.
	Buffer int `json:"buffer,omitempty"`
	// BatchMS is how long events are gathered into one batch (default 100).
	BatchMS int `json:"batch_ms,omitempty"`
	// MaxBatchBytes bounds one batch's encoded events (default 1 MiB); a
	// single event larger than it travels without its payload and result.
	MaxBatchBytes int `json:"max_batch_bytes,omitempty"`
}

// Config bounds.
const (
	DefaultBuffer        = 4096
	MaxBuffer            = 1 << 16
	DefaultBatchMS       = 100
	DefaultMaxBatchBytes = 1 << 20
)

// WithDefaults fills in the defaults and checks the bounds.
func (c Config) WithDefaults() (Config, error) {
	switch {
	case c.Buffer < 0 || c.Buffer > MaxBuffer:
		return c, fmt.Errorf("buffer must be between 1 and %d, got %d", MaxBuffer, c.Buffer)
	case c.BatchMS < 0 || c.BatchMS > 10_000:
		return c, fmt.Errorf("batch_ms must be between 1 and 10000, got %d", c.BatchMS)
	case c.MaxBatchBytes < 0:
		return c, fmt.Errorf("max_batch_bytes must be positive, got %d", c.MaxBatchBytes)
	}
	if c.Buffer == 0 {
		c.Buffer = DefaultBuffer
	}
	if c.BatchMS == 0 {
		c.BatchMS = DefaultBatchMS
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	return c, nil
}

// Batch is the payload of one delivery.
type Batch struct {
	// Seq numbers the subscription's batches from 1: a client that sees it
	// start again was resubscribed (after a reconnect) and missed events.
	Seq uint64 `json:"seq"`
	// Dropped is how many events the subscription has missed so far: a
	// client that sees it grow resyncs from engine::snapshot.
	Dropped uint64     `json:"dropped"`
	Events  []Envelope `json:"events"`
}

// Envelope is one event: its kind (event.Event.Kind) and its fields as
// the Go value encodes them (durations in nanoseconds).
type Envelope struct {
	Kind  string          `json:"kind"`
	Event json.RawMessage `json:"event"`
}

// Encode wraps ev.
func Encode(ev event.Event) (Envelope, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return Envelope{}, fmt.Errorf("watch: encode %s: %w", ev.Kind(), err)
	}
	return Envelope{Kind: ev.Kind(), Event: b}, nil
}

// Decode unwraps an envelope. An unknown kind (a newer engine) is an
// error the client skips.
func Decode(env Envelope) (event.Event, error) {
	var ev event.Event
	switch env.Kind {
	case event.WorkerConnected{}.Kind():
		ev = decodeAs[event.WorkerConnected](env.Event)
	case event.WorkerUpdated{}.Kind():
		ev = decodeAs[event.WorkerUpdated](env.Event)
	case event.WorkerDisconnected{}.Kind():
		ev = decodeAs[event.WorkerDisconnected](env.Event)
	case event.FunctionRegistered{}.Kind():
		ev = decodeAs[event.FunctionRegistered](env.Event)
	case event.FunctionUnregistered{}.Kind():
		ev = decodeAs[event.FunctionUnregistered](env.Event)
	case event.TriggerTypeRegistered{}.Kind():
		ev = decodeAs[event.TriggerTypeRegistered](env.Event)
	case event.TriggerTypeUnregistered{}.Kind():
		ev = decodeAs[event.TriggerTypeUnregistered](env.Event)
	case event.TriggerRegistered{}.Kind():
		ev = decodeAs[event.TriggerRegistered](env.Event)
	case event.TriggerUnregistered{}.Kind():
		ev = decodeAs[event.TriggerUnregistered](env.Event)
	case event.InvocationStarted{}.Kind():
		ev = decodeAs[event.InvocationStarted](env.Event)
	case event.InvocationFinished{}.Kind():
		ev = decodeAs[event.InvocationFinished](env.Event)
	case event.LogLine{}.Kind():
		ev = decodeAs[event.LogLine](env.Event)
	case event.ProcessChanged{}.Kind():
		ev = decodeAs[event.ProcessChanged](env.Event)
	case event.HTTPRequestServed{}.Kind():
		ev = decodeAs[event.HTTPRequestServed](env.Event)
	case event.CallHeld{}.Kind():
		ev = decodeAs[event.CallHeld](env.Event)
	case event.CallResumed{}.Kind():
		ev = decodeAs[event.CallResumed](env.Event)
	case event.BreakpointsChanged{}.Kind():
		ev = decodeAs[event.BreakpointsChanged](env.Event)
	case event.ObserverChanged{}.Kind():
		ev = decodeAs[event.ObserverChanged](env.Event)
	case event.ObserverActivated{}.Kind():
		ev = decodeAs[event.ObserverActivated](env.Event)
	case event.ObserverDropped{}.Kind():
		ev = decodeAs[event.ObserverDropped](env.Event)
	case event.LocalInvocations{}.Kind():
		ev = decodeAs[event.LocalInvocations](env.Event)
	default:
		return nil, fmt.Errorf("watch: unknown event kind %q", env.Kind)
	}
	if d, ok := ev.(decodeErr); ok {
		return nil, fmt.Errorf("watch: decode %s: %w", env.Kind, d.err)
	}
	return ev, nil
}

type decodeErr struct{ err error }

func (decodeErr) Kind() string { return "" }

func decodeAs[T event.Event](raw json.RawMessage) event.Event {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return decodeErr{err}
	}
	return v
}

// Snapshot is engine::snapshot's answer: the registries (in a cluster,
// every engine's workers and functions, each naming its engine) and the
// held calls.
type Snapshot struct {
	// Engine is this engine's cluster name; empty outside a cluster.
	Engine string `json:"engine,omitempty"`
	// Peers are the other engines of the cluster.
	Peers     []string     `json:"peers,omitempty"`
	Workers   []Worker     `json:"workers"`
	Functions []Function   `json:"functions"`
	Triggers  []Trigger    `json:"triggers"`
	Held      []HeldCall   `json:"held"`
	Breaks    []Breakpoint `json:"breakpoints"`
	Observers []Observer   `json:"observers"`
}

// Observer is an observer of a function: source → target.
type Observer struct {
	ID       string `json:"id"`
	Source   string `json:"source"` // the observed function
	Target   string `json:"target"` // the function each activation invokes
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"` // why it is not active
	Fires    uint64 `json:"fires"`
	InFlight int    `json:"in_flight"`
	Dropped  uint64 `json:"dropped"`
	Owner    string `json:"owner,omitempty"` // the observing worker's id
}

// Worker is a connected (or in-process) worker.
type Worker struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Runtime     string    `json:"runtime,omitempty"`
	Version     string    `json:"version,omitempty"`
	PID         int       `json:"pid,omitempty"`
	Status      string    `json:"status"`
	Draining    bool      `json:"draining,omitempty"`
	Internal    bool      `json:"internal,omitempty"`
	ConnectedAt time.Time `json:"connected_at"`
	InFlight    int64     `json:"in_flight"`
	Functions   []string  `json:"functions"`
	Engine      string    `json:"engine,omitempty"`
	Namespace   string    `json:"namespace,omitempty"`
}

// Function is a function id and who serves it.
type Function struct {
	ID          string   `json:"id"`
	Description string   `json:"description,omitempty"`
	Workers     []string `json:"workers"`
	WorkerIDs   []string `json:"worker_ids"`
	Internal    bool     `json:"internal,omitempty"`
	Engines     []string `json:"engines,omitempty"`
	Namespace   string   `json:"namespace,omitempty"`
}

// Trigger is a binding.
type Trigger struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	FunctionID string          `json:"function_id"`
	Worker     string          `json:"worker,omitempty"`
	WorkerID   string          `json:"worker_id,omitempty"`
	Config     json.RawMessage `json:"config"`
	Active     bool            `json:"active"`
}

// BreakArgs names the function ids of engine::breakpoints::set and clear.
type BreakArgs struct {
	FunctionIDs []string `json:"function_ids"`
}

// Breakpoint is a function id whose calls are held, and whose session set
// it (the worker id of the connection; "" for the engine's own).
type Breakpoint struct {
	FunctionID string `json:"function_id"`
	Owner      string `json:"owner,omitempty"`
}

// BreakList is the breakpoints and the calls held at them.
type BreakList struct {
	Breakpoints []Breakpoint `json:"breakpoints"`
	Held        []HeldCall   `json:"held"`
}

// HeldCall is a call held at a breakpoint.
type HeldCall struct {
	HoldID       string          `json:"hold_id"`
	InvocationID string          `json:"invocation_id"`
	FunctionID   string          `json:"function_id"`
	Caller       string          `json:"caller,omitempty"` // caller's worker id
	Trigger      string          `json:"trigger,omitempty"`
	Data         json.RawMessage `json:"data"`
	HeldAt       time.Time       `json:"held_at"`
	// Deadline is when the call times out if nobody releases it: the
	// caller's timeout keeps running while it is held.
	Deadline time.Time `json:"deadline"`
}

// Actions of engine::breakpoints::release.
const (
	ActionContinue = "continue" // deliver (with Data when given)
	ActionFail     = "fail"     // answer the caller with an error
	ActionDrop     = "drop"     // never deliver: the caller times out
)

// Release decides a held call's fate.
type Release struct {
	HoldID string `json:"hold_id"`
	// Action is continue (the default), fail or drop.
	Action string `json:"action,omitempty"`
	// Data replaces the payload on continue.
	Data json.RawMessage `json:"data,omitempty"`
	// Error is the message on fail (Code defaults to breakpoint_failed).
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

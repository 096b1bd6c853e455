// Package tui is the terminal workbench of `iii dev`: a live view of the
// engine's workers, functions, triggers, invocations, traces and logs.
//
// The TUI never touches the engine's maps. It reads a Source: an event
// subscription (mapped to tea.Msg by a re-armed wait command), a copied
// Snapshot to resync from when the subscription drops events, and
// function calls (user invocations, and the observability module's query
// functions for traces and logs). Invocation events are aggregated, not
// rendered one by one: the event command coalesces a window of events
// into one message and the screen is redrawn at most a few times per
// window, so the TUI stays responsive at tens of thousands of events per
// second.
package tui

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/iii-workbench/iii/engine/event"
)

// Source is what the TUI reads: an engine seen from outside. iii dev
// implements it over its in-process engine (cmd/iii/internal/devsource),
// the remote package over the engine's own protocol (iii tui --address);
// tests use a fake.
type Source interface {
	// Info describes the engine for the header.
	Info() Info
	// Subscribe opens an event subscription holding up to buffer events.
	Subscribe(buffer int) Subscription
	// Snapshot copies the current registries; nothing in it is shared.
	Snapshot() Snapshot
	// Invoke calls a function on the user's behalf (the `i` and `r` keys);
	// the call shows in the invocation tail like any other. A function
	// error is a *protocol.ErrorBody.
	Invoke(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error)
	// Query calls a function for the TUI itself (traces, logs). Its
	// invocation events carry Trigger == TriggerQuery and are not shown.
	Query(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error)
	// Control calls a function that changes the engine for the TUI
	// (breakpoints, fire now); hidden from the tail like Query. A read-only
	// source refuses it with ErrReadOnly.
	Control(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error)
	// Restart restarts a worker process the exec module manages.
	// ErrRestartUnsupported when there is no exec module.
	Restart(ctx context.Context, worker string) error
}

// Subscription is an event subscription; *event.Subscription is one.
type Subscription interface {
	C() <-chan event.Event
	// Dropped counts events missed because the buffer was full; when it
	// grows the TUI resyncs from a Snapshot.
	Dropped() uint64
	Close()
}

// Trigger kinds a Source puts on the calls it makes.
const (
	TriggerUser  = "tui"       // Invoke: the user's calls
	TriggerQuery = "tui.query" // Query: the TUI's own reads
)

// Query functions of the observability module.
const (
	FnTracesTree = "engine::traces::tree"
	FnLogsList   = "engine::logs::list"
)

// ErrReadOnly is returned by Invoke and Control of a source attached
// without permission to change anything.
var ErrReadOnly = errors.New("read-only: attach with --allow-invoke to call functions, set breakpoints or fire triggers")

// ErrRestartUnsupported is returned by Source.Restart without an exec
// module.
var ErrRestartUnsupported = errors.New("tui: restarting workers needs the exec module")

// Info describes the engine for the header line.
type Info struct {
	// URL is the worker WebSocket URL (ws://host:port).
	URL string
	// Endpoints are the listeners of modules (http, stream, metrics, ...).
	Endpoints []Endpoint
	// Redis is "embedded", "external <url>" or "" when no module uses it.
	Redis string
	// Modules are the running modules' IDs.
	Modules []string
	// Version is the binary's version.
	Version string
	// Attached is set when the TUI watches an engine over the network
	// (iii tui --address); ReadOnly when it may not change it.
	Attached, ReadOnly bool
}

// Endpoint is a module's listener.
type Endpoint struct {
	Name string // module ID
	Addr string // host:port
}

// Snapshot is a copy of the engine's registries and the managed
// processes, the resync source after dropped events.
type Snapshot struct {
	Workers   []Worker
	Functions []Function
	Triggers  []Trigger
	// Processes are the exec module's workers. Nil when the source cannot
	// tell (no exec module): the TUI then keeps what events told it.
	Processes []Process
	// Engine names this engine in a cluster, Peers the others; both
	// empty for a single engine.
	Engine string
	Peers  []string
	// Breakpoints are the function ids with a breakpoint, Held the calls
	// stopped at them.
	Breakpoints []string
	Held        []HeldCall
	// Observers are the engine's observers (source → target).
	Observers []Observer
}

// Observer is an observer of a function: each call of Source (that its
// filters match) invokes Target.
type Observer struct {
	ID       string
	Source   string
	Target   string
	State    string // pending, active, suspended, error, disposed
	Reason   string // why it is not active
	Fires    uint64
	InFlight int
	Dropped  uint64
	Owner    string // the observing worker's id
}

// HeldCall is a call stopped at a breakpoint.
type HeldCall struct {
	HoldID       string
	InvocationID string
	FunctionID   string
	Caller       string // worker id; "" for the engine's own calls
	Trigger      string
	Data         json.RawMessage
	HeldAt       time.Time
	Deadline     time.Time // when it times out if nobody decides
}

// Worker is a connected worker, or an in-process one (Internal).
type Worker struct {
	ID          string
	Name        string
	Runtime     string
	Version     string
	PID         int
	Status      string // connected, busy, draining, available (in-process)
	Draining    bool
	Internal    bool
	ConnectedAt time.Time
	InFlight    int64
	Functions   []string
	Engine      string // in a cluster: the engine it is connected to
	Namespace   string // "" or "default" unless the worker declared one
}

// Function is a registered function id.
type Function struct {
	ID          string
	Description string
	Workers     []string // worker names, one per registration
	WorkerIDs   []string // ids of the remote workers serving it
	Internal    bool
	Engines     []string // in a cluster: the engines serving it
	// Namespace is the namespace the id is registered in. The TUI keys
	// functions by id: the same id in two namespaces is one row naming
	// both.
	Namespace string
}

// Trigger is a binding of a function to a trigger type.
type Trigger struct {
	ID         string
	Type       string
	FunctionID string
	Worker     string // owner's name; "" for ownerless bindings
	// WorkerID is the owner's id: its name may arrive after the binding
	// (the Node and Go SDKs register before they send their name).
	WorkerID string
	Config   json.RawMessage
	Active   bool
}

// Process is a worker process the exec module manages.
type Process struct {
	Worker    string
	Status    string // one of the event.Process* statuses
	PID       int
	Restarts  int
	Reloads   int
	ExitCode  int
	Error     string
	LastLines []string
	Since     time.Time // when the serving process started (zero: unknown)
}

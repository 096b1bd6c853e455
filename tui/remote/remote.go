// Package remote is a tui.Source over the engine's own protocol: the TUI
// attached to a running engine (iii tui --address) as a WebSocket client
// with the Go SDK. Events come from an engine::events binding to a
// function of this connection, the registries from engine::snapshot, and
// traces, logs and breakpoints from the engine's query functions. Process
// control is not available remotely; calls that change the engine
// (invoke, breakpoints, fire now) need AllowInvoke.
package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/watch"
	"github.com/iii-workbench/iii/sdk"
	"github.com/iii-workbench/iii/tui"
)

// Options configure Dial.
type Options struct {
	// URL is the engine's worker WebSocket (ws://host:49134).
	URL string
	// Token is sent as Authorization: Bearer, checked by the engine's
	// auth like any worker's.
	Token string
	// AllowInvoke lets the user call functions, set breakpoints and fire
	// triggers; without it the source is read-only.
	AllowInvoke bool
	// Version is shown in the header.
	Version string
	Logger  *slog.Logger
	// Name is the connection's worker name (tui.CLIClientName by
	// default, which the views leave out).
	Name string
	// BatchMS is the engine's batching window for events (default 100).
	BatchMS int
}

// queryTimeout bounds Snapshot.
const queryTimeout = 10 * time.Second

// Source is a tui.Source over a worker connection.
type Source struct {
	w    *sdk.Worker
	opts Options
	fn   string // the function events are delivered to

	mu   sync.Mutex
	sub  *subscription
	last tui.Snapshot // answered when a snapshot query fails
}

var _ tui.Source = (*Source)(nil)

// Dial connects to the engine. Close ends the session, which releases
// the breakpoints it set.
func Dial(ctx context.Context, opts Options) (*Source, error) {
	if opts.Name == "" {
		opts.Name = tui.CLIClientName
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	so := []sdk.Option{sdk.WithName(opts.Name), sdk.WithLogger(opts.Logger), sdk.WithTelemetry(false)}
	if opts.Token != "" {
		so = append(so, sdk.WithBearerToken(opts.Token))
	}
	w, err := sdk.Connect(ctx, opts.URL, so...)
	if err != nil {
		return nil, fmt.Errorf("attach to %s: %w", opts.URL, err)
	}
	return &Source{w: w, opts: opts, fn: FunctionPrefix + uuid.NewString() + "::events"}, nil
}

// FunctionPrefix starts the id of the function an attached TUI receives
// events with; the views leave such functions out.
const FunctionPrefix = tui.CLIClientName + "::"

// Close ends the connection.
func (s *Source) Close(ctx context.Context) error { return s.w.Close(ctx) }

// Info names the engine's address.
func (s *Source) Info() tui.Info {
	return tui.Info{URL: s.opts.URL, Version: s.opts.Version, Attached: true, ReadOnly: !s.opts.AllowInvoke}
}

// Subscribe binds the connection's events function to engine::events.
// One subscription per source; a second call returns the first.
func (s *Source) Subscribe(buffer int) tui.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sub != nil {
		return s.sub
	}
	sub := &subscription{src: s, ch: make(chan event.Event, max(buffer, 1))}
	s.sub = sub
	err := s.w.RegisterFunction(s.fn, sub.deliver, sdk.WithDescription("events of iii tui --address"))
	if err == nil {
		sub.trigger, err = s.w.RegisterTrigger(sdk.Trigger{Type: watch.TriggerType, FunctionID: s.fn,
			Config: watch.Config{Buffer: min(max(buffer, 1), watch.MaxBuffer), BatchMS: s.opts.BatchMS}})
	}
	if err != nil {
		// The views show what the snapshot has; drops keep resyncing it.
		s.opts.Logger.Warn("event subscription failed", "error", err)
		sub.lost.Add(1)
	}
	return sub
}

// Snapshot queries engine::snapshot.
func (s *Source) Snapshot() tui.Snapshot {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	raw, err := s.w.Trigger(ctx, sdk.TriggerRequest{FunctionID: watch.FnSnapshot})
	var ws watch.Snapshot
	if err == nil {
		err = json.Unmarshal(raw, &ws)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.opts.Logger.Warn("snapshot failed", "error", err)
		return s.last
	}
	s.last = s.strip(Convert(ws))
	return s.last
}

// strip leaves out this connection's own function and binding.
func (s *Source) strip(snap tui.Snapshot) tui.Snapshot {
	snap.Functions = dropFunc(snap.Functions, func(f tui.Function) bool { return strings.HasPrefix(f.ID, FunctionPrefix) })
	snap.Triggers = dropFunc(snap.Triggers, func(t tui.Trigger) bool { return strings.HasPrefix(t.FunctionID, FunctionPrefix) })
	return snap
}

func dropFunc[T any](in []T, drop func(T) bool) []T {
	out := in[:0:0]
	for _, v := range in {
		if !drop(v) {
			out = append(out, v)
		}
	}
	return out
}

// Convert maps engine::snapshot's answer to the TUI's snapshot (without
// processes, which only iii dev knows).
func Convert(ws watch.Snapshot) tui.Snapshot {
	out := tui.Snapshot{Engine: ws.Engine, Peers: ws.Peers}
	for _, w := range ws.Workers {
		out.Workers = append(out.Workers, tui.Worker{ID: w.ID, Name: w.Name, Runtime: w.Runtime, Version: w.Version,
			PID: w.PID, Status: w.Status, Draining: w.Draining, Internal: w.Internal, ConnectedAt: w.ConnectedAt,
			InFlight: w.InFlight, Functions: w.Functions, Engine: w.Engine, Namespace: w.Namespace})
	}
	for _, f := range ws.Functions {
		out.Functions = append(out.Functions, tui.Function{ID: f.ID, Description: f.Description, Workers: f.Workers,
			WorkerIDs: f.WorkerIDs, Internal: f.Internal, Engines: f.Engines, Namespace: f.Namespace})
	}
	for _, t := range ws.Triggers {
		out.Triggers = append(out.Triggers, tui.Trigger{ID: t.ID, Type: t.Type, FunctionID: t.FunctionID,
			Worker: t.Worker, WorkerID: t.WorkerID, Config: t.Config, Active: t.Active})
	}
	for _, b := range ws.Breaks {
		out.Breakpoints = append(out.Breakpoints, b.FunctionID)
	}
	for _, o := range ws.Observers {
		out.Observers = append(out.Observers, tui.Observer{ID: o.ID, Source: o.Source, Target: o.Target, State: o.State,
			Reason: o.Reason, Fires: o.Fires, InFlight: o.InFlight, Dropped: o.Dropped, Owner: o.Owner})
	}
	for _, h := range ws.Held {
		out.Held = append(out.Held, tui.HeldCall{HoldID: h.HoldID, InvocationID: h.InvocationID, FunctionID: h.FunctionID,
			Caller: h.Caller, Trigger: h.Trigger, Data: h.Data, HeldAt: h.HeldAt, Deadline: h.Deadline})
	}
	return out
}

// Invoke calls a function for the user; ErrReadOnly without AllowInvoke.
func (s *Source) Invoke(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error) {
	if !s.opts.AllowInvoke {
		return nil, tui.ErrReadOnly
	}
	return s.call(ctx, functionID, data)
}

// Query calls a function for the TUI's own reads.
func (s *Source) Query(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error) {
	return s.call(ctx, functionID, data)
}

// Control calls a function that changes the engine; ErrReadOnly without
// AllowInvoke.
func (s *Source) Control(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error) {
	if !s.opts.AllowInvoke {
		return nil, tui.ErrReadOnly
	}
	return s.call(ctx, functionID, data)
}

func (s *Source) call(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error) {
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	timeout := time.Duration(0)
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	return s.w.Trigger(ctx, sdk.TriggerRequest{FunctionID: functionID, Payload: data, Timeout: timeout})
}

// ErrNoProcessControl is Restart's answer: processes are iii dev's.
var ErrNoProcessControl = errors.New("restarting workers needs iii dev on the engine's machine; an attached TUI cannot")

// Restart is not available remotely.
func (s *Source) Restart(context.Context, string) error { return ErrNoProcessControl }

// queryFunctions are the functions the TUI calls for itself: their calls
// by this connection are labelled tui.TriggerQuery so the views leave
// them out, as iii dev's in-process queries are.
func isQuery(fn string) bool {
	return fn == watch.FnSnapshot || fn == tui.FnTracesTree || fn == tui.FnLogsList ||
		strings.HasPrefix(fn, "engine::breakpoints::") || strings.HasPrefix(fn, FunctionPrefix)
}

// subscription receives the batches the engine delivers.
type subscription struct {
	src     *Source
	ch      chan event.Event
	trigger *sdk.TriggerHandle

	mu      sync.Mutex
	seq     uint64 // last batch seen
	remote  uint64 // the engine's drop count at the last batch
	lost    atomic.Uint64
	closed  atomic.Bool
	dropped atomic.Uint64 // remote + lost, what Dropped reports
}

func (sub *subscription) C() <-chan event.Event { return sub.ch }

// Dropped counts events the engine dropped for this subscription, events
// that did not fit the local buffer, and batches missed across a
// reconnect; the TUI resyncs when it grows.
func (sub *subscription) Dropped() uint64 { return sub.dropped.Load() + sub.lost.Load() }

// Close ends the binding; the connection stays for the caller to close.
func (sub *subscription) Close() {
	if sub.closed.Swap(true) {
		return
	}
	if sub.trigger != nil {
		sub.trigger.Unregister()
	}
}

// deliver is the events function.
func (sub *subscription) deliver(_ context.Context, in json.RawMessage) (any, error) {
	return sub.deliverAs(in, sub.src.w.ID())
}

// deliverAs takes a batch for the connection self.
func (sub *subscription) deliverAs(in json.RawMessage, self string) (any, error) {
	var b watch.Batch
	if err := json.Unmarshal(in, &b); err != nil {
		return nil, fmt.Errorf("event batch: %w", err)
	}
	if sub.closed.Load() {
		return nil, nil
	}
	sub.mu.Lock()
	if b.Seq <= sub.seq {
		// A new subscription after a reconnect: what happened in between
		// is only in a snapshot.
		sub.lost.Add(1)
		sub.remote = 0
	}
	sub.seq = b.Seq
	if b.Dropped > sub.remote {
		sub.dropped.Add(b.Dropped - sub.remote)
		sub.remote = b.Dropped
	}
	sub.mu.Unlock()
	for _, env := range b.Events {
		ev, err := watch.Decode(env)
		if err != nil {
			continue // a kind this binary does not know
		}
		ev, keep := relabel(ev, self)
		if !keep {
			continue
		}
		select {
		case sub.ch <- ev:
		default:
			sub.lost.Add(1)
		}
	}
	return nil, nil
}

// relabel marks this connection's own calls (queries as tui.TriggerQuery,
// the rest as tui.TriggerUser) and leaves out its events function.
func relabel(ev event.Event, self string) (event.Event, bool) {
	switch e := ev.(type) {
	case event.InvocationStarted:
		if e.CallerWorkerID == self && self != "" {
			e.Trigger = tui.TriggerUser
			if isQuery(e.FunctionID) {
				e.Trigger = tui.TriggerQuery
			}
		}
		return e, true
	case event.InvocationFinished:
		if e.CallerWorkerID == self && self != "" {
			e.Trigger = tui.TriggerUser
			if isQuery(e.FunctionID) {
				e.Trigger = tui.TriggerQuery
			}
		}
		return e, true
	case event.FunctionRegistered:
		return e, !strings.HasPrefix(e.FunctionID, FunctionPrefix)
	case event.FunctionUnregistered:
		return e, !strings.HasPrefix(e.FunctionID, FunctionPrefix)
	case event.TriggerRegistered:
		return e, !strings.HasPrefix(e.FunctionID, FunctionPrefix)
	case event.TriggerUnregistered:
		return e, !strings.HasPrefix(e.FunctionID, FunctionPrefix)
	}
	return ev, true
}

package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/watch"
)

// This file serves the event stream to clients outside the process (iii
// tui --address): the engine::events trigger type, whose bindings each
// own a bus subscription and deliver its events in batches to the bound
// function, and engine::snapshot to resync from. See package watch for
// the wire form.

// deliveryTimeout bounds one batch delivery: a subscriber that does not
// answer in time misses the batch (its events count as dropped).
const deliveryTimeout = 30 * time.Second

// watchers is the provider of engine::events.
type watchers struct {
	e  *Engine
	mu sync.Mutex
	m  map[string]*watcher // by binding id
}

// watcher delivers one subscription to one function.
type watcher struct {
	t      Trigger
	cfg    watch.Config
	sub    *event.Subscription
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *Engine) registerWatch() error {
	w := &watchers{e: e, m: map[string]*watcher{}}
	if err := e.RegisterTriggerType(BuiltinWorker, TriggerType{ID: watch.TriggerType,
		Description: "Streams the engine's events to the bound function in batches (iii tui --address)", Provider: w}); err != nil {
		return err
	}
	return e.RegisterFunction(BuiltinWorker, Function{ID: watch.FnSnapshot,
		Description: "Copy the registries and held calls (what an engine::events subscriber resyncs from)", Handler: e.fnSnapshot})
}

// RegisterTrigger starts a subscription for the binding.
func (ws *watchers) RegisterTrigger(_ context.Context, t Trigger) error {
	var cfg watch.Config
	if len(t.Config) > 0 && string(t.Config) != "null" {
		if err := json.Unmarshal(t.Config, &cfg); err != nil {
			return fmt.Errorf("%s config: %w", watch.TriggerType, err)
		}
	}
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return fmt.Errorf("%s config: %w", watch.TriggerType, err)
	}
	e := ws.e
	ctx, cancel := context.WithCancel(e.ctx)
	w := &watcher{t: t, cfg: cfg, sub: e.bus.Subscribe(cfg.Buffer), cancel: cancel, done: make(chan struct{})}
	ws.mu.Lock()
	old := ws.m[t.ID]
	ws.m[t.ID] = w
	ws.mu.Unlock()
	if old != nil {
		old.stop()
	}
	// Exits when the binding goes (stop) or the engine shuts down.
	if !e.group.Go(func() { defer close(w.done); w.run(ctx, e) }) {
		w.sub.Close()
		cancel()
		close(w.done)
		return ErrEngineClosed
	}
	return nil
}

// UnregisterTrigger ends the binding's subscription.
func (ws *watchers) UnregisterTrigger(_ context.Context, t Trigger) error {
	ws.mu.Lock()
	w := ws.m[t.ID]
	delete(ws.m, t.ID)
	ws.mu.Unlock()
	if w != nil {
		w.stop()
	}
	return nil
}

func (w *watcher) stop() {
	w.cancel()
	w.sub.Close()
	<-w.done
}

// run gathers events for cfg.BatchMS after the first one, then delivers
// them and waits for the answer: while a delivery is under way events
// wait in the subscription's buffer, and beyond it they are dropped and
// counted, so a slow subscriber never slows the engine.
func (w *watcher) run(ctx context.Context, e *Engine) {
	var seq, lost uint64
	window := time.Duration(w.cfg.BatchMS) * time.Millisecond
	for {
		var batch []watch.Envelope
		size := 0
		add := func(ev event.Event) {
			if skipWatched(ev) {
				return
			}
			env, err := watch.Encode(ev)
			if err != nil {
				lost++
				return
			}
			if len(env.Event) > w.cfg.MaxBatchBytes {
				env = slim(ev)
			}
			batch = append(batch, env)
			size += len(env.Event)
		}
		select {
		case ev := <-w.sub.C():
			add(ev)
		case <-ctx.Done():
			return
		}
		timer := time.NewTimer(window)
	gather:
		for size < w.cfg.MaxBatchBytes {
			select {
			case ev := <-w.sub.C():
				add(ev)
			case <-timer.C:
				break gather
			case <-ctx.Done():
				timer.Stop()
				return
			}
		}
		timer.Stop()
		if len(batch) == 0 {
			continue
		}
		seq++
		data, err := json.Marshal(watch.Batch{Seq: seq, Dropped: w.sub.Dropped() + lost, Events: batch})
		if err != nil {
			lost += uint64(len(batch))
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, deliveryTimeout)
		_, err = e.Invoke(dctx, Request{FunctionID: w.t.FunctionID, Data: data, Trigger: watch.DeliveryKind})
		cancel()
		if err != nil && ctx.Err() == nil {
			lost += uint64(len(batch))
			e.log.Debug("event delivery failed", "trigger_id", w.t.ID, "function_id", w.t.FunctionID, "error", err)
		}
	}
}

// skipWatched leaves out the calls that deliver batches: each delivery
// would otherwise be an event of the next one.
func skipWatched(ev event.Event) bool {
	switch ev := ev.(type) {
	case event.InvocationStarted:
		return ev.Trigger == watch.DeliveryKind
	case event.InvocationFinished:
		return ev.Trigger == watch.DeliveryKind
	}
	return false
}

// slim is an event too large for a batch without its payload and result.
func slim(ev event.Event) watch.Envelope {
	switch v := ev.(type) {
	case event.InvocationStarted:
		v.Data = nil
		ev = v
	case event.InvocationFinished:
		v.Result = nil
		ev = v
	case event.CallHeld:
		v.Data = nil
		ev = v
	}
	env, _ := watch.Encode(ev)
	return env
}

// fnSnapshot is engine::snapshot.
func (e *Engine) fnSnapshot(_ context.Context, _ *Call) (json.RawMessage, error) {
	out := watch.Snapshot{Workers: []watch.Worker{}, Functions: []watch.Function{}, Triggers: []watch.Trigger{},
		Observers: []watch.Observer{}}
	if v := e.clusterView(); v != nil {
		out.Engine = v.EngineName()
		if p, ok := v.(interface{ Peers() []string }); ok {
			out.Peers = p.Peers()
		}
	}
	// One copy of the registries, so a worker and its functions agree.
	snap := e.Snapshot()
	for _, w := range e.clusterWorkers(snap.Workers) {
		out.Workers = append(out.Workers, watch.Worker{ID: w.ID, Name: w.Name, Runtime: w.Runtime, Version: w.Version,
			PID: w.PID, Status: w.Status, Draining: w.Draining, Internal: w.Internal, ConnectedAt: w.ConnectedAt,
			InFlight: w.ActiveInvocations, Functions: slices.Clone(w.Functions), Engine: w.Engine,
			Namespace: w.Namespace})
	}
	for _, f := range e.clusterFunctions(snap.Functions) {
		out.Functions = append(out.Functions, watch.Function{ID: f.ID, Description: f.Description,
			Workers: f.Workers, WorkerIDs: f.WorkerIDs, Internal: f.Internal, Engines: f.Engines, Namespace: f.Namespace})
	}
	for _, o := range snap.Observers {
		reason := ""
		if o.Reason != nil {
			reason = o.Reason.Code + ": " + o.Reason.Message
		}
		out.Observers = append(out.Observers, watch.Observer{ID: o.ID, Source: o.FunctionID, Target: o.Target,
			State: o.State, Reason: reason, Fires: o.Fires, InFlight: o.InFlight, Dropped: o.Dropped, Owner: o.WorkerID})
	}
	for _, t := range snap.Triggers {
		out.Triggers = append(out.Triggers, watch.Trigger{ID: t.ID, Type: t.Type, FunctionID: t.FunctionID,
			Worker: t.Worker, WorkerID: t.OwnerWorker, Config: t.Config, Active: t.Active})
	}
	out.Breaks, out.Held = e.breaks.list()
	return marshal(out)
}

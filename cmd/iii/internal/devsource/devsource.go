// Package devsource adapts a running devserver to the TUI's Source: the
// engine's event bus and snapshot, in-process calls, the exec module's
// processes and the listeners of the modules, found by interface.
package devsource

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/tui"
)

// Source is a tui.Source over a devserver.
type Source struct {
	srv     *devserver.Server
	version string
}

var _ tui.Source = (*Source)(nil)

// New adapts srv. version is shown in the header.
func New(srv *devserver.Server, version string) *Source {
	return &Source{srv: srv, version: version}
}

// Module capabilities the adapter looks for.
type (
	addrer        interface{ Addr() string }
	metricsAddrer interface{ MetricsAddr() string }
	restarter     interface{ Restart(name string) error }
)

// Info names the worker URL, the module listeners and the Redis mode.
func (s *Source) Info() tui.Info {
	info := tui.Info{URL: s.srv.URL(), Redis: s.srv.RedisMode(), Version: s.version}
	set := s.srv.Modules()
	if set == nil {
		return info
	}
	info.Modules = set.IDs()
	for _, id := range info.Modules {
		m, _ := set.Get(id)
		if a, ok := m.(addrer); ok && a.Addr() != "" {
			info.Endpoints = append(info.Endpoints, tui.Endpoint{Name: id, Addr: a.Addr()})
		}
		if a, ok := m.(metricsAddrer); ok && a.MetricsAddr() != "" {
			info.Endpoints = append(info.Endpoints, tui.Endpoint{Name: "metrics", Addr: a.MetricsAddr()})
		}
	}
	return info
}

// Subscribe subscribes to the engine's event bus.
func (s *Source) Subscribe(buffer int) tui.Subscription {
	return s.srv.Engine().Events().Subscribe(buffer)
}

// Snapshot converts the engine's snapshot and the exec module's status.
func (s *Source) Snapshot() tui.Snapshot {
	snap := s.srv.Engine().Snapshot()
	var out tui.Snapshot
	for _, w := range snap.Workers {
		out.Workers = append(out.Workers, tui.Worker{
			ID: w.ID, Name: w.Name, Runtime: w.Runtime, Version: w.Version, PID: w.PID, Status: w.Status,
			Draining: w.Draining, Internal: w.Internal, ConnectedAt: w.ConnectedAt, InFlight: w.ActiveInvocations,
			Functions: slices.Clone(w.Functions),
		})
	}
	for _, f := range snap.Functions {
		out.Functions = append(out.Functions, tui.Function{
			ID: f.ID, Description: f.Description, Workers: slices.Clone(f.Workers),
			WorkerIDs: slices.Clone(f.WorkerIDs), Internal: f.Internal,
		})
	}
	for _, t := range snap.Triggers {
		out.Triggers = append(out.Triggers, tui.Trigger{
			ID: t.ID, Type: t.Type, FunctionID: t.FunctionID, Worker: t.Worker, WorkerID: t.OwnerWorker,
			Config: slices.Clone(t.Config), Active: t.Active,
		})
	}
	out.Processes = s.processes()
	return out
}

// Invoke calls a function for the user.
func (s *Source) Invoke(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error) {
	return s.srv.Engine().Invoke(ctx, engine.Request{FunctionID: functionID, Data: data, Trigger: tui.TriggerUser})
}

// Query calls a function for the TUI's own reads.
func (s *Source) Query(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error) {
	return s.srv.Engine().Invoke(ctx, engine.Request{FunctionID: functionID, Data: data, Trigger: tui.TriggerQuery})
}

// Restart asks the exec module to restart a worker.
func (s *Source) Restart(_ context.Context, worker string) error {
	if set := s.srv.Modules(); set != nil {
		if m, ok := set.Get(config.ModuleExec); ok {
			if r, ok := m.(restarter); ok {
				return r.Restart(worker)
			}
		}
	}
	return tui.ErrRestartUnsupported
}

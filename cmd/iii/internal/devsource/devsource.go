// Package devsource adapts a running devserver to the TUI's Source: the
// engine's event bus and snapshot, in-process calls, the exec module's
// processes and the listeners of the modules, found by interface.
package devsource

import (
	"context"
	"encoding/json"
	"time"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/watch"
	"github.com/iii-workbench/iii/tui"
	"github.com/iii-workbench/iii/tui/remote"
)

// snapshotTimeout bounds the in-process snapshot query.
const snapshotTimeout = 10 * time.Second

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

// Subscribe subscribes to the engine's event bus. The first call takes
// the subscription the server opened before its modules started (when
// started with an EventBuffer), so a worker's first lines are in it.
func (s *Source) Subscribe(buffer int) tui.Subscription {
	if sub := s.srv.TakeEvents(); sub != nil {
		return sub
	}
	return s.srv.Engine().Events().Subscribe(buffer)
}

// Snapshot is engine::snapshot's answer (the registries, in a cluster
// every engine's, and the held calls) and the exec module's processes.
func (s *Source) Snapshot() tui.Snapshot {
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	var out tui.Snapshot
	raw, err := s.srv.Engine().Invoke(ctx, engine.Request{FunctionID: watch.FnSnapshot, Trigger: tui.TriggerQuery})
	var ws watch.Snapshot
	if err == nil && json.Unmarshal(raw, &ws) == nil {
		out = remote.Convert(ws)
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

// Control calls a function for the TUI (breakpoints, fire now).
func (s *Source) Control(ctx context.Context, functionID string, data json.RawMessage) (json.RawMessage, error) {
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

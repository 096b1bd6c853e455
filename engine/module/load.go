package module

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/iii-workbench/iii/engine/config"
)

// ErrModuleUnknown is returned for a config entry naming a module that is
// not built into this binary.
var ErrModuleUnknown = errors.New("module: not built into this binary")

// Set is a started group of modules.
type Set struct {
	started []Module
}

// Load constructs, configures, provisions, validates and starts the modules
// of entries, in order. base is copied for each module with a logger tagged
// with the module's ID. On any failure the modules already started are
// stopped and the error names the module (and its line in config.yaml).
func Load(ctx context.Context, entries []config.Module, base Host) (*Set, error) {
	type loaded struct {
		m    Module
		host *Host
	}
	var ready []loaded
	s := &Set{}
	for i := range entries {
		e := &entries[i]
		info, ok := Lookup(e.ID)
		if !ok {
			return nil, s.abort(ctx, fmt.Errorf("%w: %s (line %d)", ErrModuleUnknown, e.ID, e.Line))
		}
		m := info.New()
		if err := e.Decode(m); err != nil {
			return nil, s.abort(ctx, err)
		}
		h := base
		if h.Logger != nil {
			h.Logger = h.Logger.With("module", e.ID)
		}
		if p, ok := m.(Provisioner); ok {
			if err := p.Provision(ctx, &h); err != nil {
				err = fmt.Errorf("module %s: provision: %w", e.ID, err)
				return nil, s.abort(ctx, errors.Join(err, stopProvisioned(ctx, m)))
			}
		}
		if v, ok := m.(Validator); ok {
			if err := v.Validate(); err != nil {
				err = fmt.Errorf("module %s: invalid config: %w", e.ID, err)
				if e.Line > 0 {
					err = fmt.Errorf("%s:%d: %w", fileOf(e), e.Line, err)
				}
				return nil, s.abort(ctx, errors.Join(err, stopProvisioned(ctx, m)))
			}
		}
		ready = append(ready, loaded{m, &h})
	}
	for i, l := range ready {
		if err := l.m.Start(ctx, l.host); err != nil {
			var unstarted error
			for _, r := range ready[i:] {
				unstarted = errors.Join(unstarted, stopProvisioned(ctx, r.m))
			}
			return nil, s.abort(ctx, errors.Join(fmt.Errorf("module %s: start: %w", l.m.ID(), err), unstarted))
		}
		s.started = append(s.started, l.m)
	}
	return s, nil
}

// stopProvisioned releases what Provision acquired for a module that never
// started, whether Provision, Validate or another module's Start failed
// (caddy's Cleanup); Stop must tolerate being called without Start and
// after a partial Provision.
func stopProvisioned(ctx context.Context, m Module) error {
	if _, ok := m.(Provisioner); !ok {
		return nil
	}
	return m.Stop(ctx)
}

func fileOf(e *config.Module) string {
	if f := e.File(); f != "" {
		return f
	}
	return "config.yaml"
}

func (s *Set) abort(ctx context.Context, err error) error {
	return errors.Join(err, s.Stop(ctx))
}

// Stop stops the started modules in reverse start order, under ctx's
// deadline: a module started later may use one started earlier (an HTTP
// route calling state::get), so it goes first.
func (s *Set) Stop(ctx context.Context) error {
	if s == nil {
		return nil
	}
	var errs []error
	for _, m := range slices.Backward(s.started) {
		if err := m.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("module %s: stop: %w", m.ID(), err))
		}
	}
	s.started = nil
	return errors.Join(errs...)
}

// IDs lists the started modules' IDs in start order.
func (s *Set) IDs() []string {
	ids := make([]string, len(s.started))
	for i, m := range s.started {
		ids[i] = m.ID()
	}
	return ids
}

// Get returns the started module with this ID.
func (s *Set) Get(id string) (Module, bool) {
	for _, m := range s.started {
		if m.ID() == id {
			return m, true
		}
	}
	return nil, false
}

package devsource

import (
	"slices"

	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/modules/exec"
	"github.com/iii-workbench/iii/tui"
)

// statuser is the exec module's status API.
type statuser interface{ Status() []exec.WorkerStatus }

var _ statuser = (*exec.Module)(nil)

// processes reports the exec module's workers; nil without one (the TUI
// then follows ProcessChanged events).
func (s *Source) processes() []tui.Process {
	set := s.srv.Modules()
	if set == nil {
		return nil
	}
	m, ok := set.Get(config.ModuleExec)
	if !ok {
		return nil
	}
	st, ok := m.(statuser)
	if !ok {
		return nil
	}
	out := []tui.Process{}
	for _, w := range st.Status() {
		out = append(out, tui.Process{
			Worker: w.Name, Status: w.Status, PID: w.PID, Restarts: w.Restarts, Reloads: w.Reloads,
			ExitCode: w.ExitCode, Error: w.Error, LastLines: slices.Clone(w.LastLines), Since: w.StartedAt,
		})
	}
	return out
}

package tui

import (
	"context"
	"errors"

	tea "charm.land/bubbletea/v2"
)

// Run shows the TUI on the terminal until the user quits or ctx ends
// (which is not an error). progOpts are passed to bubbletea (input and
// output for tests; the terminal by default).
func Run(ctx context.Context, src Source, opts Options, progOpts ...tea.ProgramOption) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m := New(ctx, src, opts)
	defer m.Close()
	p := tea.NewProgram(m, append([]tea.ProgramOption{tea.WithContext(ctx)}, progOpts...)...)
	_, err := p.Run()
	if err != nil && ctx.Err() != nil && errors.Is(err, tea.ErrProgramKilled) {
		return nil
	}
	return err
}

package devsource

import "github.com/iii-workbench/iii/tui"

// processes reports the exec module's workers; nil without one (the TUI
// then follows ProcessChanged events).
func (s *Source) processes() []tui.Process { return nil }

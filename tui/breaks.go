package tui

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/iii-workbench/iii/engine/watch"
)

// The Breakpoints view (7): calls held at breakpoints, each with its
// payload and the time left before its deadline. b on a function (in the
// Functions or Invocations view) sets or clears its breakpoint; here c
// continues the selected call, e edits its payload first, x fails it, d
// drops it and B clears every breakpoint. All go through the engine's
// engine::breakpoints::* functions (Source.Control), so they work the
// same attached to a remote engine.

// breaksPage is view 7.
type breaksPage struct{ tablePage }

func (p *breaksPage) ShortHelp() []key.Binding  { return p.m.Keys.Breaks.ShortHelp() }
func (p *breaksPage) FullHelp() [][]key.Binding { return p.m.Keys.Breaks.FullHelp() }

func (p *breaksPage) status() []string {
	if len(p.m.st.breaks) == 0 {
		return []string{p.m.Styles.Dim.Render("no breakpoints")}
	}
	return []string{p.m.Styles.Warn.Render("break on " + strings.Join(p.m.st.breaks, ", "))}
}

func (p *breaksPage) key(msg tea.KeyPressMsg) tea.Cmd {
	m, k := p.m, p.m.Keys.Breaks
	if p.nav(msg) {
		return nil
	}
	if key.Matches(msg, k.ClearAll) {
		return m.control(watch.FnBreakClear, watch.BreakArgs{FunctionIDs: m.st.breaks}, "breakpoints cleared; held calls continue")
	}
	sel, ok := p.selected()
	h, held := m.st.held[sel]
	if !ok || !held {
		return nil
	}
	switch {
	case key.Matches(msg, k.Continue):
		return m.control(watch.FnBreakRelease, watch.Release{HoldID: sel, Action: watch.ActionContinue}, "continued "+h.FunctionID)
	case key.Matches(msg, k.Fail):
		return m.control(watch.FnBreakRelease, watch.Release{HoldID: sel, Action: watch.ActionFail,
			Error: "failed at a breakpoint from iii tui"}, "failed "+h.FunctionID)
	case key.Matches(msg, k.Drop):
		return m.control(watch.FnBreakRelease, watch.Release{HoldID: sel, Action: watch.ActionDrop}, "dropped "+h.FunctionID+": its caller will time out")
	case key.Matches(msg, k.Edit):
		cmd := m.modal.openEditor(h.FunctionID, prettyJSON(withoutEngineFields(h.Data)))
		m.modal.title, m.modal.holdID = "Edit the held call to "+h.FunctionID+" (ctrl+s continues with it)", sel
		return cmd
	case key.Matches(msg, k.Detail):
		m.modal.openDetail("Held call "+h.FunctionID, heldDetail(m.st, h, m.now))
	}
	return nil
}

// heldRows lists the held calls, oldest first.
func heldRows(s *state, now time.Time) []row {
	hs := make([]HeldCall, 0, len(s.held))
	for _, h := range s.held {
		hs = append(hs, h)
	}
	slices.SortFunc(hs, func(a, b HeldCall) int { return a.HeldAt.Compare(b.HeldAt) })
	rows := make([]row, 0, len(hs))
	for _, h := range hs {
		left := h.Deadline.Sub(now)
		tone := toneWarn
		if left < 10*time.Second {
			tone = toneError
		}
		rows = append(rows, row{key: h.HoldID, tone: tone, cells: []string{
			h.FunctionID, heldCaller(s, h), fmtUptime(left), compactJSON(withoutEngineFields(h.Data), triggerConfigWidth),
		}})
	}
	return rows
}

func heldCaller(s *state, h HeldCall) string {
	if h.Caller == "" {
		return dash(h.Trigger)
	}
	if n := s.workerName(h.Caller); n != "" {
		return n
	}
	return shortID(h.Caller)
}

func heldDetail(s *state, h HeldCall, now time.Time) []string {
	lines := []string{
		"hold       " + h.HoldID,
		"call       " + h.InvocationID,
		"function   " + h.FunctionID,
		"caller     " + heldCaller(s, h),
		"held at    " + h.HeldAt.Format("15:04:05.000"),
		"times out  " + h.Deadline.Format("15:04:05.000") + " (in " + fmtUptime(h.Deadline.Sub(now)) + ")",
		"", "payload",
	}
	return append(lines, indent(strings.Split(prettyJSON(h.Data), "\n"))...)
}

// toggleBreak sets or clears the breakpoint on fn.
func (m *Model) toggleBreak(fn string) tea.Cmd {
	if slices.Contains(m.st.breaks, fn) {
		return m.control(watch.FnBreakClear, watch.BreakArgs{FunctionIDs: []string{fn}}, "breakpoint on "+fn+" cleared")
	}
	return m.control(watch.FnBreakSet, watch.BreakArgs{FunctionIDs: []string{fn}}, "breakpoint on "+fn+": its calls wait in view 7")
}

// control calls a function that changes the engine and flashes done, or
// the error.
func (m *Model) control(fn string, args any, done string) tea.Cmd {
	data, err := json.Marshal(args)
	if err != nil {
		return func() tea.Msg { return controlMsg{err: err} }
	}
	ctx, src, timeout := m.ctx, m.src, m.opts.QueryTimeout
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := src.Control(cctx, fn, data)
		return controlMsg{done: done, err: err}
	}
}

package tui

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/iii-workbench/iii/engine/event"
)

// Row builders: pure functions of the state.

// workerRows lists connected workers (merged with the exec module's view
// of their process), then managed processes with no connection (starting,
// crashed, restarting), then in-process workers.
func workerRows(s *state, now time.Time, _ *Styles) []row {
	var rows []row
	connected := map[string]bool{}
	for _, w := range s.sortedWorkers() {
		name := w.name
		if name == "" {
			name = "(" + shortID(w.id) + ")"
		}
		status, restarts, tone := w.status, "-", toneNormal
		if p := s.procs[w.name]; p != nil && !w.internal && (p.PID == w.pid || p.PID == 0 || w.pid == 0) {
			connected[w.name] = true
			restarts = strconv.Itoa(p.Restarts)
			if p.Status != event.ProcessRunning && p.Status != "" {
				status = p.Status
			}
		}
		if w.draining {
			status = "draining"
		}
		pid := "-"
		if w.pid > 0 {
			pid = strconv.Itoa(w.pid)
		}
		uptime := "-"
		if !w.internal && !w.connectedAt.IsZero() {
			uptime = fmtUptime(now.Sub(w.connectedAt))
		}
		switch {
		case w.internal:
			tone = toneDim
		default:
			tone = statusTone(status)
		}
		rows = append(rows, row{key: w.key, tone: tone, cells: []string{
			name, dash(w.runtime), pid, status, strconv.Itoa(len(w.funcs)),
			strconv.FormatInt(w.inFlight, 10), restarts, uptime,
		}})
	}
	// Managed processes without a matching connection.
	var orphans []row
	for _, p := range s.sortedProcs() {
		if connected[p.Worker] {
			continue
		}
		pid := "-"
		if p.PID > 0 {
			pid = strconv.Itoa(p.PID)
		}
		uptime := "-"
		if p.Status == event.ProcessRunning && !p.Since.IsZero() {
			uptime = fmtUptime(now.Sub(p.Since))
		}
		orphans = append(orphans, row{key: "proc:" + p.Worker, tone: statusTone(p.Status), cells: []string{
			p.Worker, "-", pid, dash(p.Status), "0", "0", strconv.Itoa(p.Restarts), uptime,
		}})
	}
	// Keep in-process workers last.
	i := slices.IndexFunc(rows, func(r row) bool { return r.tone == toneDim })
	if i < 0 {
		return append(rows, orphans...)
	}
	return slices.Concat(rows[:i], orphans, rows[i:])
}

func statusTone(status string) int {
	switch status {
	case event.ProcessCrashed, event.ProcessFailed:
		return toneError
	case event.ProcessRestarting, event.ProcessDraining, event.ProcessReloading, event.ProcessStarting:
		return toneWarn
	case event.ProcessStopped:
		return toneDim
	}
	return toneNormal
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// functionRows lists the functions; the engine's own (engine::*) only
// with showEngine.
func functionRows(s *state, showEngine bool) []row {
	funcs := s.sortedFuncs()
	rows := make([]row, 0, len(funcs))
	for _, f := range funcs {
		if !showEngine && isEngineFunction(f.id) {
			continue
		}
		workers := strings.Join(s.funcWorkers(f), ", ")
		tone := toneNormal
		switch {
		case len(f.regs) == 0:
			workers, tone = "(gone)", toneDim
		case f.errors > 0 && f.errors == f.calls:
			tone = toneError
		}
		p50, p99 := "-", "-"
		if f.calls > 0 && f.lat.n > 0 {
			p50, p99 = fmtDuration(f.p50), fmtDuration(f.p99)
		}
		rows = append(rows, row{key: f.id, tone: tone, cells: []string{
			f.id, workers, fmtCount(f.calls), fmtCount(f.errors), p50, p99,
		}})
	}
	return rows
}

func isEngineFunction(id string) bool { return strings.HasPrefix(id, "engine::") }

func triggerRows(s *state, configWidth int) []row {
	ts := s.sortedTriggers()
	rows := make([]row, 0, len(ts))
	for _, t := range ts {
		stateCell, tone := "active", toneNormal
		if !t.Active {
			stateCell, tone = "parked", toneWarn
		}
		rows = append(rows, row{key: t.ID, tone: tone, cells: []string{
			t.Type, t.FunctionID, dash(t.Worker), stateCell, compactJSON(t.Config, max(configWidth, 10)),
		}})
	}
	return rows
}

func invocationRows(s *state, upTo uint64) []row {
	invs := s.recentInvocations(upTo)
	rows := make([]row, 0, len(invs))
	for _, v := range invs {
		tone := toneNormal
		if v.status != event.StatusOK {
			tone = toneError
		}
		rows = append(rows, row{key: v.id, tone: tone, cells: []string{
			v.at.Format("15:04:05.000"), v.functionID, v.caller + " → " + dash(v.target),
			v.trigger, fmtDuration(v.duration), statusCell(v),
		}})
	}
	return rows
}

func statusCell(v invocation) string {
	if v.status == event.StatusOK {
		return "ok"
	}
	if v.errorCode != "" && v.status == event.StatusError {
		return v.errorCode
	}
	return v.status
}

// View renders the whole screen: header, tabs, the body and the footer.
func (m *Model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	v.WindowTitle = "iii dev"
	return v
}

// render is the screen as text, exactly Height lines of Width cells.
func (m *Model) render() string {
	if m.Width <= 0 || m.Height <= 0 {
		return ""
	}
	parts := []string{m.headerLines(), m.tabsLine(), m.body(), m.footer()}
	return strings.Join(parts, "\n")
}

func (m *Model) headerLines() string {
	st, info := m.Styles, m.info
	title := st.Title.Render(" iii dev ")
	var b strings.Builder
	b.WriteString(" " + info.URL)
	for _, e := range info.Endpoints {
		b.WriteString("  " + e.Name + " " + e.Addr)
	}
	if info.Redis != "" {
		b.WriteString("  redis " + info.Redis)
	}
	if info.Version != "" {
		b.WriteString("  " + st.Dim.Render(info.Version))
	}
	line1 := pad(title+st.Header.Render(b.String()), m.Width)

	s := m.st
	rate := s.rates.last(m.now, 20)
	cur := 0
	if len(rate) > 0 {
		cur = rate[len(rate)-1]
	}
	workers, funcs := 0, 0
	for _, w := range s.workers {
		if !w.internal {
			workers++
		}
	}
	for id := range s.funcs {
		if !isEngineFunction(id) {
			funcs++
		}
	}
	line2 := fmt.Sprintf(" workers %d  functions %d  triggers %d  │ %s inv/s %s │ calls %s  errors %s",
		workers, funcs, len(s.triggers), fmtRate(cur), st.Bar.Render(sparkline(rate, 20)),
		fmtCount(s.calls), fmtCount(s.errors))
	if s.errors > 0 {
		line2 = fmt.Sprintf(" workers %d  functions %d  triggers %d  │ %s inv/s %s │ calls %s  %s",
			workers, funcs, len(s.triggers), fmtRate(cur), st.Bar.Render(sparkline(rate, 20)),
			fmtCount(s.calls), st.Error.Render("errors "+fmtCount(s.errors)))
	}
	if s.dropped > 0 {
		line2 += st.Warn.Render(fmt.Sprintf("  │ %s events dropped, resynced", fmtCount(s.dropped)))
	}
	return line1 + "\n" + pad(line2, m.Width)
}

func (m *Model) tabsLine() string {
	st := m.Styles
	var b strings.Builder
	for i, name := range viewNames {
		label := fmt.Sprintf(" %d %s ", i+1, name)
		if viewID(i) == m.view {
			b.WriteString(st.TabActive.Render(label))
		} else {
			b.WriteString(st.TabIdle.Render(label))
		}
	}
	var right []string
	if m.view == viewInvocations && m.paused {
		right = append(right, st.Warn.Render("PAUSED"))
	}
	if m.view == viewLogs {
		right = append(right, m.logs.status())
	}
	if f := m.filters[m.view]; f != "" && !m.filtering {
		right = append(right, st.Key.Render("/"+f))
	}
	left := b.String()
	r := strings.Join(right, "  ")
	gap := m.Width - lipglossWidth(left) - lipglossWidth(r) - 1
	if gap < 1 {
		return pad(left, m.Width)
	}
	return left + strings.Repeat(" ", gap) + r + " "
}

func (m *Model) body() string {
	if m.modal.kind != modalNone {
		return m.modal.render()
	}
	switch m.view {
	case viewLogs:
		return m.logs.render(m.st, m.filters[viewLogs])
	case viewTraces:
		return m.trace.render()
	}
	empty := map[viewID]string{
		viewWorkers:     "no workers connected",
		viewFunctions:   "no functions registered",
		viewTriggers:    "no triggers registered",
		viewInvocations: "no invocations yet",
	}[m.view]
	if !m.ready {
		empty = "loading…"
	}
	if m.filters[m.view] != "" {
		empty = "nothing matches /" + m.filters[m.view]
	}
	return m.tables[m.view].render(m.rows, empty)
}

// footer is the filter prompt, a flash message, or key hints.
func (m *Model) footer() string {
	st := m.Styles
	switch {
	case m.filtering:
		return pad(st.Key.Render("/")+m.filterBuf+"█"+st.Dim.Render("  enter apply · esc clear"), m.Width)
	case m.flash != "":
		if m.flashErr {
			return pad(st.FlashError.Render(" "+m.flash), m.Width)
		}
		return pad(st.Flash.Render(" "+m.flash), m.Width)
	}
	return pad(m.hints(), m.Width)
}

func (m *Model) hints() string {
	k := m.Keys
	var bs []keyHint
	switch m.modal.kind {
	case modalEditor:
		bs = []keyHint{{"ctrl+s", "send"}, {"esc", "close"}}
	case modalReplay:
		bs = []keyHint{{"r", "replay again"}, {"j/k", "scroll"}, {"esc", "close"}}
	case modalDetail, modalHelp:
		bs = []keyHint{{"j/k", "scroll"}, {"esc", "close"}}
	default:
		bs = []keyHint{{"1-6", "views"}, {"j/k", "move"}, {"/", "filter"}}
		switch m.view {
		case viewWorkers:
			bs = append(bs, keyHint{"enter", "detail"}, keyHint{"l", "logs"}, keyHint{"R", "restart"})
		case viewFunctions:
			bs = append(bs, keyHint{"enter", "detail"}, keyHint{"i", "invoke"}, keyHint{"a", "engine fns"})
		case viewTriggers:
			bs = append(bs, keyHint{"enter", "detail"})
		case viewInvocations:
			bs = append(bs, keyHint{"enter", "detail"}, keyHint{"r", "replay"}, keyHint{"i", "invoke"},
				keyHint{"t", "trace"}, keyHint{"space", "pause"})
		case viewTraces:
			bs = append(bs, keyHint{"enter", "span"}, keyHint{"ctrl+r", "reload"})
		case viewLogs:
			bs = append(bs, keyHint{"f", "follow"}, keyHint{"w", "worker"})
		}
		bs = append(bs, keyHint{k.Help.Help().Key, "help"}, keyHint{"q", "quit"})
	}
	parts := make([]string, len(bs))
	for i, h := range bs {
		parts[i] = m.Styles.Key.Render(h.key) + " " + m.Styles.Dim.Render(h.desc)
	}
	return " " + strings.Join(parts, "  ")
}

type keyHint struct{ key, desc string }

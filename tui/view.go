package tui

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/iii-workbench/iii/engine/event"
)

// Row builders: pure functions of the state.

// workerColumns are the Workers view's; with its namespace when some
// worker is outside the default one, and in a cluster with the engine each
// worker is connected to.
func workerColumns(namespaced, cluster bool) []column {
	cols := []column{{title: "NAME", flex: 1, min: 8}}
	if namespaced {
		cols = append(cols, column{title: "NAMESPACE", short: "NS", min: 7})
	}
	if cluster {
		cols = append(cols, column{title: "ENGINE", min: 6})
	}
	return append(cols, []column{{title: "RUNTIME", short: "RT"}, {title: "PID", right: true},
		{title: "STATUS", min: 7}, {title: "FUNCS", short: "FN", right: true}, {title: "IN-FLIGHT", short: "INFL", right: true},
		{title: "RESTARTS", short: "RST", right: true}, {title: "UPTIME", short: "UP", right: true}}...)
}

// functionColumns are the Functions view's; with the namespaces of each
// function when some worker is outside the default one, and in a cluster
// with the engines serving it.
func functionColumns(namespaced, cluster bool) []column {
	cols := []column{{title: "FUNCTION", flex: 3, min: 12}}
	if namespaced {
		cols = append(cols, column{title: "NAMESPACE", short: "NS", min: 7})
	}
	cols = append(cols, column{title: "WORKERS", flex: 1, min: 8})
	if cluster {
		cols = append(cols, column{title: "ENGINES", flex: 1, min: 7})
	}
	return append(cols, []column{{title: "CALLS", right: true},
		{title: "ERRORS", short: "ERR", right: true}, {title: "P50", right: true}, {title: "P99", right: true}}...)
}

// withEngine inserts the engine cell after the first cells when s is
// part of a cluster.
func withEngine(s *state, cells []string, at int, engine string) []string {
	if s.engine == "" {
		return cells
	}
	return slices.Insert(cells, at, dash(engine))
}

// withNamespace inserts the namespace cell after the first cells when
// namespaced.
func withNamespace(namespaced bool, cells []string, at int, ns string) []string {
	if !namespaced {
		return cells
	}
	return slices.Insert(cells, at, ns)
}

// workerRows lists connected workers (merged with the exec module's view
// of their process), then managed processes with no connection (starting,
// crashed, restarting), then in-process workers.
func workerRows(s *state, now time.Time, _ *Styles) []row {
	var rows []row
	connected := map[string]bool{}
	namespaced := s.namespaced()
	for _, w := range s.sortedWorkers() {
		name := w.name
		if name == "" {
			name = "(" + shortID(w.id) + ")"
		}
		status, restarts, tone := w.status, "-", toneNormal
		if p := s.procs[w.name]; p != nil && !w.internal && (p.PID == w.pid || p.PID == 0 || w.pid == 0) {
			connected[w.name] = true
			restarts = strconv.Itoa(processRestarts(p))
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
		engine := w.engine
		if engine == "" && !w.internal {
			engine = s.engine // connected here after the last snapshot
		}
		rows = append(rows, row{key: w.key, tone: tone, cells: withNamespace(namespaced, withEngine(s, []string{
			name, dash(w.runtime), pid, status, strconv.Itoa(len(w.funcs)),
			strconv.FormatInt(w.inFlight, 10), restarts, uptime,
		}, 1, engine), 1, cmp.Or(w.namespace, DefaultNamespace))})
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
		status := dash(p.Status)
		if since, ok := s.statusSince[p.Worker]; ok && p.Status == event.ProcessStarting && now.After(since) {
			// Installing or waiting to register: how long so far.
			status += " " + fmtUptime(now.Sub(since))
		}
		orphans = append(orphans, row{key: "proc:" + p.Worker, tone: statusTone(p.Status), cells: withNamespace(namespaced, withEngine(s, []string{
			p.Worker, "-", pid, status, "0", "0", strconv.Itoa(processRestarts(p)), uptime,
		}, 1, s.engine), 1, "-")})
	}
	// Keep in-process workers last.
	i := slices.IndexFunc(rows, func(r row) bool { return r.tone == toneDim })
	if i < 0 {
		return append(rows, orphans...)
	}
	return slices.Concat(rows[:i], orphans, rows[i:])
}

// processRestarts counts every new process: after a crash, and on a
// reload or an R restart.
func processRestarts(p *Process) int { return p.Restarts + p.Reloads }

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
	namespaced := s.namespaced()
	rows := make([]row, 0, len(funcs))
	for _, f := range funcs {
		if !showEngine && isEngineFunction(f.id) || isClientFunction(f.id) {
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
		engines := strings.Join(f.engines, ", ")
		if engines == "" && len(f.regs) > 0 {
			engines = s.engine
		}
		rows = append(rows, row{key: f.id, tone: tone, cells: withNamespace(namespaced, withEngine(s, []string{
			f.id, workers, fmtCount(f.calls), fmtCount(f.errors), p50, p99,
		}, 2, engines), 1, dash(strings.Join(s.funcNamespaces(f), ", ")))})
	}
	return rows
}

// isEngineFunction: the engine's own functions (engine::*, and
// configuration::*, which the SDKs also address in the default namespace).
func isEngineFunction(id string) bool {
	return strings.HasPrefix(id, "engine::") || strings.HasPrefix(id, "configuration::")
}

// isClientFunction reports a function of iii's own clients (the events
// function of an attached TUI): never listed.
func isClientFunction(id string) bool { return strings.HasPrefix(id, CLIClientName+"::") }

// triggerConfigWidth bounds the CONFIG cell; the table cuts it to its
// column.
const triggerConfigWidth = 160

func triggerRows(s *state, configWidth int) []row {
	ts := s.sortedTriggers()
	rows := make([]row, 0, len(ts))
	for _, t := range ts {
		stateCell, tone := "active", toneNormal
		if !t.Active {
			stateCell, tone = "parked", toneWarn
		}
		worker := t.Worker
		if n := s.workerName(t.WorkerID); n != "" {
			worker = n // named after it registered the binding
		}
		rows = append(rows, row{key: t.ID, tone: tone, cells: []string{
			t.Type, t.FunctionID, dash(worker), stateCell, compactJSON(t.Config, max(configWidth, 10)),
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
	v.WindowTitle = m.title()
	return v
}

// title names the program: iii dev, or iii tui when attached.
func (m *Model) title() string {
	if m.info.Attached {
		return "iii tui"
	}
	return "iii dev"
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
	title := st.Title.Render(" " + m.title() + " ")
	var b strings.Builder
	b.WriteString(" " + info.URL)
	if info.ReadOnly {
		b.WriteString(" " + st.Warn.Render("read-only"))
	}
	if m.st.engine != "" {
		b.WriteString("  cluster: engine " + m.st.engine)
		if len(m.st.peers) > 0 {
			b.WriteString(" + peers " + strings.Join(m.st.peers, ", "))
		}
	}
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

	return line1 + "\n" + m.countsLine()
}

// countsLine is the header's second line. Narrow screens drop the
// sparkline, then shorten the labels; the errors counter always shows.
func (m *Model) countsLine() string {
	st, s := m.Styles, m.st
	rate := s.rates.last(m.now, 20)
	cur := 0
	if len(rate) > 0 {
		cur = rate[len(rate)-1]
	}
	workers, funcs := 0, 0
	for _, w := range s.workers {
		if !w.internal && w.name != CLIClientName {
			workers++
		}
	}
	for id := range s.funcs {
		if !isEngineFunction(id) && !isClientFunction(id) {
			funcs++
		}
	}
	// Managed processes that are not serving: crash loops show even when
	// no worker ever connected.
	down := 0
	for _, p := range s.procs {
		switch p.Status {
		case event.ProcessCrashed, event.ProcessFailed, event.ProcessRestarting:
			down++
		}
	}
	errs := "errors " + fmtCount(s.errors)
	if s.errors > 0 {
		errs = st.Error.Render(errs)
	}
	downCell := ""
	if down > 0 {
		downCell = " " + st.Error.Render(fmt.Sprintf("(%d down)", down))
	}
	dropped := ""
	if s.dropped > 0 {
		dropped = st.Warn.Render(fmt.Sprintf("  │ %s events dropped, resynced", fmtCount(s.dropped)))
	}
	variants := []string{
		fmt.Sprintf(" workers %d%s  functions %d  triggers %d  │ %s inv/s %s │ calls %s  %s%s",
			workers, downCell, funcs, len(s.triggers), fmtRate(cur), st.Bar.Render(sparkline(rate, 20)),
			fmtCount(s.calls), errs, dropped),
		fmt.Sprintf(" workers %d%s  functions %d  triggers %d  │ %s inv/s │ calls %s  %s%s",
			workers, downCell, funcs, len(s.triggers), fmtRate(cur), fmtCount(s.calls), errs, dropped),
		fmt.Sprintf(" wk %d%s  fn %d  tr %d │ %s/s │ calls %s  %s%s",
			workers, downCell, funcs, len(s.triggers), fmtRate(cur), fmtCount(s.calls), errs, dropped),
		fmt.Sprintf(" wk %d%s  calls %s  %s", workers, downCell, fmtCount(s.calls), errs),
	}
	for _, v := range variants {
		if lipglossWidth(v) <= m.Width {
			return pad(v, m.Width)
		}
	}
	return pad(variants[len(variants)-1], m.Width)
}

func (m *Model) tabsLine() string {
	st := m.Styles
	right := m.pages[m.view].status()
	if f := m.filters[m.view]; f != "" && !m.filtering {
		right = append(right, st.Key.Render("/"+f))
	}
	r := strings.Join(right, "  ")
	// Narrow screens shorten the other tabs' names before the status on
	// the right (follow, PAUSED, the filter) is cut.
	var left string
	for _, names := range [][numViews]string{viewNames, viewShortNames, {}} {
		var b strings.Builder
		for i, name := range names {
			if viewID(i) == m.view {
				b.WriteString(st.TabActive.Render(fmt.Sprintf(" %d %s ", i+1, viewNames[i])))
			} else {
				b.WriteString(st.TabIdle.Render(strings.TrimRight(fmt.Sprintf(" %d %s", i+1, name), " ") + " "))
			}
		}
		left = b.String()
		if lipglossWidth(left)+lipglossWidth(r)+2 <= m.Width {
			break
		}
	}
	gap := m.Width - lipglossWidth(left) - lipglossWidth(r) - 1
	if gap < 1 {
		return pad(left, m.Width)
	}
	return left + strings.Repeat(" ", gap) + r + " "
}

// viewShortNames label the inactive tabs on a narrow screen.
var viewShortNames = [numViews]string{"Work", "Func", "Trig", "Inv", "Trace", "Logs", "Brk", "Obs"}

func (m *Model) body() string {
	if m.modal.kind != modalNone {
		return m.modal.render()
	}
	return m.pages[m.view].render()
}

// footer is the filter prompt, a flash message, or key hints.
func (m *Model) footer() string {
	st := m.Styles
	switch {
	case m.filtering:
		var hs []string
		for _, b := range m.Keys.Filter.ShortHelp() {
			hs = append(hs, b.Help().Key+" "+b.Help().Desc)
		}
		return pad(st.Key.Render("/")+m.filterBuf+"█"+st.Dim.Render("  "+strings.Join(hs, " · ")), m.Width)
	case m.flash != "":
		if m.flashErr {
			return pad(st.FlashError.Render(" "+m.flash), m.Width)
		}
		return pad(st.Flash.Render(" "+m.flash), m.Width)
	}
	return pad(m.hints(), m.Width)
}

// hints are the footer's key hints, from the key map: the shared
// moves, the active page's keys, help and quit; an open pane has its own.
func (m *Model) hints() string {
	k := m.Keys
	var bs []keyHint
	hint := func(generic bool, bindings ...key.Binding) {
		for _, b := range bindings {
			if b.Enabled() {
				bs = append(bs, keyHint{key: b.Help().Key, desc: b.Help().Desc, generic: generic})
			}
		}
	}
	switch m.modal.kind {
	case modalEditor:
		hint(false, k.Modal.Send, k.Modal.Close)
	case modalReplay:
		hint(false, k.Modal.Again, k.Modal.Scroll, k.Modal.Close)
	case modalDetail, modalHelp:
		hint(false, k.Modal.ShortHelp()...)
	default:
		hint(true, k.Nav.Move, k.Global.View, k.Global.Filter)
		hint(false, m.pages[m.view].ShortHelp()...)
		hint(false, k.Global.Help, k.Global.Quit)
	}
	render := func(bs []keyHint) string {
		parts := make([]string, len(bs))
		for i, h := range bs {
			parts[i] = m.Styles.Key.Render(h.key) + " " + m.Styles.Dim.Render(h.desc)
		}
		return " " + strings.Join(parts, "  ")
	}
	// Too wide: drop the generic hints first (help lists them), then the
	// view's from the end; help and quit stay.
	for out := render(bs); ; out = render(bs) {
		if lipglossWidth(out) <= m.Width || len(bs) <= 2 {
			return out
		}
		i := slices.IndexFunc(bs, func(h keyHint) bool { return h.generic })
		if i < 0 {
			i = len(bs) - 3
		}
		bs = slices.Delete(bs, i, i+1)
	}
}

type keyHint struct {
	key, desc string
	generic   bool // the same in every view
}

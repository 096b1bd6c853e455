package tui

import (
	"encoding/json"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
)

// page is one tab. The root model handles what every view shares (quit,
// help, switching, the filter line, the detail and editor panes) and
// routes every other key to the active page; the footer's hints and the
// help screen come from the page's key map (help.KeyMap), so a page lists
// exactly the keys it handles.
type page interface {
	help.KeyMap
	// key handles a key press the root did not take.
	key(msg tea.KeyPressMsg) tea.Cmd
	// activate runs when the page becomes the active one.
	activate() tea.Cmd
	// refresh rebuilds what the page shows from the state.
	refresh()
	// render draws the body: exactly its Height lines of Width cells.
	render() string
	// status is shown on the right of the tabs line.
	status() []string
	SetSize(width, height int)
}

// tablePage is the part the table views share: rows built from the state,
// filtered by the view's filter, a selection that stays on its item, and
// the navigation keys.
type tablePage struct {
	m     *Model
	id    viewID
	tbl   *table
	rows  []row
	empty string
	build func() []row
}

func newTablePage(m *Model, id viewID, empty string, cols []column, build func() []row) tablePage {
	return tablePage{m: m, id: id, tbl: newTable(m.Common, cols), empty: empty, build: build}
}

func (p *tablePage) refresh() {
	p.rows = filterRows(p.build(), p.m.filters[p.id])
	p.tbl.sync(p.rows)
}

func (p *tablePage) SetSize(w, h int)  { p.tbl.SetSize(w, h) }
func (p *tablePage) activate() tea.Cmd { return nil }
func (p *tablePage) status() []string  { return nil }

func (p *tablePage) render() string {
	empty := p.empty
	switch {
	case p.m.filters[p.id] != "":
		empty = "nothing matches /" + p.m.filters[p.id]
	case !p.m.ready:
		empty = "loading…"
	}
	return p.tbl.render(p.rows, empty)
}

// nav moves the selection; false when msg is not a move.
func (p *tablePage) nav(msg tea.KeyPressMsg) bool {
	k, t := p.m.Keys.Nav, p.tbl
	switch {
	case key.Matches(msg, k.Up):
		t.move(p.rows, -1)
	case key.Matches(msg, k.Down):
		t.move(p.rows, 1)
	case key.Matches(msg, k.PageUp):
		t.move(p.rows, -t.pageSize())
	case key.Matches(msg, k.PageDown):
		t.move(p.rows, t.pageSize())
	case key.Matches(msg, k.Top):
		t.move(p.rows, -len(p.rows))
	case key.Matches(msg, k.Bottom):
		t.move(p.rows, len(p.rows))
	default:
		return false
	}
	return true
}

// selected is the key of the selected row.
func (p *tablePage) selected() (string, bool) {
	if len(p.rows) == 0 || p.tbl.cursor >= len(p.rows) {
		return "", false
	}
	return p.rows[p.tbl.cursor].key, true
}

// workersPage is view 1: connected workers and managed processes.
type workersPage struct{ tablePage }

func (p *workersPage) ShortHelp() []key.Binding  { return p.m.Keys.Workers.ShortHelp() }
func (p *workersPage) FullHelp() [][]key.Binding { return p.m.Keys.Workers.FullHelp() }

func (p *workersPage) key(msg tea.KeyPressMsg) tea.Cmd {
	m, k := p.m, p.m.Keys.Workers
	sel, ok := p.selected()
	switch {
	case p.nav(msg) || !ok:
	case key.Matches(msg, k.Detail):
		m.modal.openDetail("Worker "+m.workerRowName(sel), workerDetail(m.st, sel, m.now))
	case key.Matches(msg, k.Logs):
		m.logs.pane.worker, m.logs.pane.follow = m.workerRowName(sel), true
		return m.switchView(viewLogs)
	case key.Matches(msg, k.Restart):
		return m.restart(sel)
	}
	return nil
}

// functionsPage is view 2: function ids with call counts and latency.
type functionsPage struct {
	tablePage
	showEngine bool // list engine::* functions too
}

func (p *functionsPage) ShortHelp() []key.Binding  { return p.m.Keys.Functions.ShortHelp() }
func (p *functionsPage) FullHelp() [][]key.Binding { return p.m.Keys.Functions.FullHelp() }

func (p *functionsPage) key(msg tea.KeyPressMsg) tea.Cmd {
	m, k := p.m, p.m.Keys.Functions
	switch {
	case p.nav(msg):
	case key.Matches(msg, k.ShowAll):
		p.showEngine = !p.showEngine
	case key.Matches(msg, k.Detail):
		if sel, ok := p.selected(); ok {
			if f := m.st.funcs[sel]; f != nil {
				m.modal.openDetail("Function "+f.id, functionDetail(m.st, f))
			}
		}
	case key.Matches(msg, k.Invoke):
		if sel, ok := p.selected(); ok {
			return m.openEditor(sel)
		}
	case key.Matches(msg, k.Break):
		if sel, ok := p.selected(); ok {
			return m.toggleBreak(sel)
		}
	}
	return nil
}

// triggersPage is view 3: trigger bindings.
type triggersPage struct{ tablePage }

func (p *triggersPage) ShortHelp() []key.Binding  { return p.m.Keys.Triggers.ShortHelp() }
func (p *triggersPage) FullHelp() [][]key.Binding { return p.m.Keys.Triggers.FullHelp() }

func (p *triggersPage) key(msg tea.KeyPressMsg) tea.Cmd {
	m, k := p.m, p.m.Keys.Triggers
	switch {
	case p.nav(msg):
	case key.Matches(msg, k.Detail):
		if sel, ok := p.selected(); ok {
			if t, ok := m.st.triggers[sel]; ok {
				m.modal.openDetail("Trigger "+t.ID, triggerDetail(t))
			}
		}
	case key.Matches(msg, k.Fire):
		if sel, ok := p.selected(); ok {
			if t, ok := m.st.triggers[sel]; ok {
				return m.fireNow(t)
			}
		}
	}
	return nil
}

// Functions the f key calls.
const (
	FnCronFire     = "engine::cron::fire"  // {trigger_id}
	FnQueueRedrive = "iii::queue::redrive" // {topic}: the dead letters back onto the queue
)

// fireNow runs a cron trigger at once, or re-delivers the dead letters of
// a durable subscription's topic.
func (m *Model) fireNow(t Trigger) tea.Cmd {
	switch t.Type {
	case "cron":
		return m.control(FnCronFire, map[string]string{"trigger_id": t.ID}, "fired "+t.FunctionID+" now")
	case "durable:subscriber", "queue":
		var cfg struct {
			Topic string `json:"topic"`
		}
		if json.Unmarshal(t.Config, &cfg) != nil || cfg.Topic == "" {
			m.setFlash("this queue trigger names no topic to re-deliver", true)
			return nil
		}
		return m.control(FnQueueRedrive, map[string]string{"topic": cfg.Topic}, "dead letters of "+cfg.Topic+" re-delivered")
	}
	m.setFlash("f fires cron triggers and re-delivers a queue topic's dead letters; "+t.Type+" has neither", true)
	return nil
}

// invocationsPage is view 4: the live tail of calls.
type invocationsPage struct {
	tablePage
	paused    bool
	pausedSeq uint64
}

func (p *invocationsPage) ShortHelp() []key.Binding  { return p.m.Keys.Invocations.ShortHelp() }
func (p *invocationsPage) FullHelp() [][]key.Binding { return p.m.Keys.Invocations.FullHelp() }

func (p *invocationsPage) key(msg tea.KeyPressMsg) tea.Cmd {
	m, k := p.m, p.m.Keys.Invocations
	switch {
	case p.nav(msg):
	case key.Matches(msg, k.Pause):
		p.paused, p.pausedSeq = !p.paused, 0
		if p.paused {
			p.pausedSeq = m.st.seq
		}
	case key.Matches(msg, k.Trace):
		return m.switchView(viewTraces)
	case key.Matches(msg, k.Invoke):
		if inv, ok := p.selectedInvocation(); ok {
			return m.openEditor(inv.functionID)
		}
	case key.Matches(msg, k.Break):
		if inv, ok := p.selectedInvocation(); ok {
			return m.toggleBreak(inv.functionID)
		}
	case key.Matches(msg, k.Detail):
		if inv, ok := p.find(); ok {
			m.modal.openDetail("Invocation "+inv.functionID, invocationDetail(inv))
		}
	case key.Matches(msg, k.Replay):
		if inv, ok := p.find(); ok {
			return m.replay(inv)
		}
	}
	return nil
}

// find is the selected row's invocation.
func (p *invocationsPage) find() (invocation, bool) {
	sel, ok := p.selected()
	if !ok {
		return invocation{}, false
	}
	s := p.m.st
	for i := s.inv.len() - 1; i >= 0; i-- {
		if v := s.inv.at(i); v.id == sel {
			return v, true
		}
	}
	return invocation{}, false
}

// selectedInvocation is the selected invocation, or the newest one when
// the view has no selection yet (the Traces view shows its trace).
func (p *invocationsPage) selectedInvocation() (invocation, bool) {
	s := p.m.st
	var newest *invocation
	for i := s.inv.len() - 1; i >= 0; i-- {
		v := s.inv.at(i)
		if v.id == p.tbl.selKey {
			return v, true
		}
		if newest == nil {
			newest = &v
		}
	}
	if newest != nil {
		return *newest, true
	}
	return invocation{}, false
}

func (p *invocationsPage) status() []string {
	st := p.m.Styles
	switch {
	case p.paused:
		return []string{st.Warn.Render("PAUSED")}
	case p.tbl.cursor > 0:
		// New calls still arrive above, but the selection stays put.
		return []string{st.Warn.Render("held · g follows")}
	}
	return []string{st.Dim.Render("live")}
}

// tracesPage is view 5: the waterfall of the selected call's trace.
type tracesPage struct {
	m    *Model
	pane tracePane
}

func (p *tracesPage) ShortHelp() []key.Binding  { return p.m.Keys.Traces.ShortHelp() }
func (p *tracesPage) FullHelp() [][]key.Binding { return p.m.Keys.Traces.FullHelp() }
func (p *tracesPage) SetSize(w, h int)          { p.pane.SetSize(w, h) }
func (p *tracesPage) refresh()                  {}
func (p *tracesPage) render() string            { return p.pane.render() }
func (p *tracesPage) status() []string          { return nil }
func (p *tracesPage) activate() tea.Cmd         { return p.m.loadTrace() }

func (p *tracesPage) key(msg tea.KeyPressMsg) tea.Cmd {
	nav, k := p.m.Keys.Nav, p.m.Keys.Traces
	switch {
	case key.Matches(msg, nav.Up):
		p.pane.move(-1)
	case key.Matches(msg, nav.Down):
		p.pane.move(1)
	case key.Matches(msg, nav.Top):
		p.pane.move(-len(p.pane.spans))
	case key.Matches(msg, nav.Bottom):
		p.pane.move(len(p.pane.spans))
	case key.Matches(msg, k.Span):
		if sp, ok := p.pane.selected(); ok {
			p.m.modal.openDetail("Span "+sp.name, spanDetail(sp))
		}
	case key.Matches(msg, k.Reload):
		p.pane.traceID = ""
		return p.m.loadTrace()
	}
	return nil
}

// logsPage is view 6: the workers' output.
type logsPage struct {
	m    *Model
	pane logPane
}

func (p *logsPage) ShortHelp() []key.Binding  { return p.m.Keys.Logs.ShortHelp() }
func (p *logsPage) FullHelp() [][]key.Binding { return p.m.Keys.Logs.FullHelp() }
func (p *logsPage) SetSize(w, h int)          { p.pane.SetSize(w, h) }
func (p *logsPage) refresh()                  {}
func (p *logsPage) activate() tea.Cmd         { return nil }
func (p *logsPage) status() []string          { return []string{p.pane.status()} }
func (p *logsPage) render() string            { return p.pane.render(p.m.st, p.m.filters[viewLogs]) }

func (p *logsPage) key(msg tea.KeyPressMsg) tea.Cmd {
	nav, k, s, q := p.m.Keys.Nav, p.m.Keys.Logs, p.m.st, p.m.filters[viewLogs]
	switch {
	case key.Matches(msg, nav.Up):
		p.pane.scroll(s, q, -1)
	case key.Matches(msg, nav.Down):
		p.pane.scroll(s, q, 1)
	case key.Matches(msg, nav.PageUp):
		p.pane.scroll(s, q, -p.pane.Height/2)
	case key.Matches(msg, nav.PageDown):
		p.pane.scroll(s, q, p.pane.Height/2)
	case key.Matches(msg, nav.Top):
		p.pane.scroll(s, q, -logRing)
	case key.Matches(msg, nav.Bottom):
		p.pane.follow = true
	case key.Matches(msg, k.Follow):
		p.pane.follow = !p.pane.follow
	case key.Matches(msg, k.Worker):
		p.pane.cycleWorker(s)
	}
	return nil
}

// shownRows are the rows after the filter.
func (p *tablePage) shownRows() []row { return p.rows }

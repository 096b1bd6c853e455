package tui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/watch"
)

// viewID names a tab.
type viewID int

const (
	viewWorkers viewID = iota
	viewFunctions
	viewTriggers
	viewInvocations
	viewTraces
	viewLogs
	viewBreaks
	viewObservers
	numViews
)

var viewNames = [numViews]string{"Workers", "Functions", "Triggers", "Invocations", "Traces", "Logs", "Breakpoints", "Observers"}

// Messages. Engine events arrive batched in eventsMsg; everything else is
// the answer to a command the model issued.
type (
	eventsMsg struct {
		events  []event.Event
		dropped uint64 // the subscription's drop counter after the batch
	}
	snapshotMsg struct{ snap Snapshot }
	tickMsg     time.Time
	invokedMsg  struct {
		functionID string
		data       json.RawMessage
		result     json.RawMessage
		err        error
		took       time.Duration
		replayOf   *invocation // set for a replay
	}
	traceMsg struct {
		traceID string
		spans   []span
		err     error
	}
	logsMsg struct {
		entries []logEntry
		err     error
	}
	restartedMsg struct {
		worker string
		err    error
	}
	// controlMsg answers a Control call (breakpoints, fire now).
	controlMsg struct {
		done string // what to flash on success
		err  error
	}
)

// clusterResync is how often the TUI of an engine in a cluster reads a
// snapshot: the other engines' workers and functions have no events here.
const clusterResync = 5 * time.Second

// maxBatch bounds one eventsMsg.
const maxBatch = 8192

// Model is the TUI's bubbletea model.
type Model struct {
	Common
	ctx  context.Context
	src  Source
	sub  Subscription
	opts Options
	info Info

	st          *state
	now         time.Time
	lastDropped uint64
	resyncing   bool
	synced      time.Time // when the last snapshot was applied
	ready       bool      // first snapshot applied

	view      viewID
	pages     [numViews]page
	filters   [numViews]string
	filtering bool
	filterBuf string

	// The pages the root reaches into (answers to their commands).
	functions   *functionsPage
	invocations *invocationsPage
	trace       *tracesPage
	logs        *logsPage
	modal       modal

	flash      string
	flashErr   bool
	flashUntil time.Time

	logsQueried bool
}

// New builds a model reading src. It subscribes at once, so no event
// after New is missed; Close releases the subscription. ctx bounds the
// commands the model runs (the event wait, calls): cancel it when the
// program ends.
func New(ctx context.Context, src Source, opts Options) *Model {
	opts = opts.withDefaults()
	m := &Model{
		ctx:  ctx,
		src:  src,
		opts: opts,
		info: src.Info(),
		st:   newState(),
		now:  opts.Now(),
	}
	m.sub = src.Subscribe(opts.Buffer)
	m.Styles, m.Keys = DefaultStyles(), DefaultKeyMap()
	workers := &workersPage{}
	workers.tablePage = newTablePage(m, viewWorkers, "no workers connected", workerColumns(false, false), func() []row {
		workers.tbl.cols = workerColumns(m.st.namespaced(), m.st.engine != "")
		return workerRows(m.st, m.now, m.Styles)
	})
	m.functions = &functionsPage{}
	m.functions.tablePage = newTablePage(m, viewFunctions, "no functions registered", functionColumns(false, false), func() []row {
		m.functions.tbl.cols = functionColumns(m.st.namespaced(), m.st.engine != "")
		return functionRows(m.st, m.functions.showEngine)
	})
	triggers := &triggersPage{newTablePage(m, viewTriggers, "no triggers registered", []column{
		{title: "TYPE", min: 4}, {title: "FUNCTION", flex: 1, min: 10}, {title: "WORKER", min: 6},
		{title: "STATE"}, {title: "CONFIG", flex: 2, min: 10},
	}, func() []row { return triggerRows(m.st, triggerConfigWidth) })}
	m.invocations = &invocationsPage{}
	m.invocations.tablePage = newTablePage(m, viewInvocations, "no invocations yet", []column{
		{title: "TIME", min: 8}, {title: "FUNCTION", flex: 1, min: 10}, {title: "CALLER → TARGET", short: "FROM → TO", flex: 1, min: 10},
		{title: "TRIGGER", short: "TRIG", min: 4}, {title: "DURATION", short: "TOOK", right: true}, {title: "STATUS", min: 6},
	}, func() []row { return invocationRows(m.st, m.invocations.pausedSeq) })
	m.invocations.tbl.stickTop = true
	m.trace = &tracesPage{m: m, pane: tracePane{Common: m.Common}}
	m.logs = &logsPage{m: m, pane: logPane{Common: m.Common, follow: true}}
	breaks := &breaksPage{}
	breaks.tablePage = newTablePage(m, viewBreaks, "no calls held: b sets a breakpoint on the selected function (Functions, Invocations)", []column{
		{title: "FUNCTION", flex: 1, min: 10}, {title: "CALLER", min: 6}, {title: "TIMES OUT", short: "LEFT", right: true},
		{title: "PAYLOAD", flex: 2, min: 10},
	}, func() []row { return heldRows(m.st, m.now) })
	observers := &observersPage{newTablePage(m, viewObservers, "no observers", observerColumns(),
		func() []row { return observerRows(m.st) })}
	m.pages = [numViews]page{workers, m.functions, triggers, m.invocations, m.trace, m.logs, breaks, observers}
	m.modal = modal{Common: m.Common}
	return m
}

// Close releases the event subscription.
func (m *Model) Close() { m.sub.Close() }

// Init loads the first snapshot and starts the event and tick loops.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.snapshotCmd(), m.waitEvents(), m.tickCmd())
}

// waitEvents blocks for the next event, then gathers what follows within
// the batch window into one message. It is re-armed after each batch.
func (m *Model) waitEvents() tea.Cmd {
	ctx, sub, window := m.ctx, m.sub, m.opts.Batch
	return func() tea.Msg {
		var evs []event.Event
		select {
		case ev := <-sub.C():
			evs = append(evs, ev)
		case <-ctx.Done():
			return nil
		}
		timer := time.NewTimer(window)
		defer timer.Stop()
		for len(evs) < maxBatch {
			select {
			case ev := <-sub.C():
				evs = append(evs, ev)
			case <-timer.C:
				return eventsMsg{events: evs, dropped: sub.Dropped()}
			case <-ctx.Done():
				return nil
			}
		}
		return eventsMsg{events: evs, dropped: sub.Dropped()}
	}
}

func (m *Model) snapshotCmd() tea.Cmd {
	src := m.src
	return func() tea.Msg { return snapshotMsg{snap: src.Snapshot()} }
}

func (m *Model) tickCmd() tea.Cmd {
	if m.opts.Tick < 0 {
		return nil
	}
	ctx, d := m.ctx, m.opts.Tick
	// Unlike tea.Tick, the wait ends with ctx, so nothing outlives the
	// program.
	return func() tea.Msg {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case now := <-t.C:
			return tickMsg(now)
		case <-ctx.Done():
			return nil
		}
	}
}

// Update handles a message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	var cmd tea.Cmd
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.SetSize(msg.Width, msg.Height)
	case eventsMsg:
		for _, ev := range msg.events {
			m.st.apply(ev)
		}
		m.now = m.opts.Now()
		m.st.refreshLatency(m.now)
		cmds := []tea.Cmd{m.waitEvents()}
		if msg.dropped > m.lastDropped {
			m.st.dropped = msg.dropped
			m.lastDropped = msg.dropped
			if !m.resyncing {
				m.resyncing = true
				cmds = append(cmds, m.snapshotCmd())
			}
		}
		cmd = tea.Batch(cmds...)
	case snapshotMsg:
		m.st.resync(msg.snap)
		m.synced = m.opts.Now()
		m.resyncing = false
		m.ready = true
		if !m.logsQueried && m.hasFunction(FnLogsList) {
			m.logsQueried = true
			cmd = m.queryLogs()
		}
	case tickMsg:
		m.now = m.opts.Now()
		m.st.refreshLatency(m.now)
		if !m.flashUntil.IsZero() && !m.now.Before(m.flashUntil) {
			m.flash, m.flashUntil = "", time.Time{}
		}
		cmd = m.tickCmd()
		if m.st.engine != "" && !m.resyncing && m.now.Sub(m.synced) >= clusterResync {
			// Other engines' workers come and go without events here.
			m.resyncing = true
			cmd = tea.Batch(cmd, m.snapshotCmd())
		}
	case invokedMsg:
		m.modal.invoked(msg)
	case traceMsg:
		m.trace.pane.loaded(msg, m.st)
	case logsMsg:
		if msg.err == nil {
			m.logs.pane.backfill(m.st, msg.entries)
		}
	case controlMsg:
		if msg.err != nil {
			m.setFlash(msg.err.Error(), true)
		} else {
			m.setFlash(msg.done, false)
		}
	case restartedMsg:
		if msg.err != nil {
			m.setFlash(fmt.Sprintf("restart %s: %v", msg.worker, msg.err), true)
		} else {
			m.setFlash("restarting "+msg.worker, false)
		}
	case tea.KeyPressMsg:
		cmd = m.key(msg)
	case tea.PasteMsg:
		if m.modal.kind == modalEditor {
			cmd = m.modal.updateEditor(msg)
		}
	}
	m.refresh()
	return m, cmd
}

// SetSize resizes the model and every component.
func (m *Model) SetSize(width, height int) {
	m.Common.SetSize(width, height)
	body := m.bodyHeight()
	for _, p := range m.pages {
		p.SetSize(width, body)
	}
	m.modal.SetSize(width, body)
}

// bodyHeight is what is left under the header and tabs, above the footer.
func (m *Model) bodyHeight() int { return max(m.Height-4, 1) }

func (m *Model) setFlash(s string, isErr bool) {
	m.flash, m.flashErr = oneLine(s), isErr
	m.flashUntil = m.opts.Now().Add(5 * time.Second)
}

func (m *Model) hasFunction(id string) bool {
	f := m.st.funcs[id]
	return f != nil && len(f.regs) > 0
}

// key routes a key press: the filter line or an open pane first, then
// the keys every view shares, then the active page.
func (m *Model) key(msg tea.KeyPressMsg) tea.Cmd {
	k := m.Keys.Global
	if msg.String() == "ctrl+c" {
		return tea.Quit
	}
	if m.filtering {
		m.filterKey(msg)
		return nil
	}
	if m.modal.kind != modalNone {
		return m.modalKey(msg)
	}
	switch {
	case key.Matches(msg, k.Quit):
		return tea.Quit
	case key.Matches(msg, k.Help):
		m.modal.openHelp(m.helpLines())
		return nil
	case key.Matches(msg, k.Filter):
		m.filtering, m.filterBuf = true, m.filters[m.view]
		return nil
	case key.Matches(msg, k.NextTab):
		return m.switchView((m.view + 1) % numViews)
	case key.Matches(msg, k.PrevTab):
		return m.switchView((m.view + numViews - 1) % numViews)
	case key.Matches(msg, k.Back):
		m.filters[m.view] = ""
		return nil
	case key.Matches(msg, k.View):
		return m.switchView(viewID(msg.String()[0] - '1'))
	}
	return m.pages[m.view].key(msg)
}

func (m *Model) filterKey(msg tea.KeyPressMsg) {
	k := m.Keys.Filter
	switch {
	case key.Matches(msg, k.Clear):
		m.filtering, m.filters[m.view] = false, ""
	case key.Matches(msg, k.Apply):
		m.filtering = false
	case key.Matches(msg, k.Erase):
		if r := []rune(m.filterBuf); len(r) > 0 {
			m.filterBuf = string(r[:len(r)-1])
		}
		m.filters[m.view] = m.filterBuf
	case key.Matches(msg, k.EraseAll):
		m.filterBuf, m.filters[m.view] = "", ""
	default:
		if msg.Text != "" {
			m.filterBuf += oneLine(msg.Text)
			m.filters[m.view] = m.filterBuf
		}
	}
}

func (m *Model) switchView(v viewID) tea.Cmd {
	m.view = v
	return m.pages[v].activate()
}

// selected returns the key of the active table's selected row.
func (m *Model) selected() (string, bool) {
	if tp, ok := m.pages[m.view].(interface{ selected() (string, bool) }); ok {
		return tp.selected()
	}
	return "", false
}

// rows are the rows the active table view shows.
func (m *Model) rows() []row {
	if tp, ok := m.pages[m.view].(interface{ shownRows() []row }); ok {
		return tp.shownRows()
	}
	return nil
}

func (m *Model) openEditor(fn string) tea.Cmd {
	data, ok := m.st.lastPayload(fn)
	if !ok {
		data = json.RawMessage(`{}`)
	}
	return m.modal.openEditor(fn, prettyJSON(withoutEngineFields(data)))
}

// invoke sends the editor's JSON.
func (m *Model) invoke(fn string, data json.RawMessage, replayOf *invocation) tea.Cmd {
	ctx, src, timeout, now := m.ctx, m.src, m.opts.QueryTimeout, m.opts.Now
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := now()
		res, err := src.Invoke(cctx, fn, data)
		return invokedMsg{functionID: fn, data: data, result: res, err: err, took: now().Sub(start), replayOf: replayOf}
	}
}

func (m *Model) replay(inv invocation) tea.Cmd {
	if !inv.dataKept {
		m.setFlash("replay: the payload of this call was not captured", true)
		return nil
	}
	m.modal.openReplay(inv)
	return m.invoke(inv.functionID, inv.data, &inv)
}

func (m *Model) restart(key string) tea.Cmd {
	name := m.workerRowName(key)
	if name == "" {
		return nil
	}
	if w := m.st.workers[key]; w != nil && w.internal {
		m.setFlash(name+" runs inside the engine; it cannot be restarted", true)
		return nil
	}
	ctx, src := m.ctx, m.src
	m.setFlash("restarting "+name+"…", false)
	return func() tea.Msg {
		return restartedMsg{worker: name, err: src.Restart(ctx, name)}
	}
}

// workerRowName is the worker name behind a Workers row key.
func (m *Model) workerRowName(key string) string {
	if name, ok := strings.CutPrefix(key, "proc:"); ok {
		return name
	}
	if w := m.st.workers[key]; w != nil {
		return w.name
	}
	return ""
}

// modalKey handles keys while a pane is open.
func (m *Model) modalKey(msg tea.KeyPressMsg) tea.Cmd {
	k, nav := m.Keys.Modal, m.Keys.Nav
	if m.modal.kind == modalEditor {
		switch {
		case key.Matches(msg, m.Keys.Global.Back):
			m.modal.close()
		case key.Matches(msg, k.Send):
			raw := strings.TrimSpace(m.modal.editor.Value())
			if raw == "" {
				raw = "null"
			}
			if !json.Valid([]byte(raw)) {
				m.modal.editErr = "not valid JSON: fix it and press ctrl+s again"
				return nil
			}
			if id := m.modal.holdID; id != "" {
				fn := m.modal.functionID
				m.modal.close()
				return m.control(watch.FnBreakRelease, watch.Release{HoldID: id, Data: json.RawMessage(raw)}, "continued "+fn+" with the edited payload")
			}
			m.modal.editErr, m.modal.sending = "", true
			return m.invoke(m.modal.functionID, json.RawMessage(raw), nil)
		default:
			return m.modal.updateEditor(msg)
		}
		return nil
	}
	help := m.modal.kind == modalHelp
	switch {
	case key.Matches(msg, k.Close), help && key.Matches(msg, m.Keys.Global.Help):
		m.modal.close()
	case key.Matches(msg, nav.Up):
		m.modal.scroll(-1)
	case key.Matches(msg, nav.Down):
		m.modal.scroll(1)
	case key.Matches(msg, nav.PageUp):
		m.modal.scroll(-m.modal.Height / 2)
	case key.Matches(msg, nav.PageDown):
		m.modal.scroll(m.modal.Height / 2)
	case key.Matches(msg, k.Again) && m.modal.kind == modalReplay && !m.modal.sending && m.modal.replayOf != nil:
		inv := *m.modal.replayOf
		m.modal.openReplay(inv)
		return m.invoke(inv.functionID, inv.data, &inv)
	}
	return nil
}

// loadTrace fetches the trace of the selected invocation.
func (m *Model) loadTrace() tea.Cmd {
	tp := &m.trace.pane
	inv, ok := m.invocations.selectedInvocation()
	if !ok || inv.traceID == "" {
		tp.reset("")
		return nil
	}
	if tp.traceID == inv.traceID && tp.loading {
		return nil
	}
	tp.reset(inv.traceID)
	tp.focus = inv.spanID
	if !m.hasFunction(FnTracesTree) {
		tp.loaded(traceMsg{traceID: inv.traceID, err: errObservabilityMissing}, m.st)
		return nil
	}
	ctx, src, timeout, id := m.ctx, m.src, m.opts.QueryTimeout, inv.traceID
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, _ := json.Marshal(map[string]string{"trace_id": id})
		res, err := src.Query(cctx, FnTracesTree, req)
		if err != nil {
			var eb *protocol.ErrorBody
			if errors.As(err, &eb) && eb.Code == "function_not_found" {
				err = errObservabilityMissing
			}
			return traceMsg{traceID: id, err: err}
		}
		spans, err := parseTrace(res)
		return traceMsg{traceID: id, spans: spans, err: err}
	}
}

var errObservabilityMissing = errors.New("observability module not running")

func (m *Model) queryLogs() tea.Cmd {
	ctx, src, timeout := m.ctx, m.src, m.opts.QueryTimeout
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res, err := src.Query(cctx, FnLogsList, json.RawMessage(`{"limit":1000}`))
		if err != nil {
			return logsMsg{err: err}
		}
		return logsMsg{entries: parseLogs(res)}
	}
}

// refresh rebuilds the active page after any change; a table keeps its
// selection on the same item.
func (m *Model) refresh() { m.pages[m.view].refresh() }

package tui

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/textarea"
	tea "charm.land/bubbletea/v2"

	"github.com/iii-workbench/iii/engine/protocol"
)

type modalKind int

const (
	modalNone modalKind = iota
	modalDetail
	modalHelp
	modalEditor
	modalReplay
)

// modal is the pane that replaces the body: detail, help, the invoke
// editor or a replay comparison.
type modal struct {
	Common
	kind   modalKind
	title  string
	lines  []string
	offset int

	// editor
	editor     textarea.Model
	functionID string
	holdID     string // set when the editor edits a held call's payload
	editErr    string
	sending    bool
	result     []string
	resultErr  bool

	// replay
	replayOf *invocation
	newRes   json.RawMessage
	newErr   error
	took     time.Duration
}

func (d *modal) close() { *d = modal{Common: d.Common} }

func (d *modal) openDetail(title string, lines []string) {
	*d = modal{Common: d.Common, kind: modalDetail, title: title, lines: lines}
}

func (d *modal) openHelp(lines []string) {
	*d = modal{Common: d.Common, kind: modalHelp, title: "Keys", lines: lines}
}

func (d *modal) openEditor(functionID, initial string) tea.Cmd {
	ta := textarea.New()
	ta.ShowLineNumbers = false
	ta.Prompt = ""
	ta.CharLimit = 0
	styles := textarea.DefaultDarkStyles()
	styles.Cursor.Blink = false
	ta.SetStyles(styles)
	ta.SetValue(initial)
	*d = modal{Common: d.Common, kind: modalEditor, title: "Invoke " + functionID, functionID: functionID, editor: ta}
	d.sizeEditor()
	return d.editor.Focus()
}

func (d *modal) openReplay(inv invocation) {
	*d = modal{Common: d.Common, kind: modalReplay, title: "Replay " + inv.functionID, replayOf: &inv, sending: true}
}

// SetSize resizes the modal (and the editor in it).
func (d *modal) SetSize(w, h int) {
	d.Common.SetSize(w, h)
	if d.kind == modalEditor {
		d.sizeEditor()
	}
}

func (d *modal) sizeEditor() {
	d.editor.SetWidth(max(d.Width-4, 10))
	d.editor.SetHeight(max(d.editorHeight(), 1))
}

// editorHeight leaves room for the frame, the result header and result.
func (d *modal) editorHeight() int { return max((d.Height-2)/2-1, 3) }

func (d *modal) updateEditor(msg tea.Msg) tea.Cmd {
	var cmd tea.Cmd
	d.editor, cmd = d.editor.Update(msg)
	return cmd
}

func (d *modal) scroll(delta int) {
	d.offset = min(max(d.offset+delta, 0), max(len(d.contentLines())-(d.Height-2), 0))
}

// invoked takes the answer of an invoke or replay.
func (d *modal) invoked(msg invokedMsg) {
	switch {
	case d.kind == modalEditor && msg.replayOf == nil && msg.functionID == d.functionID:
		d.sending = false
		d.result, d.resultErr = resultLines(msg.result, msg.err), msg.err != nil
		d.result = append([]string{fmt.Sprintf("in %s", fmtDuration(msg.took))}, d.result...)
	case d.kind == modalReplay && msg.replayOf != nil && d.replayOf != nil && msg.replayOf.id == d.replayOf.id:
		d.sending, d.newRes, d.newErr, d.took = false, msg.result, msg.err, msg.took
	}
}

// resultLines renders a call's outcome: pretty JSON, or the error.
func resultLines(res json.RawMessage, err error) []string {
	if err != nil {
		var eb *protocol.ErrorBody
		if errors.As(err, &eb) {
			out := []string{"error " + eb.Code}
			if eb.Message != "" {
				out = append(out, oneLine(eb.Message))
			}
			return out
		}
		return []string{"error: " + oneLine(err.Error())}
	}
	return strings.Split(prettyJSON(res), "\n")
}

// contentLines is what scrolls inside the frame.
func (d *modal) contentLines() []string {
	switch d.kind {
	case modalReplay:
		return d.replayLines()
	}
	return d.lines
}

func (d *modal) render() string {
	switch d.kind {
	case modalEditor:
		return d.renderEditor()
	}
	inner := d.Height - 2
	lines := d.contentLines()
	start := min(d.offset, max(len(lines)-inner, 0))
	body := lines[start:min(start+inner, len(lines))]
	return d.frame(d.title, body)
}

// frame draws a rounded box of the modal's size around lines (which may
// carry styles).
func (d *modal) frame(title string, lines []string) string {
	w := max(d.Width, 8)
	inner := w - 4
	top := "╭─ " + truncate(title, w-6) + " "
	top += strings.Repeat("─", max(w-1-lipglossWidth(top), 0)) + "╮"
	out := []string{d.Styles.Key.Render(top)}
	side := d.Styles.Key.Render("│")
	for i := 0; i < d.Height-2; i++ {
		l := ""
		if i < len(lines) {
			l = lines[i]
		}
		out = append(out, side+" "+pad(l, inner)+" "+side)
	}
	out = append(out, d.Styles.Key.Render("╰"+strings.Repeat("─", w-2)+"╯"))
	return fill(out, d.Height, w)
}

func (d *modal) renderEditor() string {
	st := d.Styles
	var lines []string
	lines = append(lines, strings.Split(d.editor.View(), "\n")...)
	for len(lines) < d.editorHeight() {
		lines = append(lines, "")
	}
	lines = append(lines, st.Dim.Render(strings.Repeat("─", max(d.Width-4, 0))))
	switch {
	case d.editErr != "":
		lines = append(lines, st.Error.Render(d.editErr))
	case d.sending:
		lines = append(lines, st.Dim.Render("calling "+d.functionID+"…"))
	case d.result == nil:
		lines = append(lines, st.Dim.Render("ctrl+s sends the JSON above to "+d.functionID))
	default:
		head := st.OK.Render("result " + d.result[0])
		if d.resultErr {
			head = st.Error.Render("failed " + d.result[0])
		}
		lines = append(lines, head)
		for _, l := range d.result[1:] {
			if d.resultErr {
				l = st.Error.Render(l)
			}
			lines = append(lines, l)
		}
	}
	return d.frame(d.title, lines)
}

// replayLines lays the original result and the replay's side by side with
// changed lines marked.
func (d *modal) replayLines() []string {
	st := d.Styles
	inv := d.replayOf
	if inv == nil {
		return nil
	}
	colW := max((d.Width-4-3)/2, 4)
	oldRes := resultLines(inv.result, invocationErr(*inv))
	header := []string{
		"payload " + compactJSON(inv.data, max(d.Width-12, 10)),
		"",
	}
	left := "before  " + fmtDuration(inv.duration) + "  " + statusCell(*inv)
	if d.sending {
		return append(header, pad(left, colW)+" │ "+st.Dim.Render("replaying…"))
	}
	newStatus := "ok"
	if d.newErr != nil {
		newStatus = "error"
	}
	right := "after  " + fmtDuration(d.took) + "  " + newStatus
	newRes := resultLines(d.newRes, d.newErr)
	rows := sideBySide(lineDiff(oldRes, newRes))
	verdict := st.OK.Render("same result as before")
	for _, r := range rows {
		if r[0] != r[1] {
			verdict = st.Warn.Render("result differs: - before, + after")
			break
		}
	}
	header[1] = verdict
	out := append(header, st.ColHeader.Render(pad(left, colW))+" │ "+st.ColHeader.Render(pad(right, colW)))
	for _, r := range rows {
		l, rr := pad(r[0], colW), pad(r[1], colW)
		if strings.HasPrefix(r[0], "- ") {
			l = st.Removed.Render(l)
		}
		if strings.HasPrefix(r[1], "+ ") {
			rr = st.Added.Render(rr)
		}
		out = append(out, l+" │ "+rr)
	}
	return out
}

func invocationErr(v invocation) error {
	if v.status == "ok" {
		return nil
	}
	code := v.errorCode
	if code == "" {
		code = v.status
	}
	return &protocol.ErrorBody{Code: code, Message: v.errorMessage}
}

// helpLines is the help screen, generated from the key map: the keys every
// view shares, then each view's own.
func (m *Model) helpLines() []string {
	k := m.Keys
	groups := []struct {
		name string
		keys help.KeyMap
	}{
		{"Global", k.Global}, {"Lists", k.Nav}, {"Filter line", k.Filter}, {"Panes", k.Modal},
	}
	var lines []string
	add := func(name string, km help.KeyMap) {
		lines = append(lines, name)
		for _, col := range km.FullHelp() {
			for _, b := range col {
				if b.Enabled() {
					lines = append(lines, "  "+pad(b.Help().Key, 12)+b.Help().Desc)
				}
			}
		}
		lines = append(lines, "")
	}
	for _, g := range groups {
		add(g.name, g.keys)
	}
	for i, p := range m.pages {
		add(viewNames[i], p)
	}
	return lines
}

func workerDetail(s *state, key string, now time.Time) []string {
	var lines []string
	name, _ := strings.CutPrefix(key, "proc:")
	if w := s.workers[key]; w != nil {
		name = w.name
		lines = append(lines,
			"id         "+dash(w.id),
			"name       "+dash(w.name),
			"namespace  "+cmp.Or(w.namespace, DefaultNamespace),
			"runtime    "+dash(w.runtime)+" "+w.version,
			"pid        "+strconv.Itoa(w.pid),
			"status     "+w.status,
			"in-flight  "+strconv.FormatInt(w.inFlight, 10))
		if !w.connectedAt.IsZero() {
			lines = append(lines, "connected  "+w.connectedAt.Format(time.DateTime)+" ("+fmtUptime(now.Sub(w.connectedAt))+" ago)")
		}
		lines = append(lines, "", fmt.Sprintf("functions (%d)", len(w.funcs)))
		for _, f := range sortedKeys(w.funcs) {
			lines = append(lines, "  "+f)
		}
	}
	if p := s.procs[name]; p != nil {
		lines = append(lines, "", "process (exec module)",
			"  status    "+p.Status,
			"  pid       "+strconv.Itoa(p.PID),
			"  restarts  "+strconv.Itoa(p.Restarts),
			"  reloads   "+strconv.Itoa(p.Reloads))
		if p.ExitCode != 0 {
			lines = append(lines, "  last exit "+strconv.Itoa(p.ExitCode))
		}
		if p.Error != "" {
			lines = append(lines, "  error     "+oneLine(p.Error))
		}
		if len(p.LastLines) > 0 {
			lines = append(lines, "", "last output")
			for _, l := range p.LastLines {
				lines = append(lines, "  "+oneLine(l))
			}
		}
	}
	return lines
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slicesSort(out)
	return out
}

func functionDetail(s *state, f *funcState) []string {
	lines := []string{
		"id           " + f.id,
		"namespace    " + dash(strings.Join(s.funcNamespaces(f), ", ")),
		"workers      " + dash(strings.Join(s.funcWorkers(f), ", ")),
		"calls        " + strconv.FormatUint(f.calls, 10),
		"errors       " + strconv.FormatUint(f.errors, 10),
	}
	if f.calls > 0 {
		lines = append(lines, "p50 / p99    "+fmtDuration(f.p50)+" / "+fmtDuration(f.p99))
	}
	if f.description != "" {
		lines = append(lines, "description  "+oneLine(f.description))
	}
	var trig []string
	for _, t := range s.sortedTriggers() {
		if t.FunctionID == f.id {
			trig = append(trig, "  "+t.Type+"  "+compactJSON(t.Config, 80))
		}
	}
	if len(trig) > 0 {
		lines = append(append(lines, "", "triggers"), trig...)
	}
	if data, ok := s.lastPayload(f.id); ok {
		lines = append(lines, "", "last payload")
		lines = append(lines, indent(strings.Split(prettyJSON(data), "\n"))...)
	}
	return lines
}

func triggerDetail(t Trigger) []string {
	lines := []string{
		"id        " + t.ID,
		"type      " + t.Type,
		"function  " + t.FunctionID,
		"worker    " + dash(t.Worker),
		"active    " + strconv.FormatBool(t.Active),
		"", "config",
	}
	return append(lines, indent(strings.Split(prettyJSON(t.Config), "\n"))...)
}

func invocationDetail(v invocation) []string {
	lines := []string{
		"id        " + v.id,
		"function  " + v.functionID,
		"caller    " + v.caller + " → " + dash(v.target),
		"trigger   " + dash(v.trigger),
		"status    " + statusCell(v),
		"duration  " + fmtDuration(v.duration),
		"at        " + v.at.Format("15:04:05.000000"),
		"trace     " + dash(v.traceID) + "  span " + dash(v.spanID),
	}
	if v.activation != nil {
		lines = append(lines, "observer  "+v.activation.String())
	}
	if v.errorMessage != "" {
		lines = append(lines, "error     "+v.errorMessage)
	}
	lines = append(lines, "", "payload")
	if v.dataKept {
		lines = append(lines, indent(strings.Split(prettyJSON(v.data), "\n"))...)
	} else {
		lines = append(lines, "  (not captured)")
	}
	lines = append(lines, "", "result")
	return append(lines, indent(resultLines(v.result, invocationErr(v)))...)
}

func indent(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = "  " + l
	}
	return out
}

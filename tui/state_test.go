package tui

import (
	"context"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/iii-workbench/iii/engine/event"
)

// newTestModel is a Model driven by Update directly (no program).
func newTestModel(t *testing.T) (*Model, *fakeSource) {
	t.Helper()
	src := newFakeSource()
	snap, evs := fixture()
	src.setSnapshot(snap)
	ctx, cancel := context.WithCancel(context.Background())
	m := New(ctx, src, Options{Now: fixedNow, Tick: -1})
	t.Cleanup(func() { cancel(); m.Close() })
	m.Update(tea.WindowSizeMsg{Width: goldenW, Height: goldenH})
	m.Update(snapshotMsg{snap: snap})
	m.Update(eventsMsg{events: evs})
	return m, src
}

func press(m *Model, keys ...string) {
	for _, k := range keys {
		m.Update(keyMsg(k))
	}
}

func TestWorkerLifecycle(t *testing.T) {
	s := newState()
	at := t0
	s.apply(event.WorkerConnected{WorkerID: "w1", At: at})
	s.apply(event.FunctionRegistered{FunctionID: "a::f", WorkerID: "w1", Worker: "w1", At: at})
	s.apply(event.WorkerUpdated{WorkerID: "w1", Name: "alpha\x1b[2J", Runtime: "node", PID: 7, At: at})
	s.apply(event.FunctionRegistered{FunctionID: "iii::x", Worker: "iii-http", At: at})
	if got := s.funcWorkers(s.funcs["a::f"]); !reflect.DeepEqual(got, []string{"alpha·[2J"}) {
		t.Errorf("workers of a::f = %q; want the reported (flattened) name", got)
	}
	if w := s.workers[internalKey("iii-http")]; w == nil || !w.internal || len(w.funcs) != 1 {
		t.Errorf("in-process worker = %+v; want an internal row serving one function", w)
	}
	s.apply(event.InvocationStarted{InvocationID: "i1", FunctionID: "a::f", TargetWorkerID: "w1", Data: json.RawMessage(`{"x":1}`), At: at})
	if got := s.workers["w1"].inFlight; got != 1 {
		t.Errorf("in-flight after start = %d; want 1", got)
	}
	s.apply(event.InvocationFinished{InvocationID: "i1", FunctionID: "a::f", TargetWorkerID: "w1", Worker: "alpha", Status: "ok", Duration: time.Millisecond, At: at})
	if got := s.workers["w1"].inFlight; got != 0 {
		t.Errorf("in-flight after finish = %d; want 0", got)
	}
	if v := s.inv.at(0); !v.dataKept || string(v.data) != `{"x":1}` || v.caller != "engine" {
		t.Errorf("tail entry = %+v; want the payload joined from the start event, caller engine", v)
	}
	// A query of the TUI itself is not counted.
	s.apply(event.InvocationFinished{InvocationID: "q", FunctionID: FnLogsList, Trigger: TriggerQuery, Status: "ok", At: at})
	if s.calls != 1 || s.inv.len() != 1 {
		t.Errorf("calls = %d, tail %d after a TUI query; want 1, 1", s.calls, s.inv.len())
	}
	s.apply(event.WorkerDisconnected{WorkerID: "w1", At: at})
	if _, ok := s.workers["w1"]; ok {
		t.Error("worker still listed after it disconnected")
	}
	if f := s.funcs["a::f"]; f == nil || len(f.regs) != 0 || f.calls != 1 {
		t.Errorf("a::f after its worker left = %+v; want kept for its calls, with no registrations", f)
	}
}

// TestTriggerWorkerNamedLater: the Node and Go SDKs register triggers
// before they send their name; the Triggers view names the worker anyway.
func TestTriggerWorkerNamedLater(t *testing.T) {
	s := newState()
	s.apply(event.WorkerConnected{WorkerID: "w1", At: t0})
	s.apply(event.TriggerRegistered{TriggerID: "t1", TriggerType: "http", FunctionID: "a::f", WorkerID: "w1", Active: true, At: t0})
	s.apply(event.WorkerUpdated{WorkerID: "w1", Name: "hello-node", Runtime: "node", At: t0})
	rows := triggerRows(s, 40)
	if len(rows) != 1 || rows[0].cells[2] != "hello-node" {
		t.Errorf("trigger rows = %+v; want WORKER hello-node", rows)
	}
}

// TestCLIClientsHidden: iii invoke's connection and its
// engine::workers::register call stay out of the views; its call does not.
func TestCLIClientsHidden(t *testing.T) {
	s := newState()
	s.apply(event.WorkerConnected{WorkerID: "w1", At: t0})
	s.apply(event.WorkerUpdated{WorkerID: "w1", Name: CLIClientName, Runtime: "go", At: t0})
	s.apply(event.InvocationFinished{InvocationID: "r", FunctionID: FnRegisterWorker, CallerWorkerID: "w1", Status: "ok", At: t0})
	s.apply(event.InvocationFinished{InvocationID: "c", FunctionID: "a::f", CallerWorkerID: "w1", Status: "ok", At: t0})
	if rows := workerRows(s, t0, nil); len(rows) != 0 {
		t.Errorf("worker rows = %+v; want the CLI client left out", rows)
	}
	if s.inv.len() != 1 || s.inv.at(0).functionID != "a::f" || s.inv.at(0).caller != CLIClientName || s.calls != 1 {
		t.Errorf("tail has %d calls (calls %d); want only a::f from %s", s.inv.len(), s.calls, CLIClientName)
	}
}

// TestRestartsCountReloads: RESTARTS counts R restarts and reloads too,
// not only crashes.
func TestRestartsCountReloads(t *testing.T) {
	s := newState()
	s.apply(event.ProcessChanged{Worker: "api", Status: event.ProcessRunning, PID: 5, Restarts: 1, Reloads: 2, At: t0})
	rows := workerRows(s, t0, nil)
	if len(rows) != 1 || rows[0].cells[6] != "3" {
		t.Errorf("worker rows = %+v; want RESTARTS 3", rows)
	}
}

// TestStartingShowsProgress: a process still starting (installing, or
// waiting to register) shows how long it has been at it.
func TestStartingShowsProgress(t *testing.T) {
	s := newState()
	s.apply(event.ProcessChanged{Worker: "api", Status: event.ProcessStarting, At: t0})
	rows := workerRows(s, t0.Add(42*time.Second), nil)
	if len(rows) != 1 || rows[0].cells[3] != "starting 42s" {
		t.Errorf("worker rows = %+v; want STATUS \"starting 42s\"", rows)
	}
}

// TestWorkerSlogLine: a Go worker's slog record shows as its level and
// fields in the Logs view, not with a second timestamp inside ours.
func TestWorkerSlogLine(t *testing.T) {
	s := newState()
	s.apply(event.LogLine{Worker: "api", Stream: "stderr", At: t0,
		Line: `time=2026-12-04T20:41:31.179Z level=INFO msg="api ready" port=8080`})
	if got := s.logs.at(0).line; got != "INFO api ready port=8080" {
		t.Errorf("log line = %q; want %q", got, "INFO api ready port=8080")
	}
}

func TestRingBounds(t *testing.T) {
	s := newState()
	for i := range invocationRing + 10 {
		s.apply(event.InvocationFinished{InvocationID: string(rune('a' + i%26)), FunctionID: "f", Status: "ok", At: t0})
	}
	if s.inv.len() != invocationRing || s.calls != invocationRing+10 {
		t.Errorf("tail %d, calls %d; want the tail capped at %d and every call counted", s.inv.len(), s.calls, invocationRing)
	}
	if got := s.inv.at(0).seq; got != 11 {
		t.Errorf("oldest kept seq = %d; want 11", got)
	}
	for range pendingLimit + 5 {
		s.apply(event.InvocationStarted{InvocationID: "x" + strings.Repeat("y", len(s.pending)%7), At: t0})
	}
	if len(s.pending) > pendingLimit {
		t.Errorf("pending = %d; want at most %d", len(s.pending), pendingLimit)
	}
}

func TestRates(t *testing.T) {
	var r rateSeries
	for i := range 5 {
		r.add(t0.Add(-2*time.Second), i == 0)
	}
	r.add(t0.Add(-1*time.Second), false)
	r.add(t0, false) // the current, incomplete second is not shown
	if got := r.last(t0, 4); !reflect.DeepEqual(got, []int{0, 0, 5, 1}) {
		t.Errorf("last(4) = %v; want [0 0 5 1]", got)
	}
	// A bucket reused after the window holds only the new second.
	r.add(t0.Add(rateWindow*time.Second-2*time.Second), false)
	if got := r.last(t0.Add(rateWindow*time.Second-time.Second), 1); !reflect.DeepEqual(got, []int{1}) {
		t.Errorf("after wrap, last(1) = %v; want [1]", got)
	}
}

func TestLatencyWindow(t *testing.T) {
	var w latWindow
	for i := 1; i <= 100; i++ {
		w.add(time.Duration(i)*time.Millisecond, t0)
	}
	w.add(time.Hour, t0.Add(-2*latencyWindow)) // too old to count
	p50, p99, _ := w.percentiles(t0, nil)
	if p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("p50, p99 = %v, %v; want 50ms, 99ms", p50, p99)
	}
}

func TestResyncKeepsCounters(t *testing.T) {
	m, _ := newTestModel(t)
	snap, _ := fixture()
	snap.Workers = snap.Workers[1:] // orders left while events were lost
	snap.Functions = snap.Functions[:2]
	m.Update(snapshotMsg{snap: snap})
	if _, ok := m.st.workers["w-orders-0001"]; ok {
		t.Error("resync kept a worker the snapshot no longer has")
	}
	f := m.st.funcs["orders::create"]
	if f == nil || f.calls != 1 || len(f.regs) != 0 {
		t.Errorf("orders::create after resync = %+v; want its call count kept, no registrations", f)
	}
	if m.st.calls != 6 || m.st.resyncs != 2 {
		t.Errorf("calls %d, resyncs %d; want 6, 2", m.st.calls, m.st.resyncs)
	}
}

func TestDropsTriggerOneResync(t *testing.T) {
	m, _ := newTestModel(t)
	_, cmd := m.Update(eventsMsg{dropped: 3})
	if !m.resyncing || m.st.dropped != 3 || cmd == nil {
		t.Fatalf("after drops: resyncing %v, dropped %d, cmd %v; want a resync under way", m.resyncing, m.st.dropped, cmd)
	}
	m.Update(eventsMsg{dropped: 5}) // no second resync while one runs
	if m.st.dropped != 5 {
		t.Errorf("dropped = %d; want 5", m.st.dropped)
	}
	m.Update(snapshotMsg{snap: m.src.Snapshot()})
	if m.resyncing {
		t.Error("still resyncing after the snapshot arrived")
	}
}

func TestNavigationAndSelection(t *testing.T) {
	m, _ := newTestModel(t)
	press(m, "4", "down", "down")
	if k, _ := m.selected(); k != "inv-0003" {
		t.Fatalf("selected %q; want inv-0003", k)
	}
	// New calls arrive on top: the selection stays on the same call.
	m.Update(eventsMsg{events: []event.Event{event.InvocationFinished{InvocationID: "inv-new", FunctionID: "orders::get", Status: "ok", At: t0}}})
	if k, _ := m.selected(); k != "inv-0003" || m.invocations.tbl.cursor != 3 {
		t.Errorf("after a new call: selected %q at %d; want inv-0003 at 3", k, m.invocations.tbl.cursor)
	}
	// Paused, the tail does not grow.
	press(m, "space")
	m.Update(eventsMsg{events: []event.Event{event.InvocationFinished{InvocationID: "inv-later", FunctionID: "orders::get", Status: "ok", At: t0}}})
	if len(m.rows()) != 7 || m.st.calls != 8 {
		t.Errorf("paused: %d rows, %d calls; want 7 rows shown and 8 calls counted", len(m.rows()), m.st.calls)
	}
	press(m, "space")
	if len(m.rows()) != 8 {
		t.Errorf("resumed: %d rows; want 8", len(m.rows()))
	}
	press(m, "tab")
	if m.view != viewTraces {
		t.Errorf("tab from Invocations went to %v; want Traces", m.view)
	}
	press(m, "shift+tab", "shift+tab", "shift+tab", "shift+tab", "shift+tab", "shift+tab", "shift+tab")
	if m.view != viewLogs {
		t.Errorf("shift+tab ×7 from Traces went to %v; want Logs (wrapping)", m.view)
	}
}

func TestFilter(t *testing.T) {
	m, _ := newTestModel(t)
	press(m, "2", "/", "b", "i", "l")
	if len(m.rows()) != 1 || m.rows()[0].key != "billing::charge" {
		t.Errorf("/bil shows %d rows; want billing::charge only", len(m.rows()))
	}
	press(m, "backspace", "backspace", "backspace", "enter")
	if len(m.rows()) != 5 || m.filtering {
		t.Errorf("after erasing: %d rows, filtering %v; want 5 rows, filter closed", len(m.rows()), m.filtering)
	}
	press(m, "/", "z", "esc")
	if m.filters[viewFunctions] != "" || len(m.rows()) != 5 {
		t.Errorf("esc left filter %q", m.filters[viewFunctions])
	}
	press(m, "a")
	if len(m.rows()) != 5 {
		t.Errorf("a with no engine functions changed the rows to %d", len(m.rows()))
	}
}

func TestRestartKey(t *testing.T) {
	m, src := newTestModel(t)
	press(m, "1", "down", "down", "down") // mailer, a crashed exec worker
	_, cmd := m.Update(keyMsg("R"))
	if cmd == nil {
		t.Fatal("R gave no command")
	}
	m.Update(cmd())
	if !reflect.DeepEqual(src.restarts, []string{"mailer"}) || !strings.Contains(m.flash, "restarting mailer") {
		t.Errorf("restarts %q, flash %q; want mailer restarted and said so", src.restarts, m.flash)
	}
	press(m, "G")
	if _, cmd := m.Update(keyMsg("R")); cmd != nil || !strings.Contains(m.flash, "inside the engine") {
		t.Errorf("R on an in-process worker: cmd %v, flash %q; want a refusal", cmd, m.flash)
	}
}

func TestReplayWithoutPayload(t *testing.T) {
	m, src := newTestModel(t)
	m.Update(eventsMsg{events: []event.Event{event.InvocationFinished{InvocationID: "nodata", FunctionID: "orders::get", Status: "ok", At: t0}}})
	press(m, "4", "g")
	if _, cmd := m.Update(keyMsg("r")); cmd != nil || !strings.Contains(m.flash, "not captured") || len(src.invokes) != 0 {
		t.Errorf("replay of a call without payload: cmd %v, flash %q, invokes %q; want a message and no call", cmd, m.flash, src.invokes)
	}
}

func TestParseTraceFlat(t *testing.T) {
	raw := json.RawMessage(`{"spans":[
		{"span_id":"c","parent_span_id":"a","name":"child","start_time":"2026-03-14T15:09:26.010Z","duration_ms":5,"status":{"code":2}},
		{"span_id":"a","name":"root","start_time_unix_nano":"1773500966000000000","end_time_unix_nano":1773500966050000000},
		{"span_id":"b","parent_span_id":"zzz","name":"orphan","start_time_ms":1773500966020,"duration_ns":1000}]}`)
	spans, err := parseTrace(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range spans {
		got = append(got, strings.Repeat(">", s.depth)+s.name+" "+fmtDuration(s.dur)+" "+s.status)
	}
	want := []string{"root 50ms ", ">child 5ms error", "orphan 1µs "}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseTrace = %q; want %q", got, want)
	}
	if _, err := parseTrace(json.RawMessage(`{`)); err == nil {
		t.Error("parseTrace of bad JSON: no error")
	}
}

func TestParseLogs(t *testing.T) {
	// The observability module's engine::logs::list shape, newest first.
	raw := json.RawMessage(`{"logs":[
		{"timestamp_unix_nano":1773500966000000000,"severity_text":"ERROR","body":"boom","worker":"orders","source":"stderr"},
		{"timestamp_unix_nano":1773500965000000000,"severity_text":"INFO","body":"up\nand running","service_name":"billing","source":"otlp"},
		{"timestamp_unix_nano":1773500964000000000,"severity_text":"INFO","body":"","worker":"x"}],"total":3}`)
	got := parseLogs(raw)
	if len(got) != 2 {
		t.Fatalf("parseLogs = %+v; want 2 records (the empty one dropped)", got)
	}
	if got[0].worker != "orders" || got[0].line != "boom" || got[0].stream != "stderr" || got[0].at.Unix() != 1773500966 {
		t.Errorf("first record = %+v", got[0])
	}
	if got[1].worker != "billing" || got[1].line != "up·and running" {
		t.Errorf("second record = %+v; want the service name and a flattened line", got[1])
	}
}

func TestLogsBackfill(t *testing.T) {
	m, _ := newTestModel(t)
	m.Update(logsMsg{entries: []logEntry{
		{at: t0.Add(-time.Hour), worker: "orders", stream: "INFO", line: "started an hour ago"},
		{at: t0, worker: "billing", stream: "INFO", line: "already in the live tail"},
	}})
	var lines []string
	for i := range m.st.logs.len() {
		lines = append(lines, m.st.logs.at(i).line)
	}
	if len(lines) != 4 || lines[0] != "started an hour ago" {
		t.Errorf("logs after backfill = %q; want the old record first and no duplicate of live lines", lines)
	}
}

func TestWaterfallBar(t *testing.T) {
	tests := []struct {
		off, dur, total time.Duration
		width           int
		want            string
	}{
		{0, 10, 10, 5, "█████"},
		{5, 5, 10, 4, "  ██"},
		{9, 0, 10, 4, "   █"},
		{0, 1, 1000, 4, "█   "},
		{0, 0, 0, 3, "█  "},
	}
	for _, tt := range tests {
		if got := waterfallBar(tt.off, tt.dur, tt.total, tt.width); got != tt.want {
			t.Errorf("waterfallBar(%d, %d, %d, %d) = %q; want %q", tt.off, tt.dur, tt.total, tt.width, got, tt.want)
		}
	}
}

// TestTableWidths: columns get the width their content needs, the widest
// give way first when the screen is narrow, and spare room goes to the
// flex columns; every line is exactly the table's width.
func TestTableWidths(t *testing.T) {
	tb := newTable(Common{Width: 40, Styles: DefaultStyles()}, []column{
		{title: "NAME", flex: 1, min: 4}, {title: "STATUS"}, {title: "CONFIG", flex: 1, min: 4},
	})
	rows := []row{{key: "x", cells: []string{"alpha", "restarting", strings.Repeat("c", 60)}}}
	tests := []struct {
		width int
		want  []int
	}{
		{40, []int{5, 10, 21}},   // CONFIG, the widest, gives way
		{100, []int{15, 10, 70}}, // the flex columns share the spare cells
		{20, []int{5, 6, 5}},     // the widest give way down to their minimums
	}
	for _, tt := range tests {
		tb.SetSize(tt.width, 5)
		if ws := tb.widths(rows); !slices.Equal(ws, tt.want) {
			t.Errorf("widths at %d = %v; want %v", tt.width, ws, tt.want)
		}
		out := tb.render(rows, "none")
		for i, l := range strings.Split(out, "\n") {
			if w := ansi.StringWidth(l); w != tt.width {
				t.Errorf("at %d line %d is %d wide: %q", tt.width, i, w, l)
			}
		}
	}
	// Two flex columns that both fit share the spare room by their flex,
	// growing by flexGrowth at most: no column stretches across a wide
	// screen.
	tb = newTable(Common{Width: 30, Styles: DefaultStyles()}, []column{{title: "A", flex: 1}, {title: "B", flex: 2}})
	if ws := tb.widths(nil); !slices.Equal(ws, []int{9, 17}) {
		t.Errorf("flex widths at 30 = %v; want [9 17]", ws)
	}
	tb.SetSize(200, 5)
	if ws := tb.widths(nil); !slices.Equal(ws, []int{1 + flexGrowth, 1 + flexGrowth}) {
		t.Errorf("flex widths at 200 = %v; want both at %d", ws, 1+flexGrowth)
	}
}

func BenchmarkApplyInvocation(b *testing.B) {
	s := newState()
	s.apply(event.WorkerUpdated{WorkerID: "w", Name: "w", At: t0})
	for b.Loop() {
		s.apply(event.InvocationStarted{InvocationID: "i", FunctionID: "f", TargetWorkerID: "w", At: t0})
		s.apply(event.InvocationFinished{InvocationID: "i", FunctionID: "f", TargetWorkerID: "w", Worker: "w", Status: "ok", Duration: time.Millisecond, At: t0})
	}
}

func BenchmarkRender(b *testing.B) {
	src := newFakeSource()
	snap, evs := fixture()
	m := New(context.Background(), src, Options{Now: fixedNow, Tick: -1})
	defer m.Close()
	m.Update(tea.WindowSizeMsg{Width: goldenW, Height: goldenH})
	m.Update(snapshotMsg{snap: snap})
	for range 200 {
		m.Update(eventsMsg{events: evs})
	}
	m.Update(keyMsg("4"))
	for b.Loop() {
		m.refresh()
		_ = m.View()
	}
}

// TestKeyMapIsTheSource: rebinding a key changes what the key does, the
// footer and the help screen, with nothing else edited.
func TestKeyMapIsTheSource(t *testing.T) {
	m, _ := newTestModel(t)
	m.Keys.Invocations.Pause = bind("p", "hold the tail", "p")
	press(m, "4", "space")
	if m.invocations.paused {
		t.Fatal("space still pauses after Pause was bound to p")
	}
	press(m, "p")
	if !m.invocations.paused {
		t.Fatal("p does not pause after Pause was bound to it")
	}
	if got := ansi.Strip(m.footer()); !strings.Contains(got, "p hold the tail") {
		t.Errorf("footer %q does not show the new binding", got)
	}
	help := strings.Join(m.helpLines(), "\n")
	if !regexp.MustCompile(`(?m)^  p +hold the tail$`).MatchString(help) || regexp.MustCompile(`(?m)^  space +pause$`).MatchString(help) {
		t.Errorf("help does not follow the key map:\n%s", help)
	}
	// Every page's hints are on the help screen under its name.
	for i, p := range m.pages {
		for _, b := range p.ShortHelp() {
			if !strings.Contains(help, b.Help().Key) {
				t.Errorf("view %s: %q is in the footer but not in help", viewNames[i], b.Help().Key)
			}
		}
	}
}

// TestBreakpointKeys: the Breakpoints view's keys and b go through
// Source.Control with the engine's breakpoint functions.
func TestBreakpointKeys(t *testing.T) {
	m, src := newTestModel(t)
	run := func(keys ...string) {
		t.Helper()
		for _, k := range keys {
			if _, cmd := m.Update(keyMsg(k)); cmd != nil {
				if msg := cmd(); msg != nil {
					m.Update(msg)
				}
			}
		}
	}
	run("7", "c")
	run("7", "x")
	run("e", "ctrl+s")
	run("2", "b")    // billing::charge has a breakpoint: b clears it
	run("down", "b") // http::health has none: b sets one
	want := []string{
		`engine::breakpoints::release {"hold_id":"hold-1","action":"continue"}`,
		`engine::breakpoints::release {"hold_id":"hold-1","action":"fail","error":"failed at a breakpoint from iii tui"}`,
		`engine::breakpoints::release {"hold_id":"hold-1","data":{"amount":40}}`,
		`engine::breakpoints::clear {"function_ids":["billing::charge"]}`,
		`engine::breakpoints::set {"function_ids":["http::health"]}`,
	}
	got := make([]string, len(src.controls))
	for i, c := range src.controls {
		got[i] = strings.Join(strings.Fields(c), " ")
	}
	for i := range want {
		want[i] = strings.Join(strings.Fields(want[i]), " ")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("controls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestFireNow: f on a cron trigger fires it through engine::cron::fire,
// on a queue trigger re-delivers its topic's dead letters.
func TestFireNow(t *testing.T) {
	m, src := newTestModel(t)
	run := func(keys ...string) {
		for _, k := range keys {
			if _, cmd := m.Update(keyMsg(k)); cmd != nil {
				if msg := cmd(); msg != nil {
					m.Update(msg)
				}
			}
		}
	}
	run("3", "f", "down", "down", "f") // cron t-2 sorts first, the queue t-3 last
	want := []string{`engine::cron::fire {"trigger_id":"t-2"}`, `iii::queue::redrive {"topic":"lookups"}`}
	if !reflect.DeepEqual(src.controls, want) {
		t.Errorf("controls = %q; want %q", src.controls, want)
	}
}

// TestClusterColumns: a snapshot from an engine in a cluster adds an
// engine column to Workers and Functions and the peers to the header;
// a single engine's views have neither.
func TestClusterColumns(t *testing.T) {
	m, _ := newTestModel(t)
	screen := func() string { return ansi.Strip(m.render()) }
	if s := screen(); strings.Contains(s, "ENGINE") || strings.Contains(s, "cluster") {
		t.Fatalf("a single engine shows cluster columns:\n%s", s)
	}
	snap, _ := fixture()
	for i := range snap.Workers {
		snap.Workers[i].Namespace = "" // no NAMESPACE column here
	}
	snap.Engine, snap.Peers = "alpha", []string{"beta"}
	snap.Workers[0].Engine = "beta"
	snap.Functions[2].Engines = []string{"alpha", "beta"}
	m.Update(snapshotMsg{snap: snap})
	press(m, "1")
	s := screen()
	if !strings.Contains(s, "cluster: engine alpha + peers beta") || !regexp.MustCompile(`NAME +ENGINE +RUNTIME`).MatchString(s) ||
		!regexp.MustCompile(`(?m)^ *orders +beta +node`).MatchString(s) || !regexp.MustCompile(`(?m)^ *billing +alpha +go`).MatchString(s) {
		t.Errorf("workers in a cluster:\n%s", s)
	}
	press(m, "2")
	if s := screen(); !regexp.MustCompile(`WORKERS +ENGINES +CALLS`).MatchString(s) || !regexp.MustCompile(`orders::create +orders +alpha, beta `).MatchString(s) {
		t.Errorf("functions in a cluster:\n%s", s)
	}
}

// TestNamespaceColumns: Workers and Functions have a NAMESPACE column
// once a worker is outside the default namespace, from the snapshot or
// from its declaration's event; a function names its workers' namespaces.
func TestNamespaceColumns(t *testing.T) {
	m, _ := newTestModel(t)
	screen := func() string { return ansi.Strip(m.render()) }
	snap, _ := fixture()
	for i := range snap.Workers {
		snap.Workers[i].Namespace = ""
	}
	m.Update(snapshotMsg{snap: snap})
	press(m, "1")
	if s := screen(); strings.Contains(s, "NAMESPACE") {
		t.Fatalf("no worker outside the default namespace, yet a NAMESPACE column:\n%s", s)
	}
	// orders declares itself in the shop namespace (a 0.25 SDK's
	// engine::workers::register).
	m.Update(eventsMsg{events: []event.Event{event.WorkerUpdated{WorkerID: "w-orders-0001", Name: "orders", Runtime: "node", PID: 4242, Namespace: "shop", At: t0}}})
	s := screen()
	if !regexp.MustCompile(`NAME +NAMESPACE +RUNTIME`).MatchString(s) || !regexp.MustCompile(`(?m)^ *orders +shop +node`).MatchString(s) ||
		!regexp.MustCompile(`(?m)^ *billing +default +go`).MatchString(s) {
		t.Errorf("workers with a namespace:\n%s", s)
	}
	press(m, "2")
	if s := screen(); !regexp.MustCompile(`FUNCTION +NAMESPACE +WORKERS`).MatchString(s) ||
		!regexp.MustCompile(`orders::create +shop +orders `).MatchString(s) || !regexp.MustCompile(`billing::charge +default +billing `).MatchString(s) {
		t.Errorf("functions with a namespace:\n%s", s)
	}
	press(m, "1", "down", "enter")
	if s := screen(); !strings.Contains(s, "namespace  shop") {
		t.Errorf("the worker's detail does not name its namespace:\n%s", s)
	}
}

// In a cluster, one id served in two namespaces on two engines is one
// snapshot entry per namespace: the row names both engines and both
// namespaces (the remote worker's namespace comes from its engine's
// advertisement).
func TestResyncClusterNamespaces(t *testing.T) {
	s := newState()
	s.resync(Snapshot{Engine: "a:1", Peers: []string{"b:1", "c:1"},
		Workers: []Worker{
			{ID: "wb", Name: "state", Engine: "b:1", Namespace: "orders", Functions: []string{"state::get"}},
			{ID: "wc", Name: "state", Engine: "c:1", Namespace: "billing", Functions: []string{"state::get"}},
		},
		Functions: []Function{
			{ID: "state::get", Namespace: "billing", Workers: []string{"state"}, WorkerIDs: []string{"wc"}, Engines: []string{"c:1"}},
			{ID: "state::get", Namespace: "orders", Description: "reads", Workers: []string{"state"}, WorkerIDs: []string{"wb"}, Engines: []string{"b:1"}},
		}})
	f := s.funcs["state::get"]
	if f == nil {
		t.Fatal("state::get not listed")
	}
	if !reflect.DeepEqual(f.engines, []string{"b:1", "c:1"}) || f.description != "reads" {
		t.Errorf("engines %q, description %q; want both engines and the description", f.engines, f.description)
	}
	if got := s.funcNamespaces(f); !reflect.DeepEqual(got, []string{"billing", "orders"}) {
		t.Errorf("namespaces %q; want billing, orders", got)
	}
	if !s.namespaced() {
		t.Error("remote namespaced workers do not turn the NAMESPACE column on")
	}
}

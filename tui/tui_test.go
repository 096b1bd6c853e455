package tui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest/v2"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine/event"
)

// teatest leaves a goroutine per program waiting for SIGINT.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/charmbracelet/x/exp/teatest/v2.NewTestModel.func2"))
}

const (
	goldenW, goldenH = 120, 36
	waitFor          = 5 * time.Second
)

// probeMsg asks the running program for its screen; the filter installed
// by harness answers it from inside the event loop.
type probeMsg struct{ reply chan string }

// harness runs a Model in a teatest program over a fake source.
type harness struct {
	t       *testing.T
	tm      *teatest.TestModel
	src     *fakeSource
	batches atomic.Int64 // eventsMsg handled
	events  atomic.Int64 // events in them
}

func newHarness(t *testing.T, src *fakeSource, opts Options) *harness {
	t.Helper()
	return newHarnessSize(t, src, opts, goldenW, goldenH)
}

func newHarnessSize(t *testing.T, src *fakeSource, opts Options, width, height int) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Now == nil {
		opts.Now = fixedNow
	}
	if opts.Tick == 0 {
		opts.Tick = -1
	}
	if opts.Batch == 0 {
		opts.Batch = time.Millisecond
	}
	m := New(ctx, src, opts)
	h := &harness{t: t, src: src}
	filter := func(model tea.Model, msg tea.Msg) tea.Msg {
		switch msg := msg.(type) {
		case probeMsg:
			msg.reply <- model.(*Model).render()
			return nil
		case eventsMsg:
			h.batches.Add(1)
			h.events.Add(int64(len(msg.events)))
		}
		return msg
	}
	h.tm = teatest.NewTestModel(t, m, teatest.WithInitialTermSize(width, height),
		teatest.WithProgramOptions(tea.WithFilter(filter), tea.WithColorProfile(colorprofile.Ascii)))
	t.Cleanup(func() {
		h.tm.Quit()
		h.tm.WaitFinished(t, teatest.WithFinalTimeout(waitFor))
		cancel()
		m.Close()
	})
	return h
}

// screen is the model's current screen.
func (h *harness) screen() string {
	h.t.Helper()
	reply := make(chan string, 1)
	h.tm.Send(probeMsg{reply})
	select {
	case s := <-reply:
		return s
	case <-time.After(waitFor):
		h.t.Fatal("the program did not answer a probe in time")
		return ""
	}
}

// waitScreen polls the screen until it contains every want.
func (h *harness) waitScreen(want ...string) string {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		s := h.screen()
		plain := ansi.Strip(s)
		missing := ""
		for _, w := range want {
			if !strings.Contains(plain, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("screen never showed %q; last screen:\n%s", missing, plain)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

func (h *harness) keys(keys ...string) {
	for _, k := range keys {
		h.tm.Send(keyMsg(k))
	}
}

func keyMsg(k string) tea.KeyPressMsg {
	switch k {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "tab":
		return tea.KeyPressMsg{Code: tea.KeyTab}
	case "shift+tab":
		return tea.KeyPressMsg{Code: tea.KeyTab, Mod: tea.ModShift}
	case "space":
		return tea.KeyPressMsg{Code: tea.KeySpace, Text: " "}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "backspace":
		return tea.KeyPressMsg{Code: tea.KeyBackspace}
	case "ctrl+s":
		return tea.KeyPressMsg{Code: 's', Mod: tea.ModCtrl}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	r := []rune(k)[0]
	return tea.KeyPressMsg{Code: r, Text: k}
}

// ascii downsamples a screen to the ASCII color profile: no colors,
// attributes (bold, reverse) kept.
func ascii(s string) []byte {
	var buf bytes.Buffer
	w := &colorprofile.Writer{Forward: &buf, Profile: colorprofile.Ascii}
	if _, err := w.WriteString(s); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// loaded starts a harness on the fixture and waits for it to show.
func loaded(t *testing.T, src *fakeSource) *harness {
	t.Helper()
	return loadedSize(t, src, goldenW, goldenH)
}

func loadedSize(t *testing.T, src *fakeSource, width, height int) *harness {
	t.Helper()
	snap, evs := fixture()
	src.setSnapshot(snap)
	h := newHarnessSize(t, src, Options{}, width, height)
	src.publish(evs...)
	// Every event of the fixture is in (they may come in several
	// batches), then the first screen is as expected.
	deadline := time.Now().Add(waitFor)
	for h.events.Load() < int64(len(evs)) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the fixture's %d events arrived", h.events.Load(), len(evs))
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	h.waitScreen("billing", "calls 6")
	return h
}

// TestGolden renders each view of the fixture at 80x24 and 200x50 and
// compares it with testdata/TestGolden/<size>/<name>.golden (go test
// -update rewrites them).
func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		keys []string
		want []string // on screen before the snapshot is taken
	}{
		{"workers", []string{"1"}, []string{"mailer", "crashed", "compliance"}},
		{"functions", []string{"2"}, []string{"P99", "orders::get", "compliance"}},
		{"triggers", []string{"3"}, []string{"parked", "api_path"}},
		{"invocations", []string{"4"}, []string{"card_declined", "orders → billi"}},
		{"invocations_detail", []string{"4", "down", "down", "enter"}, []string{"Invocation billing::charge", "insufficient funds"}},
		{"traces_local", []string{"4", "t"}, []string{"observability module not running", "6 spans (1 observer activation)", "↪ watch::audit"}},
		{"trace_activation", []string{"4", "G", "t", "down", "enter"}, []string{"observer  obs-1 on orders::create (activation act-1"}},
		{"logs", []string{"6"}, []string{"ModuleNotFoundError", "follow"}},
		{"logs_one_worker", []string{"6", "w", "w"}, []string{"worker mailer"}},
		{"help", []string{"?"}, []string{"Keys", "Global"}},
		{"filter", []string{"2", "/", "o", "r", "d"}, []string{"/ord"}},
		{"worker_detail", []string{"1", "down", "down", "down", "enter"}, []string{"Worker mailer", "last output"}},
		{"paused", []string{"4", "space"}, []string{"PAUSED", "  orders → bil"}},
		{"invocations_held", []string{"4", "down"}, []string{"held · g follows", "  orders → bil"}},
		{"breakpoints", []string{"7"}, []string{"break on billing::charge", `{"amount":40}`}},
		{"breakpoint_edit", []string{"7", "e"}, []string{"Edit the held call", `"amount": 40`}},
		{"observers", []string{"8"}, []string{"8 Observers", "suspended", "alerts::page"}},
	}
	for _, size := range [][2]int{{80, 24}, {200, 50}} {
		t.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					h := loadedSize(t, newFakeSource(), size[0], size[1])
					h.keys(tt.keys...)
					screen := h.waitScreen(tt.want...)
					checkScreen(t, screen, size[0], size[1], strings.HasPrefix(tt.name, "logs"))
					golden.RequireEqual(t, ascii(screen))
				})
			}
		})
	}
}

// checkScreen: the screen is exactly width x height, and what must never
// be cut is whole: the errors counter, the help and quit hints, the
// Logs view's follow marker.
func checkScreen(t *testing.T, screen string, width, height int, logsView bool) {
	t.Helper()
	lines := strings.Split(ansi.Strip(screen), "\n")
	if len(lines) != height {
		t.Errorf("screen has %d lines; want %d", len(lines), height)
	}
	for i, l := range lines {
		if w := ansi.StringWidth(l); w != width {
			t.Errorf("line %d is %d cells; want %d: %q", i, w, width, l)
		}
	}
	if !regexp.MustCompile(`errors \d+`).MatchString(lines[1]) {
		t.Errorf("the header's errors counter is cut: %q", lines[1])
	}
	if logsView && !strings.Contains(lines[2], "follow") && !strings.Contains(lines[2], "scroll") {
		t.Errorf("the Logs view's follow marker is cut: %q", lines[2])
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "esc close") && !strings.Contains(last, "q quit") && !strings.Contains(last, "esc clear") {
		t.Errorf("the footer's hints are cut: %q", last)
	}
}

func TestGoldenInvoke(t *testing.T) {
	src := newFakeSource()
	src.answers["orders::get"] = func(data json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"order_id":"o-1","status":"shipped","echo":` + string(data) + `}`), nil
	}
	h := loaded(t, src)
	h.keys("2", "down", "down", "down", "i")
	h.waitScreen("Invoke orders::get", `"order_id": "o-1"`)
	h.keys("ctrl+s")
	golden.RequireEqual(t, ascii(h.waitScreen("result in", `"status": "shipped"`)))
	if got := src.invokes; len(got) != 1 || !strings.HasPrefix(got[0], "orders::get {") {
		t.Errorf("invokes = %q; want one call of orders::get with the last payload", got)
	}
}

func TestGoldenInvokeBadJSON(t *testing.T) {
	h := loaded(t, newFakeSource())
	h.keys("2", "i")
	h.waitScreen("Invoke billing::charge")
	h.tm.Send(tea.PasteMsg{Content: "{oops"})
	h.keys("ctrl+s")
	golden.RequireEqual(t, ascii(h.waitScreen("not valid JSON")))
}

func TestGoldenReplay(t *testing.T) {
	src := newFakeSource()
	src.answers["billing::charge"] = func(json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"charged":false,"reason":"limit"}`), nil
	}
	h := loaded(t, src)
	// The fourth row of the tail is the successful billing::charge call.
	h.keys("4", "down", "down", "down", "r")
	golden.RequireEqual(t, ascii(h.waitScreen("Replay billing::charge", "result differs", `"reason": "limit"`)))
}

func TestGoldenTraceFromObservability(t *testing.T) {
	src := newFakeSource()
	snap, evs := fixture()
	snap.Functions = append(snap.Functions, Function{ID: FnTracesTree, Workers: []string{"iii-observability"}, Internal: true})
	src.setSnapshot(snap)
	base := t0.Add(-900 * time.Millisecond).UnixNano()
	src.answers[FnTracesTree] = func(data json.RawMessage) (json.RawMessage, error) {
		// The observability module's shape: roots with nested children.
		node := func(id, parent, name, worker, status string, from, to int64, children string) string {
			return fmt.Sprintf(`{"trace_id":"trace-a","span_id":%q,"parent_span_id":%q,"name":%q,"worker":%q,"status":%q,`+
				`"start_time_unix_nano":%d,"end_time_unix_nano":%d,"duration_ms":%g,"attributes":{"iii.function.id":%q},"children":[%s]}`,
				id, parent, name, worker, status, base+from*1e6, base+to*1e6, float64(to-from), name, children)
		}
		// An observer's activation: the engine's span of the target, marked
		// by its trigger.
		activation := fmt.Sprintf(`{"span_id":"span-06","parent_span_id":"span-01","name":"watch::audit","worker":"watcher","status":"ok",`+
			`"start_time_unix_nano":%d,"end_time_unix_nano":%d,"attributes":{"iii.trigger":"observe","iii.invocation.id":"inv-0006"}}`,
			base+30*1e6, base+38*1e6)
		tree := `{"trace_id":"trace-a","span_count":5,"roots":[` +
			node("span-01", "", "orders::create", "orders", "ok", 0, 40,
				node("span-02", "span-01", "billing::charge", "billing", "ok", 5, 15, node("span-09", "span-02", "stripe.charge", "billing", "ok", 6, 14, ""))+","+
					node("span-03", "span-01", "billing::charge", "billing", "error", 20, 22, "")+","+activation) + `]}`
		return json.RawMessage(tree), nil
	}
	h := newHarness(t, src, Options{})
	src.publish(evs...)
	h.waitScreen("calls 6")
	h.keys("4", "G", "t")
	golden.RequireEqual(t, ascii(h.waitScreen("5 spans (1 observer activation)", "stripe.charge", "↪ watch::audit")))
	// The activation's detail names its observer, from the activation event.
	h.keys("G", "enter")
	h.waitScreen("observer  obs-1 on orders::create (activation act-1 for call inv-0001)")
}

// TestResize shrinks and grows the terminal: every line fits, the screen
// has exactly the terminal's height.
func TestResize(t *testing.T) {
	h := loaded(t, newFakeSource())
	for _, size := range [][2]int{{80, 24}, {60, 12}, {160, 50}, {120, 36}} {
		for _, view := range []string{"1", "2", "3", "4", "5", "6", "?"} {
			h.tm.Send(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
			h.keys(view)
			s := h.screen()
			lines := strings.Split(s, "\n")
			if len(lines) != size[1] {
				t.Errorf("%dx%d view %s: %d lines; want %d", size[0], size[1], view, len(lines), size[1])
			}
			for i, l := range lines {
				if w := ansi.StringWidth(l); w != size[0] {
					t.Errorf("%dx%d view %s: line %d is %d cells wide; want %d: %q", size[0], size[1], view, i, w, size[0], ansi.Strip(l))
				}
			}
			if view == "?" {
				h.keys("esc")
			}
		}
		if size == [2]int{80, 24} {
			h.keys("4")
			golden.RequireEqual(t, ascii(h.screen()))
		}
	}
}

// TestQuit: q ends the program.
func TestQuit(t *testing.T) {
	h := loaded(t, newFakeSource())
	h.keys("q")
	h.tm.WaitFinished(t, teatest.WithFinalTimeout(waitFor))
}

// TestFlood pushes 100,000 invocations through the real program: they
// arrive in a few batches (not one render per event), the counters are
// exact, and the program answers a probe while the flood runs.
func TestFlood(t *testing.T) {
	src := newFakeSource()
	snap, _ := fixture()
	src.setSnapshot(snap)
	h := newHarness(t, src, Options{Batch: 20 * time.Millisecond, Buffer: 1 << 18})
	h.waitScreen("orders")
	const n = 100_000
	done := make(chan struct{})
	// Exits after publishing n finished calls.
	go func() {
		defer close(done)
		for i := range n {
			src.publish(event.InvocationFinished{InvocationID: fmt.Sprint(i), FunctionID: "orders::get",
				TargetWorkerID: "w-orders-0001", Worker: "orders", Trigger: "http", Status: event.StatusOK,
				Duration: time.Duration(i%100) * time.Millisecond, At: t0.Add(-time.Second)})
		}
	}()
	start := time.Now()
	h.screen()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a probe during the flood took %v; want the program to stay responsive", d)
	}
	<-done
	h.waitScreen("calls 100k")
	if b := h.batches.Load(); b > n/100 {
		t.Errorf("%d events arrived in %d batches; want them coalesced (at most %d)", n, b, n/100)
	}
	s := ansi.Strip(h.screen())
	if !strings.Contains(s, "100k inv/s") {
		t.Errorf("header does not show the rate of the last second:\n%s", s)
	}
	if d := src.subs[0].Dropped(); d != 0 {
		t.Logf("%d events dropped during the flood", d)
	}
}

// TestFloodResync: a subscription that overflows is resynced from a
// snapshot and the drop is shown.
func TestFloodResync(t *testing.T) {
	src := newFakeSource()
	snap, _ := fixture()
	src.setSnapshot(snap)
	h := newHarness(t, src, Options{Buffer: 4, Batch: 50 * time.Millisecond})
	h.waitScreen("orders")
	// The new worker is only in the snapshot; its events overflow.
	snap.Workers = append(snap.Workers, Worker{ID: "w-new", Name: "newcomer", Runtime: "python", PID: 77, Status: "connected", ConnectedAt: t0})
	src.setSnapshot(snap)
	for i := range 100 {
		src.publish(event.LogLine{Worker: "orders", Stream: "stdout", Line: fmt.Sprint("line ", i), At: t0})
	}
	h.waitScreen("newcomer", "events dropped, resynced")
}

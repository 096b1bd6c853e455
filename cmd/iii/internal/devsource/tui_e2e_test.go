package devsource

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/teatest/v2"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	_ "github.com/iii-workbench/iii/engine/modules/observability"
	"github.com/iii-workbench/iii/sdk"
	"github.com/iii-workbench/iii/tui"
)

type probeMsg struct{ reply chan string }

// runTUI runs the TUI over src in a 120x36 teatest program until the
// test ends; probe returns its screen (ANSI stripped) and how long the
// program took to answer.
func runTUI(t *testing.T, ctx context.Context, src tui.Source, opts tui.Options) (*teatest.TestModel, func() (string, time.Duration)) {
	t.Helper()
	tctx, tcancel := context.WithCancel(ctx)
	m := tui.New(tctx, src, opts)
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 36),
		teatest.WithProgramOptions(tea.WithFilter(func(model tea.Model, msg tea.Msg) tea.Msg {
			if p, ok := msg.(probeMsg); ok {
				p.reply <- ansi.Strip(model.View().Content)
				return nil
			}
			return msg
		})))
	t.Cleanup(func() {
		tm.Quit()
		tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
		tcancel()
		m.Close()
	})
	probe := func() (string, time.Duration) {
		t.Helper()
		start := time.Now()
		reply := make(chan string, 1)
		tm.Send(probeMsg{reply})
		select {
		case s := <-reply:
			return s, time.Since(start)
		case <-ctx.Done():
			t.Fatal("no answer to a probe")
			return "", 0
		}
	}
	return tm, probe
}

// TestTUIOnEngine runs the TUI over a real engine with the observability
// module: a call chain between two Go SDK workers shows in the invocation
// tail, and its waterfall comes from engine::traces::tree, with the
// activation of an observer of back::work in it; a worker declared in a
// namespace shows in the NAMESPACE column.
func TestTUIOnEngine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := config.Parse("config.yaml", []byte("engine:\n  port: 0\nmodules:\n  - class: OtelModule\n    config: {metrics_enabled: false}\n"),
		func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(ctx))

	back, err := sdk.Connect(ctx, srv.URL(), sdk.WithName("back"), sdk.WithTelemetry(false)) // engine spans only: the waterfall is read once
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close(context.WithoutCancel(ctx))
	front, err := sdk.Connect(ctx, srv.URL(), sdk.WithName("front"), sdk.WithTelemetry(false))
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close(context.WithoutCancel(ctx))
	if err := back.RegisterFunction("back::work", func(_ context.Context, in json.RawMessage) (any, error) {
		return map[string]any{"done": true}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := front.RegisterFunction("front::go", func(ctx context.Context, in json.RawMessage) (any, error) {
		return sdk.Call[json.RawMessage](ctx, front, "back::work", in)
	}); err != nil {
		t.Fatal(err)
	}

	// A 0.25 SDK's worker in a namespace of its own, and one that observes
	// back::work (the protocol as the Python SDK speaks it).
	ledger := enginetest.Dial(t, srv.URL())
	ledger.Register("ledger::post")
	ledger.Declare(map[string]any{"name": "ledger", "runtime": "python", "namespace": "accounts", "features": []string{"large-messages.v1"}})
	audit := enginetest.Dial(t, srv.URL())
	audit.Register("audit::record")
	audit.Declare(map[string]any{"name": "audit", "runtime": "python", "features": []string{"observe.v1"}})
	audit.Send(map[string]any{"type": "observe", "id": "obs-e2e", "source": map[string]any{"function_id": "back::work"},
		"target": map[string]any{"function_id": "audit::record"}})
	next := func(typ string) map[string]any { // skips the frames the test does not read
		t.Helper()
		for {
			if m := audit.Next(enginetest.FrameTimeout); m["type"] == typ {
				return m
			}
		}
	}
	if res := next("observeresult"); res["state"] != "active" {
		t.Fatalf("observeresult %v; want active", res)
	}

	src := New(srv, "test")
	tm, probe := runTUI(t, ctx, src, tui.Options{Tick: -1, Batch: 5 * time.Millisecond})
	screen := func(want ...string) string {
		t.Helper()
		var s string
		for tick := time.NewTicker(10 * time.Millisecond); ; {
			s, _ = probe()
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(s, w)
			}
			if ok {
				tick.Stop()
				return s
			}
			select {
			case <-ctx.Done():
				t.Fatalf("screen never showed %q:\n%s", want, s)
			case <-tick.C:
			}
		}
	}
	key := func(k string) { tm.Send(tea.KeyPressMsg{Code: rune(k[0]), Text: k}) }

	screen("front", "back")
	// The TUI subscribed in New, so it sees this call.
	if _, err := src.Invoke(ctx, "front::go", json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	act := next("invokefunction")
	audit.Send(map[string]any{"type": "invocationresult", "invocation_id": act["invocation_id"], "function_id": act["function_id"], "result": nil})
	key("4")
	screen("front::go", "back::work", "front → back", "audit::record", "observe → audit")
	key("G") // the oldest row: front::go
	key("t")
	s := screen("front::go", "back::work", "3 spans (1 observer activation)", "↪ audit::record")
	if strings.Contains(s, "observability module not running") {
		t.Errorf("the trace came from the TUI's own events, not engine::traces::tree:\n%s", s)
	}
	// The child is indented under its parent in the waterfall.
	if !strings.Contains(s, " front::go ") || !strings.Contains(s, "   back::work ") {
		t.Errorf("waterfall lacks the parent/child layout:\n%s", s)
	}
	key("1")
	screen("NAMESPACE", "accounts", "ledger")
}

// TestTUIUnderLoad runs 20,000 calls through a real engine at 10,000 a
// second (20,000 events a second) while the TUI runs: it keeps answering
// within a bounded time, drops nothing and counts every call.
func TestTUIUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := devserver.Start(ctx, devserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(ctx))
	err = srv.Engine().RegisterFunction("load-test", engine.Function{ID: "load::noop",
		Handler: func(context.Context, *engine.Call) (json.RawMessage, error) { return json.RawMessage(`true`), nil }})
	if err != nil {
		t.Fatal(err)
	}
	src := New(srv, "test")
	tm, probe := runTUI(t, ctx, src, tui.Options{})
	tm.Send(tea.KeyPressMsg{Code: '4', Text: "4"})

	const workers, perWorker = 4, 5000
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		// Exits after perWorker calls, 25 every 10 ms (2,500 a second).
		go func() {
			defer wg.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for n := 0; n < perWorker; n += 25 {
				<-tick.C
				for range 25 {
					if _, err := srv.Engine().Invoke(ctx, engine.Request{FunctionID: "load::noop"}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }() // exits when the load is done
	var worst time.Duration
	for loading := true; loading; {
		select {
		case <-loadDone:
			loading = false
		default:
			_, d := probe()
			worst = max(worst, d)
		}
	}
	if worst > time.Second {
		t.Errorf("the TUI took up to %v to answer under load; want it responsive", worst)
	}
	for tick := time.NewTicker(20 * time.Millisecond); ; {
		s, _ := probe()
		if strings.Contains(s, "events dropped") {
			t.Fatalf("the TUI dropped events at 10,000 calls a second:\n%s", s)
		}
		if strings.Contains(s, "calls 20k") {
			tick.Stop()
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the header never counted 20k calls:\n%s", s)
		case <-tick.C:
		}
	}
	t.Logf("slowest answer under load: %v", worst)
}

package devsource

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
	_ "github.com/iii-workbench/iii/engine/modules/exec"
	_ "github.com/iii-workbench/iii/engine/modules/http"
	"github.com/iii-workbench/iii/sdk"
	"github.com/iii-workbench/iii/tui"
)

// teatest leaves a goroutine per program waiting for SIGINT.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/charmbracelet/x/exp/teatest/v2.NewTestModel.func2"))
}

func TestSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := config.Parse("config.yaml", []byte("engine:\n  port: 0\nmodules:\n  - class: RestApiModule\n    config: {port: 0}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(ctx))
	src := New(srv, "1.2.3")

	info := src.Info()
	if info.URL != srv.URL() || info.Redis != "memory, lost on exit" || info.Version != "1.2.3" ||
		len(info.Endpoints) != 1 || info.Endpoints[0].Name != "http" || info.Endpoints[0].Addr == "" {
		t.Errorf("Info() = %+v; want the URL, embedded redis and the http listener", info)
	}

	sub := src.Subscribe(1024)
	defer sub.Close()
	w, err := sdk.Connect(ctx, srv.URL(), sdk.WithName("echoer"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.WithoutCancel(ctx))
	if err := w.RegisterFunction("echoer::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }); err != nil {
		t.Fatal(err)
	}
	// Wait until the registration shows in a snapshot. The Go SDK sends
	// its metadata before any later registration, so the same snapshot
	// must show the worker with it (engine::snapshot copies the registries
	// once).
	var snap tui.Snapshot
	for tick := time.NewTicker(10 * time.Millisecond); ; {
		snap = src.Snapshot()
		if hasFunction(snap, "echoer::echo") {
			tick.Stop()
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("echoer::echo never appeared in the snapshot: %+v", snap)
		case <-tick.C:
		}
	}
	var found bool
	for _, wk := range snap.Workers {
		if wk.Name == "echoer" && wk.Runtime == "go" && !wk.Internal && wk.PID > 0 && slices.Contains(wk.Functions, "echoer::echo") {
			found = true
		}
	}
	if !found {
		t.Errorf("snapshot workers %+v lack the echoer serving echoer::echo (functions %+v)", snap.Workers, snap.Functions)
	}
	if snap.Processes != nil {
		t.Errorf("Processes = %+v without an exec module; want nil", snap.Processes)
	}

	res, err := src.Invoke(ctx, "echoer::echo", json.RawMessage(`{"n":1}`))
	if err != nil || string(res) != `{"n":1}` {
		t.Errorf("Invoke = %s, %v; want the payload back", res, err)
	}
	if _, err := src.Query(ctx, "echoer::echo", json.RawMessage(`2`)); err != nil {
		t.Errorf("Query: %v", err)
	}
	// The calls carry their trigger kinds, so the TUI can hide its own.
	want := []string{tui.TriggerUser, tui.TriggerQuery}
	for len(want) > 0 {
		select {
		case ev := <-sub.C():
			if f, ok := ev.(event.InvocationFinished); ok && f.FunctionID == "echoer::echo" {
				if f.Trigger != want[0] {
					t.Errorf("call trigger = %q; want %q", f.Trigger, want[0])
				}
				want = want[1:]
			}
		case <-ctx.Done():
			t.Fatalf("no finished events for %q", want)
		}
	}
	if err := src.Restart(ctx, "echoer"); !errors.Is(err, tui.ErrRestartUnsupported) {
		t.Errorf("Restart without exec = %v; want ErrRestartUnsupported", err)
	}
}

func hasFunction(s tui.Snapshot, id string) bool {
	for _, f := range s.Functions {
		if f.ID == id {
			return true
		}
	}
	return false
}

// A line a worker process prints the moment it is spawned reaches the
// first subscriber, however late that subscriber comes.
func TestFirstSubscriberGetsEarlyLines(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := config.Parse("config.yaml", []byte("engine:\n  port: 0\nmodules:\n  - class: ExecModule\n    config:\n      workers:\n"+
		"        - name: early\n          run: echo early-marker; exec sleep 60\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var logs enginetest.Logs
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg, Logger: logs.Logger(), EventBuffer: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(ctx))
	src := New(srv, "")
	// Subscribe only once the line is in the server's log, which the exec
	// module writes just before it publishes the line.
	enginetest.WaitFor(t, "the worker's line in the log", func() bool { return strings.Contains(logs.String(), "early-marker") })

	sub := src.Subscribe(1024)
	defer sub.Close()
	waitLine(ctx, t, sub, "early-marker")
	if again := src.Subscribe(16); again == sub {
		t.Error("the second Subscribe returned the early subscription again")
	} else {
		again.Close()
	}
}

func waitLine(ctx context.Context, t *testing.T, sub tui.Subscription, marker string) {
	t.Helper()
	for {
		select {
		case ev := <-sub.C():
			if l, ok := ev.(event.LogLine); ok && l.Line == marker {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no log line %q", marker)
		}
	}
}

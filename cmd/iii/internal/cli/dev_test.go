package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/sdk"
)

// waitOutput polls w until re matches and returns the submatches.
func waitOutput(ctx context.Context, t *testing.T, w *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindStringSubmatch(w.String()); m != nil {
			return m
		}
		select {
		case <-ctx.Done():
			t.Fatalf("output never matched %q; output:\n%s", re, w.String())
		case <-tick.C:
		}
	}
}

// devNoTUI runs iii dev --no-tui on the config text in-process; stop
// ends it and waits for the engine to shut down (also at cleanup).
func devNoTUI(t *testing.T, ctx context.Context, config string) (stdout, logs *syncBuffer, stop func()) {
	t.Helper()
	path := writeConfig(t, config)
	env, stdout, _, logs := testEnv(nil)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// Exits when stop cancels runCtx and the engine has shut down.
	go func() {
		defer close(done)
		Run(runCtx, env, []string{"dev", "--no-tui", "--config", path})
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stdout, logs, stop
}

// TestDevNoTUIListeners: the ready line is followed by where the modules
// listen, so with moved ports the addresses to use are on screen.
func TestDevNoTUIListeners(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdout, _, _ := devNoTUI(t, ctx, "engine:\n  port: 0\nmodules:\n  - class: RestApiModule\n    config: {port: 0}\n")
	m := waitOutput(ctx, t, stdout, regexp.MustCompile(`; modules http\)\niii dev: listening: http (127\.0\.0\.1:\d+)\n`))
	if strings.HasSuffix(m[1], ":0") {
		t.Errorf("listening on %s; want the bound port", m[1])
	}
}

// TestDevNoTUI runs `iii dev --no-tui` in-process: it prints when it is
// ready, a line when a Go SDK worker joins, registers and serves a call,
// and stops cleanly when its context ends.
func TestDevNoTUI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := writeConfig(t, "engine:\n  port: 0\nmodules: []\n")
	env, stdout, stderr, _ := testEnv(nil)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	code := -1
	done := make(chan struct{})
	// Exits when stop cancels runCtx and the engine has shut down.
	go func() {
		defer close(done)
		code = Run(runCtx, env, []string{"dev", "--no-tui", "--config", path})
	}()

	m := waitOutput(ctx, t, stdout, regexp.MustCompile(`iii dev: engine ready in (\S+) on (ws://\S+) \(redis none; modules none\)\n`))
	if d, err := time.ParseDuration(m[1]); err != nil || d > 500*time.Millisecond {
		t.Errorf("time to ready %q (%v); want well under a second", m[1], err)
	}
	w, err := sdk.Connect(ctx, m[2], sdk.WithName("tester"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RegisterFunction("tester::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }); err != nil {
		t.Fatal(err)
	}
	waitOutput(ctx, t, stdout, regexp.MustCompile(`worker +joined tester \(go `))
	waitOutput(ctx, t, stdout, regexp.MustCompile(`function +registered tester::echo by `))
	if _, err := sdk.Call[json.RawMessage](ctx, w, "tester::echo", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	waitOutput(ctx, t, stdout, regexp.MustCompile(`call +tester::echo tester → tester \S+ ok`))
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitOutput(ctx, t, stdout, regexp.MustCompile(`worker +left tester`))

	stop()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("iii dev did not stop after its context ended")
	}
	if code != ExitOK {
		t.Errorf("iii dev --no-tui = %d, stderr %q; want 0", code, stderr.String())
	}
}

// TestDevTUILogsToFile runs `iii dev` with the TUI on pipes: logs go to
// .iii/dev.log beside the config, never to stdout or the process logger;
// q quits and the closing note names the time to ready.
func TestDevTUILogsToFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := writeConfig(t, "engine:\n  port: 0\nmodules: []\n")
	env, stdout, _, logs := testEnv(nil)
	in, keys := io.Pipe()
	defer keys.Close()
	env.Stdin = in

	errc := make(chan error, 1)
	// Exits when the TUI quits (q) and the engine has shut down.
	go func() {
		errc <- dev(ctx, env, devOptions{path: path, explicit: true, tui: true,
			tuiOpts: []tea.ProgramOption{tea.WithWindowSize(100, 30), tea.WithoutSignals()}})
	}()

	logPath := filepath.Join(filepath.Dir(path), ".iii", "dev.log")
	for tick := time.NewTicker(10 * time.Millisecond); ; {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "iii dev ready") {
			tick.Stop()
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never said the engine is ready; it has:\n%s", logPath, b)
		case <-tick.C:
		}
	}
	waitOutput(ctx, t, stdout, regexp.MustCompile(`Workers`))
	if _, err := keys.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("dev = %v; want nil after q", err)
		}
	case <-ctx.Done():
		t.Fatal("iii dev did not quit on q")
	}
	out := stdout.String()
	if !regexp.MustCompile(`iii dev: engine was ready in \S+; logs in .*dev\.log\n$`).MatchString(out) {
		t.Errorf("stdout does not end with the closing note: %q", out[max(len(out)-200, 0):])
	}
	if strings.Contains(out, `"level"`) || strings.Contains(out, "level=") {
		t.Errorf("a log record reached stdout while the TUI was up")
	}
	if logs.String() != "" {
		t.Errorf("the process logger got %q; want every record in %s", logs.String(), logPath)
	}
}

// TestDevSecondKeepsLog: a second iii dev with the TUI in the same folder
// fails on the taken port without truncating the first one's dev.log.
func TestDevSecondKeepsLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	path := writeConfig(t, fmt.Sprintf("engine:\n  port: %d\nmodules: []\n", taken.Addr().(*net.TCPAddr).Port))
	logPath := filepath.Join(filepath.Dir(path), ".iii", "dev.log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		t.Fatal(err)
	}
	const first = "the first iii dev's log\n"
	if err := os.WriteFile(logPath, []byte(first), 0o644); err != nil {
		t.Fatal(err)
	}
	env, _, _, _ := testEnv(nil)
	in, keys := io.Pipe()
	defer keys.Close()
	env.Stdin = in
	err = dev(ctx, env, devOptions{path: path, explicit: true, tui: true,
		tuiOpts: []tea.ProgramOption{tea.WithWindowSize(100, 30), tea.WithoutSignals()}})
	var inUse *devserver.PortInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("dev = %v; want a PortInUseError", err)
	}
	if b, err := os.ReadFile(logPath); err != nil || string(b) != first {
		t.Errorf("dev.log = %q (%v) after the failed start; want %q", b, err, first)
	}
}

// TestDevNoTUIWorkerLineOnce: a line a worker process prints is written
// once by iii dev --no-tui, on stdout, and not again in its log.
func TestDevNoTUIWorkerLineOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The command does not spell the line it prints.
	stdout, logs, stop := devNoTUI(t, ctx, "engine:\n  port: 0\nmodules:\n  - class: ExecModule\n    config:\n      workers:\n"+
		"        - name: talker\n          run: printf 'said-%s\\n' once-marker; exec sleep 60\n")
	waitOutput(ctx, t, stdout, regexp.MustCompile(`log +talker stdout \| said-once-marker\n`))
	stop()
	if n := strings.Count(stdout.String(), "said-once-marker"); n != 1 {
		t.Errorf("stdout has the worker's line %d times; want once:\n%s", n, stdout.String())
	}
	if strings.Contains(logs.String(), "said-once-marker") {
		t.Errorf("the log repeats the worker's line:\n%s", logs.String())
	}
}

// TestDevNoTUIOutputOnce: with --no-tui a worker's output line is printed
// once, from the event stream on stdout; the process log (stderr in a
// terminal) does not repeat it, and keeps every other record.
func TestDevNoTUIOutputOnce(t *testing.T) {
	env, _, _, logs := testEnv(nil)
	log := slog.New(withoutWorkerOutput{env.Logger.Handler()}).With("module", "exec")
	log.Info("hello from the worker", "worker", "greeter", "stream", "stderr", "pid", 42)
	log.Info("started", "worker", "greeter", "pid", 42)
	if got := logs.String(); strings.Contains(got, "hello from the worker") || !strings.Contains(got, `"msg":"started"`) {
		t.Errorf("process log = %q; want the started record and not the worker's line", got)
	}
}

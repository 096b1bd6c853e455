//go:build unix

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/module"
	_ "github.com/iii-workbench/iii/engine/modules/standard" // what the binary links
	"github.com/iii-workbench/iii/sdk"
)

// tmux drives a private tmux server (its own socket) for one test.
type tmux struct {
	t      *testing.T
	socket string
	name   string
}

func (x *tmux) run(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "tmux", append([]string{"-L", x.socket}, args...)...).CombinedOutput()
	return string(out), err
}

func (x *tmux) capture(ctx context.Context) string {
	out, err := x.run(ctx, "capture-pane", "-p", "-t", x.name)
	if err != nil {
		x.t.Fatalf("tmux capture-pane: %v: %s", err, out)
	}
	return out
}

// waitPane polls the pane until re matches, and returns the match.
func (x *tmux) waitPane(ctx context.Context, re *regexp.Regexp) []string {
	x.t.Helper()
	return x.waitMatch(ctx, re, func([]string) bool { return true })
}

// waitMatch polls the pane until re matches and ok accepts the match.
func (x *tmux) waitMatch(ctx context.Context, re *regexp.Regexp, ok func([]string) bool) []string {
	x.t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pane := x.capture(ctx)
		if m := re.FindStringSubmatch(pane); m != nil && ok(m) {
			return m
		}
		select {
		case <-ctx.Done():
			x.t.Fatalf("the pane never matched %q; it shows:\n%s", re, pane)
		case <-tick.C:
		}
	}
}

func (x *tmux) keys(ctx context.Context, keys ...string) {
	x.t.Helper()
	if out, err := x.run(ctx, append([]string{"send-keys", "-t", x.name}, keys...)...); err != nil {
		x.t.Fatalf("tmux send-keys %q: %v: %s", keys, err, out)
	}
}

// goBuild builds a package of this module into dir.
func goBuild(ctx context.Context, t *testing.T, dir, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestDevTmux runs the real binary under tmux at 120x36: `iii dev` with a
// Go SDK worker (started by the exec module when the binary has it, by the
// test otherwise), waits for the worker's row, switches views with keys,
// and quits with q.
func TestDevTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tmux is not installed; CI must install it")
		}
		t.Skip("tmux is not installed")
	}
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir := t.TempDir()
	_, file, _, _ := runtime.Caller(0)
	here := filepath.Dir(file)
	bin := goBuild(ctx, t, dir, filepath.Join(here, "..", ".."), "iii")
	worker := goBuild(ctx, t, dir, filepath.Join(here, "testdata", "tmuxworker"), "tmuxworker")

	_, withExec := module.Lookup("exec")
	cfg := "engine:\n  port: 0\nmodules:\n  - class: RestApiModule\n    config: {port: 0}\n"
	if withExec {
		cfg += fmt.Sprintf("  - class: ExecModule\n    config:\n      workers:\n        - name: hello\n          dir: .\n          run: %q\n", worker)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	x := &tmux{t: t, socket: fmt.Sprintf("iii-test-%d", os.Getpid()), name: "dev"}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		x.run(cctx, "kill-server")
	})
	// The shell keeps the pane after iii exits so its exit status shows.
	shell := fmt.Sprintf("%s dev --config config.yaml; echo EXIT=$?; sleep 600", bin)
	if out, err := x.run(ctx, "new-session", "-d", "-s", x.name, "-x", "120", "-y", "36", "-c", dir,
		"-e", "III_TOKEN=", "-e", "TERM=xterm-256color", shell); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}

	url := "ws://127.0.0.1:" + x.waitPane(ctx, regexp.MustCompile(`ws://127\.0\.0\.1:(\d+)`))[1]
	var pid int
	if withExec {
		m := x.waitPane(ctx, regexp.MustCompile(`hello +go +(\d+) +connected +1 `))
		pid, _ = strconv.Atoi(m[1])
	} else {
		t.Log("the binary has no exec module: the test runs the worker itself")
		w, err := sdk.Connect(ctx, url, sdk.WithName("hello"))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close(context.WithoutCancel(ctx))
		if err := w.RegisterFunction("hello::hello", func(context.Context, json.RawMessage) (any, error) { return "hi", nil }); err != nil {
			t.Fatal(err)
		}
		x.waitPane(ctx, regexp.MustCompile(`hello +go +\d+ +connected +1 `))
	}
	x.waitPane(ctx, regexp.MustCompile(`workers 1 `))

	x.keys(ctx, "2")
	x.waitPane(ctx, regexp.MustCompile(`(?m)^hello::hello +hello `))
	x.keys(ctx, "?")
	x.waitPane(ctx, regexp.MustCompile(`r +replay again`))
	// A key sent right after Escape would read as alt+key: wait for the
	// help to close first.
	x.keys(ctx, "Escape")
	x.waitPane(ctx, regexp.MustCompile(`FUNCTION +WORKERS`))
	if withExec {
		x.keys(ctx, "6")
		x.waitPane(ctx, regexp.MustCompile(`hello +stdout +hello ready`))

		// R restarts the selected worker through the exec module: a new
		// process takes over, and RESTARTS counts it.
		x.keys(ctx, "1", "R")
		x.waitPane(ctx, regexp.MustCompile(`restarting hello`))
		old := strconv.Itoa(pid)
		m := x.waitMatch(ctx, regexp.MustCompile(`(?m)^hello +go +(\d+) +connected +1 +0 +1 `),
			func(m []string) bool { return m[1] != old })
		pid, _ = strconv.Atoi(m[1])
	}
	x.keys(ctx, "q")
	x.waitPane(ctx, regexp.MustCompile(`iii dev: engine was ready in \S+; logs in \S*dev\.log`))
	x.waitPane(ctx, regexp.MustCompile(`EXIT=0`))
	if pid > 0 {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("worker process %d still runs after iii dev exited", pid)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, ".iii", "dev.log")); err != nil || !strings.Contains(string(b), "iii dev ready") {
		t.Errorf(".iii/dev.log = %q, %v; want the ready record", b, err)
	}
}

// TestDevSIGTERM runs the binary without a terminal: it prints the ready
// line and a line per event, and exits 0 on SIGTERM.
func TestDevSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	_, file, _, _ := runtime.Caller(0)
	bin := goBuild(ctx, t, dir, filepath.Join(filepath.Dir(file), "..", ".."), "iii")
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("engine:\n  port: 0\nmodules: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "dev")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "III_TOKEN=")
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, new(syncBuffer)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	m := waitOutput(ctx, t, out, regexp.MustCompile(`iii dev: engine ready in \S+ on (ws://\S+) `))
	w, err := sdk.Connect(ctx, m[1], sdk.WithName("probe"))
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(ctx, t, out, regexp.MustCompile(`worker +joined probe `))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("iii dev after SIGTERM: %v; want exit 0\n%s", err, out.String())
	}
	w.Close(ctx)
}

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
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/watch"
	"github.com/iii-workbench/iii/sdk"
)

// TestAttachTmux runs `iii start` (headless, with a token) and, in tmux
// at 120x36, `iii tui --address ... --token ... --allow-invoke` on it: the
// TUI shows the engine's workers, functions and live calls through the
// protocol alone, invokes a function, holds a call at a breakpoint set
// with b and releases it with c, and its quitting ends the session.
func TestAttachTmux(t *testing.T) {
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
	bin := goBuild(ctx, t, dir, filepath.Join(filepath.Dir(file), "..", ".."), "iii")
	cfg := "engine:\n  port: 0\n  auth_token: s3cret\nmodules: []\n"
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start := exec.CommandContext(ctx, bin, "start", "--config", "config.yaml", "--store", "memory")
	start.Dir = dir
	start.Env = append(os.Environ(), "III_TOKEN=")
	out := new(syncBuffer)
	start.Stdout, start.Stderr = out, out
	if err := start.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		start.Process.Signal(os.Interrupt)
		start.Wait()
	}()
	url := waitOutput(ctx, t, out, regexp.MustCompile(`(ws://127\.0\.0\.1:\d+)`))[1]

	w, err := sdk.Connect(ctx, url, sdk.WithName("hello"), sdk.WithBearerToken("s3cret"), sdk.WithTelemetry(false))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.WithoutCancel(ctx))
	if err := w.RegisterFunction("hello::hello", func(_ context.Context, in json.RawMessage) (any, error) {
		return map[string]json.RawMessage{"echo": in}, nil
	}); err != nil {
		t.Fatal(err)
	}

	x := &tmux{t: t, socket: fmt.Sprintf("iii-attach-%d", os.Getpid()), name: "tui"}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		x.run(cctx, "kill-server")
	})
	shell := fmt.Sprintf("%s tui --address %s --token s3cret --allow-invoke; echo EXIT=$?; sleep 600", bin, url)
	if o, err := x.run(ctx, "new-session", "-d", "-s", x.name, "-x", "120", "-y", "36", "-c", dir,
		"-e", "III_TOKEN=", "-e", "TERM=xterm-256color", shell); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, o)
	}
	x.waitPane(ctx, regexp.MustCompile(`iii tui`))
	x.waitPane(ctx, regexp.MustCompile(`(?m)hello +go +\d+ +connected +1 `))
	x.waitPane(ctx, regexp.MustCompile(`workers 1 `))

	// A call made by someone else shows in the live tail.
	if _, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "hello::hello", Payload: map[string]int{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	x.keys(ctx, "4")
	x.waitPane(ctx, regexp.MustCompile(`hello::hello +hello → hello +worker +\S+ +ok`))

	// i invokes through the attached connection.
	x.keys(ctx, "2")
	x.waitPane(ctx, regexp.MustCompile(`(?m)^hello::hello +hello `))
	x.keys(ctx, "i")
	x.waitPane(ctx, regexp.MustCompile(`Invoke hello::hello`))
	x.keys(ctx, "C-s")
	x.waitPane(ctx, regexp.MustCompile(`result in`))
	x.keys(ctx, "Escape")
	x.waitPane(ctx, regexp.MustCompile(`FUNCTION +WORKERS`))

	// b sets a breakpoint on the selected function; a call stops there
	// and shows in the Breakpoints view with its payload and deadline.
	x.keys(ctx, "b")
	x.waitPane(ctx, regexp.MustCompile(`breakpoint on hello::hello`))
	res := make(chan error, 1)
	go func() { // ends with the call, at the latest at its timeout
		_, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "hello::hello", Payload: map[string]int{"n": 42}, Timeout: time.Minute})
		res <- err
	}()
	x.keys(ctx, "7")
	x.waitPane(ctx, regexp.MustCompile(`hello::hello +hello +[0-9ms]+ +\{"n":42\}`))
	x.keys(ctx, "c")
	select {
	case err := <-res:
		if err != nil {
			t.Errorf("the released call: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the held call was not released by c")
	}

	// Quitting ends the session: its breakpoint goes with it.
	x.keys(ctx, "q")
	x.waitPane(ctx, regexp.MustCompile(`EXIT=0`))
	probe, err := sdk.Connect(ctx, url, sdk.WithName("probe"), sdk.WithBearerToken("s3cret"), sdk.WithTelemetry(false))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw, err := probe.Trigger(ctx, sdk.TriggerRequest{FunctionID: watch.FnBreakList})
		if err != nil {
			t.Fatal(err)
		}
		var l watch.BreakList
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Breakpoints) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("breakpoints after the TUI quit: %+v; want none", l.Breakpoints)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

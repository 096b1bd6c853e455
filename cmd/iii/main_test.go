//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// These tests build the real binary and drive it as a user would.

var (
	binDir   string
	buildBin = sync.OnceValues(func() (string, error) {
		bin := filepath.Join(binDir, "iii")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin,
			"-ldflags", "-X main.version=9.9.9 -X main.commit=cafe123 -X main.date=2026-11-28T00:00:00Z", ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build: %v\n%s", err, out)
		}
		return bin, nil
	})
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iii-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func iii(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := buildBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestVersionStamped(t *testing.T) {
	bin := iii(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if want := "iii 9.9.9 (cafe123, 2026-11-28T00:00:00Z)\n"; err != nil || string(out) != want {
		t.Errorf("iii --version = %q, %v; want %q", out, err, want)
	}
}

func TestStartAndSIGTERM(t *testing.T) {
	bin := iii(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("engine:\n  host: 127.0.0.1\n  port: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "start", "--config", path)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "III_TOKEN=") // an empty III_TOKEN leaves auth off
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// Read the JSON log (stderr is not a TTY) for the listening address;
	// keep draining it afterwards so the engine never blocks on a full pipe.
	addrc := make(chan string, 1)
	var logMu sync.Mutex
	var logLines []string
	drained := make(chan struct{})
	// Exits at EOF, when the process has exited.
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logLines = append(logLines, sc.Text())
			logMu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening for workers" {
				addrc <- rec.Addr
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	logs := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Join(logLines, "\n")
	}

	var addr string
	select {
	case addr = <-addrc:
	case <-ctx.Done():
		t.Fatalf("no listening line before the deadline; logs:\n%s", logs())
	}

	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.CloseNow()
	_, frame, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read first frame: %v", err)
	}
	var hello struct {
		Type     string `json:"type"`
		WorkerID string `json:"worker_id"`
	}
	if err := json.Unmarshal(frame, &hello); err != nil || hello.Type != "workerregistered" || hello.WorkerID == "" {
		t.Fatalf("first frame %s: want workerregistered with a worker_id", frame)
	}
	closed := make(chan error, 1)
	// Exits when the engine closes the socket.
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// stderr reaches EOF when the process exits.
	select {
	case <-drained:
	case <-time.After(15 * time.Second):
		t.Fatalf("iii start still running 15s after SIGTERM; logs:\n%s", logs())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("iii start after SIGTERM: %v; want exit 0; logs:\n%s", err, logs())
	}
	if err := <-closed; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("worker socket closed with %v; want 1001", err)
	}
	if !strings.Contains(logs(), `"msg":"engine stopped"`) {
		t.Errorf("no engine stopped line in logs:\n%s", logs())
	}
}

func TestStartBadConfig(t *testing.T) {
	bin := iii(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("engine:\n  port: 49134\n  invocation_timeout_ms: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "start")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("iii start with a bad config.yaml: %v, output %q; want exit code 1", err, out)
	}
	want := "iii: config.yaml:3: engine.invocation_timeout_ms: -1 must be a positive number of milliseconds\n"
	if string(out) != want {
		t.Errorf("iii start with a bad config.yaml printed %q; want %q", out, want)
	}
}

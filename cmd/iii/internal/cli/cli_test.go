package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for a logger writing while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type result struct {
	code           int
	stdout, stderr string
	logs           *syncBuffer
}

func testEnv(vars map[string]string) (Env, *syncBuffer, *syncBuffer, *syncBuffer) {
	stdout, stderr, logs := new(syncBuffer), new(syncBuffer), new(syncBuffer)
	level := new(slog.LevelVar)
	return Env{
		Stdout: stdout,
		Stderr: stderr,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level})),
		Level:  level,
		Getenv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		Build:  Build{Version: "1.2.3", Commit: "abc1234", Date: "2026-01-02T03:04:05Z"},
	}, stdout, stderr, logs
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env, stdout, stderr, logs := testEnv(nil)
	code := Run(ctx, env, args)
	return result{code, stdout.String(), stderr.String(), logs}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	const want = "iii 1.2.3 (abc1234, 2026-01-02T03:04:05Z)\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		r := run(t, args...)
		if r.code != ExitOK || r.stdout != want || r.stderr != "" {
			t.Errorf("iii %v = %d, stdout %q, stderr %q; want 0, %q, empty", args, r.code, r.stdout, r.stderr, want)
		}
	}
}

// TestVersionUnstamped: a build without -ldflags does not print "dev", which
// reads like the dev subcommand.
func TestVersionUnstamped(t *testing.T) {
	b := Build{Version: "dev", Commit: "dev", Date: "dev"}
	if got, want := b.String(), "devel (commit unknown, built unknown)"; got != want {
		t.Errorf("unstamped Build = %q, want %q", got, want)
	}
	b.Commit = "0123456789ab"
	if got, want := b.String(), "devel (commit 0123456789ab, built unknown)"; got != want {
		t.Errorf("VCS-stamped Build = %q, want %q", got, want)
	}
}

// TestCompletion: iii completion writes the shell scripts cobra generates.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := run(t, "completion", sh)
		if r.code != ExitOK || !strings.Contains(r.stdout, sh+" completion") || !strings.Contains(r.stdout, "iii") {
			t.Errorf("iii completion %s = %d, stdout %.80q, stderr %q; want the %s script", sh, r.code, r.stdout, r.stderr, sh)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
		help string // the help the second line points at
	}{
		{[]string{"frobnicate"}, `iii: unknown command "frobnicate"`, "iii"},
		{[]string{"start", "now"}, `iii: iii start takes no arguments, got "now"`, "iii start"},
		{[]string{"--bogus"}, "iii: unknown flag: --bogus", "iii"},
		{[]string{"start", "--config"}, "iii: flag needs an argument: --config", "iii start"},
		{[]string{"new", "worker", "x", "--lang", "rust"}, `iii: --lang "rust": want go, node, python`, "iii new worker"},
		{[]string{"completion", "tcsh"}, `iii: no completion for shell "tcsh": want bash, fish, powershell, zsh`, "iii completion"},
		{[]string{"--log-level", "loud", "version"}, `iii: invalid --log-level "loud": want debug, info, warn or error`, "iii version"},
	}
	for _, tt := range tests {
		r := run(t, tt.args...)
		want := tt.want + "\nRun '" + tt.help + " --help' for usage.\n"
		if r.code != ExitUsage || r.stderr != want {
			t.Errorf("iii %q = %d, stderr %q; want %d, %q", tt.args, r.code, r.stderr, ExitUsage, want)
		}
	}
}

func TestStartFails(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port

	bad := writeConfig(t, "engine:\n  host: 127.0.0.1\n  port: 99999\n")
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	busy := writeConfig(t, fmt.Sprintf("engine:\n  port: %d\n", port))
	busyHTTP := writeConfig(t, fmt.Sprintf("engine:\n  port: 0\nmodules:\n  - class: CronModule\n  - class: RestApiModule\n    config: {port: %d}\n", port))
	unset := writeConfig(t, "engine:\n  auth_token: ${III_CLI_TEST_UNSET}\n")
	tests := []struct {
		name string
		path string
		want string
	}{
		{"bad value", bad, "iii: " + bad + ":3: engine.port: 99999 is out of range 0-65535\n"},
		{"unset variable", unset, "iii: " + unset + ":2: environment variable III_CLI_TEST_UNSET is not set (use ${III_CLI_TEST_UNSET:default} for a default)\n"},
		{"explicit missing file", missing, "iii: config: open " + missing + ": no such file or directory\n"},
		{"port in use", busy, fmt.Sprintf("iii: port %d in use: is another iii running? set engine.port or --port\n", port)},
		{"http port in use", busyHTTP, fmt.Sprintf("iii: port %d in use (http module): is another iii running? set modules[1].config.port or --http-port\n", port)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "start", "--config", tt.path)
			if r.code != ExitError || r.stderr != tt.want {
				t.Errorf("iii start --config %s = %d, stderr %q; want %d, %q", tt.path, r.code, r.stderr, ExitError, tt.want)
			}
		})
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	env, _, _, logs := testEnv(map[string]string{"III_TOKEN": "tok"})
	cfg, err := loadConfig(context.Background(), env, filepath.Join(t.TempDir(), "config.yaml"), false)
	if err != nil {
		t.Fatalf("loadConfig(missing, not explicit) error: %v", err)
	}
	if cfg.FromFile() || len(cfg.Modules) == 0 || cfg.Engine.AuthToken != "tok" {
		t.Errorf("loadConfig(missing) = %+v; want defaults with the III_TOKEN token", cfg)
	}
	if !strings.Contains(logs.String(), `"msg":"no config file, running with defaults"`) {
		t.Errorf("logs %q do not say the defaults are used", logs.String())
	}
}

// waitForLog polls the JSON log for a record with msg and returns it.
func waitForLog(ctx context.Context, t *testing.T, logs *syncBuffer, msg string) map[string]any {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
				return rec
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no %q log line before the deadline; logs:\n%s", msg, logs.String())
		case <-tick.C:
		}
	}
}

func TestStartServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	path := writeConfig(t, "engine:\n  port: 0\n  auth_token: from-file\nmodules: []\n")
	env, _, stderr, logs := testEnv(map[string]string{"III_TOKEN": "from-env"})

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var code int
	done := make(chan struct{})
	// Exits when stop cancels runCtx and the engine has shut down.
	go func() {
		defer close(done)
		code = Run(runCtx, env, []string{"start", "--config", path, "--log-level", "debug"})
	}()
	defer func() { stop(); <-done }()

	rec := waitForLog(ctx, t, logs, "listening for workers")
	url := "ws://" + rec["addr"].(string) + "/"

	// The file's token is overridden by III_TOKEN.
	for _, token := range []string{"", "from-file"} {
		h := http.Header{}
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			c.CloseNow()
			t.Fatalf("dial with token %q succeeded; want 401", token)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial with token %q: %v, response %+v; want 401", token, err, resp)
		}
	}

	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer from-env"}},
	})
	if err != nil {
		t.Fatalf("dial %s with the III_TOKEN token: %v", url, err)
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
		t.Fatalf("first frame %s: want a workerregistered with a worker_id", frame)
	}

	// Keep reading, as a worker does, so the engine's close handshake
	// completes.
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

	stop()
	select {
	case <-done:
		if code != ExitOK {
			t.Errorf("start after cancel = %d, stderr %q; want 0", code, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("start did not return after cancel")
	}
	if err := <-closed; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("worker socket closed with %v; want close 1001", err)
	}
	waitForLog(ctx, t, logs, "engine stopped")
}

//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

// durableConfig is a config without any redis section: iii start's
// default store. The queue retries a message whose function is missing
// every few hundred milliseconds, for long enough to span a restart.
const durableConfig = `engine:
  host: 127.0.0.1
  port: 0
modules:
  - class: StateModule
  - class: StreamModule
    config: {host: 127.0.0.1, port: 0}
  - class: QueueModule
    config:
      queue_configs:
        jobs: {max_retries: 1000, backoff_ms: 100, max_backoff_ms: 300}
`

// engineProc is a running `iii start`.
type engineProc struct {
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	lines  []string
	exited chan struct{}
}

func (p *engineProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// startEngine runs `iii start` in dir and waits for its worker URL.
func startEngine(ctx context.Context, t *testing.T, bin, dir string, args []string, env ...string) *engineProc {
	t.Helper()
	p := &engineProc{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"start", "--log-level", "debug"}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Env = append(append(os.Environ(), "III_TOKEN="), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlc := make(chan string, 1)
	// Exits at EOF, when the engine has exited.
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			var rec struct{ Msg, URL string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening for workers" {
				urlc <- strings.TrimSuffix(rec.URL, "/")
			}
		}
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.url = <-urlc:
	case <-p.exited:
		t.Fatalf("iii start exited before it was ready:\n%s", p.logs())
	case <-ctx.Done():
		t.Fatalf("iii start was not ready in time:\n%s", p.logs())
	}
	return p
}

func invoke(ctx context.Context, t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, append([]string{"invoke", "--address", url}, args...)...)
	cmd.Env = append(os.Environ(), "III_TOKEN=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("iii invoke %q: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestStartDurable writes state, a stream item and a queued message
// through `iii invoke`, kills the engine with SIGKILL, starts it again and
// finds all three: the state and the item are read back and the message is
// delivered to a worker that registers its function after the restart.
func TestStartDurable(t *testing.T) {
	bin := iii(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed; CI needs it")
		}
		t.Skip("redis-server not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "iii-durable") // short: the socket lives under it
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(durableConfig), 0o600); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	defer func() { t.Logf("durable test body took %v", time.Since(t0)) }()
	first := startEngine(ctx, t, bin, dir, nil)
	if !strings.Contains(first.logs(), `"store":"managed `+filepath.Join(dir, ".iii", "data")+`"`) {
		t.Errorf("the ready line does not name the managed store in %s/.iii/data:\n%s", dir, first.logs())
	}
	invoke(ctx, t, bin, first.url, "state::set", `{"scope":"orders","key":"o1","value":{"qty":2}}`)
	invoke(ctx, t, bin, first.url, "stream::set", `{"stream_name":"chat","group_id":"room","item_id":"m1","data":{"text":"hi"}}`)
	invoke(ctx, t, bin, first.url, "--enqueue", "jobs", "durable::consume", `{"n":1}`)

	redisPid := pidFile(t, filepath.Join(dir, ".iii", "data", "redis-server.pid"))
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	// The kernel's parent-death signal stops the engine's redis-server.
	for syscall.Kill(redisPid, 0) == nil {
		select {
		case <-ctx.Done():
			t.Fatalf("redis-server %d outlived the killed engine", redisPid)
		case <-time.After(10 * time.Millisecond):
		}
	}

	second := startEngine(ctx, t, bin, dir, nil)
	if got := invoke(ctx, t, bin, second.url, "state::get", `{"scope":"orders","key":"o1"}`); got != `{"qty":2}` {
		t.Errorf("state::get after kill -9 and restart = %s; want {\"qty\":2}", got)
	}
	if got := invoke(ctx, t, bin, second.url, "stream::get", `{"stream_name":"chat","group_id":"room","item_id":"m1"}`); got != `{"text":"hi"}` {
		t.Errorf("stream::get after kill -9 and restart = %s; want {\"text\":\"hi\"}", got)
	}
	w, err := sdk.Connect(ctx, second.url, sdk.WithName("consumer"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.WithoutCancel(ctx))
	got := make(chan string, 16)
	if err := w.RegisterFunction("durable::consume", func(_ context.Context, in json.RawMessage) (any, error) {
		got <- string(in)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-got:
		var in struct{ N int }
		if err := json.Unmarshal([]byte(msg), &in); err != nil || in.N != 1 {
			t.Errorf("queued message after restart = %s; want n=1", msg)
		}
	case <-ctx.Done():
		t.Fatalf("the queued message was not delivered after the restart:\n%s", second.logs())
	}

	// A clean stop (SIGTERM) stops the redis-server too.
	redisPid = pidFile(t, filepath.Join(dir, ".iii", "data", "redis-server.pid"))
	second.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-second.exited:
	case <-ctx.Done():
		t.Fatal("iii start did not exit on SIGTERM")
	}
	if syscall.Kill(redisPid, 0) == nil {
		t.Errorf("redis-server %d still runs after iii start exited", redisPid)
	}
}

func pidFile(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("pid file %s: %q, %v", path, b, err)
	}
	return pid
}

// TestStartWithoutRedisServer: with no redis-server on PATH and no store
// chosen, iii start refuses with one line saying how to choose; with
// --store memory it runs.
func TestStartWithoutRedisServer(t *testing.T) {
	bin := iii(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(durableConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "start")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + t.TempDir(), "HOME=" + dir}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("iii start without redis-server: %v, output %q; want exit code 1", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"iii: redis-server not found on PATH", "install redis-server", "set redis.url", "--store memory"} {
		if !strings.Contains(last, want) {
			t.Errorf("refusal line %q lacks %q", last, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".iii", "data", "redis-server.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused start left a pid file: %v", err)
	}

	p := startEngine(ctx, t, bin, dir, []string{"--store", "memory"}, "PATH="+t.TempDir())
	if !strings.Contains(p.logs(), `"store":"memory, lost on exit"`) {
		t.Errorf("iii start --store memory does not say the data is lost on exit:\n%s", p.logs())
	}
}

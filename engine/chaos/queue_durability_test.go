package chaos_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

// engineProc is `iii start` in a child process, killable with SIGKILL.
type engineProc struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex
	out []string // its log lines (stderr)
}

// logged returns the log lines that contain every one of subs.
func (p *engineProc) logged(subs ...string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var got []string
	for _, l := range p.out {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			got = append(got, l)
		}
	}
	return got
}

func buildIII(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "iii")
	out, err := exec.Command("go", "build", "-o", exe, "github.com/iii-workbench/iii/cmd/iii").CombinedOutput()
	if err != nil {
		t.Fatalf("go build iii: %v\n%s", err, out)
	}
	return exe
}

func startEngineProc(t *testing.T, exe, cfg string) *engineProc {
	t.Helper()
	cmd := exec.Command(exe, "start", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &engineProc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	var once sync.Once
	// Exits when the engine exits.
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
			if strings.Contains(sc.Text(), `"listening for workers"`) {
				once.Do(func() { close(ready) })
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	select {
	case <-ready:
	case <-p.done:
		t.Fatal("engine exited at start")
	case <-time.After(15 * time.Second):
		t.Fatal("engine not listening within 15s")
	}
	return p
}

func (p *engineProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestQueueDurabilityAcrossEngineKills pushes 100,000 messages through the
// queue on a real redis-server while the engine is SIGKILLed and restarted
// twice: every message whose enqueue was acknowledged is handled at least
// once; duplicates (at-least-once) are counted and reported.
func TestQueueDurabilityAcrossEngineKills(t *testing.T) {
	if testing.Short() {
		t.Skip("long fault test")
	}
	redis := storetest.StartServer(t)
	exe := buildIII(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`engine: {host: 127.0.0.1, port: %d}
redis: {url: %q}
modules:
  - class: QueueModule
    config:
      queues:
        durable: {concurrency: 64, max_retries: 20, backoff_ms: 50, max_backoff_ms: 500, timeout_ms: 2000, claim_idle_ms: 3000}
`, port, redis.URL())), 0o600)
	url := fmt.Sprintf("ws://127.0.0.1:%d", port)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var killMu sync.Mutex // guards eng
	eng := startEngineProc(t, exe, cfg)
	defer func() {
		killMu.Lock()
		defer killMu.Unlock()
		eng.kill()
	}()

	const total = 100_000
	handled := make([]atomic.Int32, total)
	opts := []sdk.Option{sdk.WithReconnectBackoff(50*time.Millisecond, 500*time.Millisecond), sdk.WithQueueLimit(4096)}
	worker, err := sdk.Connect(ctx, url, append(opts, sdk.WithName("durable-worker"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close(context.Background())
	worker.RegisterFunction("durable::handle", func(_ context.Context, in json.RawMessage) (any, error) {
		var m struct{ N int }
		if err := json.Unmarshal(in, &m); err != nil || m.N < 0 || m.N >= total {
			return nil, fmt.Errorf("bad message %s", in)
		}
		handled[m.N].Add(1)
		return nil, nil
	})
	producer, err := sdk.Connect(ctx, url, append(opts, sdk.WithName("durable-producer"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close(context.Background())

	var (
		acked    atomic.Int64
		retries  atomic.Int64
		next     atomic.Int64
		wg       sync.WaitGroup
		restarts = []int64{total / 3, 2 * total / 3}
	)
	for range 64 {
		wg.Add(1)
		// Exits when every message has been acknowledged.
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1) - 1
				if n >= total {
					return
				}
				for ctx.Err() == nil {
					_, err := producer.Trigger(ctx, sdk.TriggerRequest{FunctionID: "durable::handle",
						Payload: map[string]int64{"n": n}, Action: sdk.Enqueue("durable"), Timeout: 3 * time.Second})
					if err == nil {
						break
					}
					retries.Add(1) // the engine was down: enqueue again (maybe a duplicate)
				}
				a := acked.Add(1)
				killMu.Lock()
				if len(restarts) > 0 && a >= restarts[0] {
					restarts = restarts[1:]
					t.Logf("SIGKILL engine after %d acknowledged enqueues", a)
					eng.kill()
					eng = startEngineProc(t, exe, cfg)
				}
				killMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if acked.Load() != total {
		t.Fatalf("only %d of %d enqueues acknowledged", acked.Load(), total)
	}
	// Wait until every message has been handled (in-flight ones of the
	// killed engines come back through XAUTOCLAIM after claim_idle_ms).
	var lost, dups int
	deadline := time.Now().Add(2 * time.Minute)
	for {
		lost, dups = 0, 0
		for i := range handled {
			switch c := handled[i].Load(); {
			case c == 0:
				lost++
			case c > 1:
				dups += int(c - 1)
			}
		}
		if lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d messages, 2 engine kills: %d lost, %d duplicate deliveries, %d enqueue retries", total, lost, dups, retries.Load())
	if lost > 0 {
		t.Fatalf("%d acknowledged messages were never handled", lost)
	}
}

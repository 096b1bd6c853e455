package chaos_test

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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

// lb is a TCP load balancer for one test: connections go to the current
// target; Close ends every connection and waits for its goroutines.
type lb struct {
	ln     net.Listener
	target atomic.Value // string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startLB(t *testing.T, target string) *lb {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &lb{ln: ln}
	l.target.Store(target)
	l.wg.Add(1)
	// Exits when Close closes the listener.
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", l.target.Load().(string))
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, up)
			l.mu.Unlock()
			l.wg.Add(2)
			// Each copy exits when either side closes; it then closes both.
			go func() { defer l.wg.Done(); io.Copy(up, c); up.Close(); c.Close() }()
			go func() { defer l.wg.Done(); io.Copy(c, up); up.Close(); c.Close() }()
		}
	}()
	t.Cleanup(l.Close)
	return l
}

func (l *lb) Close() {
	l.ln.Close()
	l.mu.Lock()
	for _, c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// TestClusterEngineKilledMidLoad runs three `iii start` engines in one
// cluster on a real redis-server. A caller on engine 0 keeps 32 calls in
// flight to a function served by workers on engines 1 and 2 (engine 0 has
// none, so every call is forwarded); engine 2 is SIGKILLed under that load.
// Every call must end (success, or invocation_stopped / cluster_unavailable
// for those caught on engine 2), none may hang, engine 2 must vanish from
// the table within ttl + heartbeat, and engine 1 must keep serving. Engine
// 2's worker reaches it through a load balancer, which then sends its
// reconnection to engine 1: the worker reattaches there and serves again.
func TestClusterEngineKilledMidLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	rs := storetest.StartServer(t)
	exe := buildIII(t)
	name := fmt.Sprintf("kill%d", time.Now().UnixNano())
	var urls, names []string
	var procs []*engineProc
	host, _ := os.Hostname()
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cfg := filepath.Join(t.TempDir(), "config.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`engine: {host: 127.0.0.1, port: %d, invocation_timeout_ms: 20000}
redis: {url: %q}
cluster: {name: %s, heartbeat_ms: 100, ttl_ms: 500}
`, port, rs.URL(), name)), 0o600)
		p := startEngineProc(t, exe, cfg)
		t.Cleanup(p.kill)
		procs = append(procs, p)
		urls = append(urls, fmt.Sprintf("ws://127.0.0.1:%d", port))
		names = append(names, fmt.Sprintf("%s:%d", host, port)) // how engines name each other
	}
	connect := func(url, wname string) *sdk.Worker {
		w, err := sdk.Connect(ctx, url, sdk.WithName(wname), sdk.WithTelemetry(false),
			sdk.WithLogger(slog.New(slog.DiscardHandler)), sdk.WithInvocationTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer ccancel()
			w.Close(cctx)
		})
		return w
	}
	var served [3]atomic.Int64
	balancer := startLB(t, strings.TrimPrefix(urls[2], "ws://"))
	for _, i := range []int{1, 2} {
		url := urls[i]
		if i == 2 {
			url = "ws://" + balancer.ln.Addr().String()
		}
		w := connect(url, fmt.Sprintf("server%d", i))
		if err := w.RegisterFunction("kill::work", func(ctx context.Context, in json.RawMessage) (any, error) {
			served[i].Add(1)
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
			return map[string]int{"by": i}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	caller := connect(urls[0], "caller")
	// Both servers reachable from engine 0 before the load starts.
	deadline := time.Now().Add(20 * time.Second)
	for served[1].Load() == 0 || served[2].Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("engine 0 never reached both servers (served %d, %d)", served[1].Load(), served[2].Load())
		}
		sdk.Call[json.RawMessage](ctx, caller, "kill::work", nil)
	}
	// iii start logs its cluster peers.
	for _, peer := range names[1:] {
		if procs[0].logged(`"cluster peer joined"`, `"engine":"`+peer+`"`) == nil {
			t.Errorf("engine 0 never logged its peer %s joining; its cluster lines: %q", peer, procs[0].logged(`cluster`))
		}
	}

	var (
		mu       sync.Mutex
		codes    = map[string]int{}
		ok       atomic.Int64
		killedAt atomic.Int64
		lastErr  atomic.Int64 // unix nanos of the last failed call
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				_, err := sdk.Call[json.RawMessage](ctx, caller, "kill::work", nil)
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("a call took %v", d)
				}
				if err == nil {
					ok.Add(1)
					continue
				}
				var eb *protocol.ErrorBody
				code := err.Error()
				if errors.As(err, &eb) {
					code = eb.Code
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
				lastErr.Store(time.Now().UnixNano())
			}
		}()
	}
	// listsEngine reports whether engine 0 lists kill::work on engine name
	// (true on an error: not known to be gone).
	listsEngine := func(name string) bool {
		fl, err := sdk.Call[struct {
			Functions []struct {
				Engines []string `json:"engines"`
			} `json:"functions"`
		}](ctx, caller, "engine::functions::list", map[string]any{"prefix": "kill::"})
		listed := err != nil
		for _, f := range fl.Functions {
			listed = listed || slices.Contains(f.Engines, name)
		}
		return listed
	}
	if !listsEngine(names[2]) {
		t.Fatalf("engine 0 does not list kill::work on %s before the kill", names[2])
	}
	// Mid-load: kill engine 2 once engine 2's worker is busy.
	before := served[2].Load()
	for served[2].Load() < before+50 {
		if ctx.Err() != nil {
			t.Fatal("no load reached engine 2")
		}
		time.Sleep(5 * time.Millisecond)
	}
	balancer.target.Store(strings.TrimPrefix(urls[1], "ws://"))
	procs[2].kill()
	killedAt.Store(time.Now().UnixNano())
	// Engine 0 drops engine 2 from its table within ttl + heartbeat (the
	// slack is for a loaded machine) and logs that it left.
	for listsEngine(names[2]) {
		if ctx.Err() != nil {
			t.Fatal("engine 0 still lists the killed engine")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(time.Unix(0, killedAt.Load())); d > 1100*time.Millisecond {
		t.Errorf("engine 0 listed the killed engine for %v; want at most ttl+heartbeat (600ms)", d)
	}
	if procs[0].logged(`"cluster peer left"`, `"engine":"`+names[2]+`"`) == nil {
		t.Errorf("engine 0 did not log that %s left", names[2])
	}
	// Survivors keep serving: engine 1's count keeps rising for a second.
	after := served[1].Load()
	time.Sleep(time.Second)
	if served[1].Load() < after+100 {
		t.Errorf("engine 1 served only %d calls in the second after the kill", served[1].Load()-after)
	}
	// Engine 2's worker reconnects through the balancer to engine 1 and
	// takes calls again.
	atKill := served[2].Load()
	for served[2].Load() < atKill+20 {
		if ctx.Err() != nil {
			t.Fatalf("engine 2's worker never served again after reconnecting (served %d since the kill)", served[2].Load()-atKill)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for code, n := range codes {
		if code != "invocation_stopped" && code != "cluster_unavailable" {
			t.Errorf("%d calls failed with %q; want only invocation_stopped/cluster_unavailable", n, code)
		}
	}
	if codes["invocation_stopped"] == 0 {
		t.Errorf("no call in flight on the killed engine was reported stopped (codes %v)", codes)
	}
	if l := lastErr.Load(); l > 0 {
		if d := time.Duration(l - killedAt.Load()); d > 700*time.Millisecond {
			t.Errorf("calls still failed %v after the kill; want none after ttl+heartbeat", d)
		}
	}
	t.Logf("after the kill: %d ok, failures %v; engine 1 served %d, engine 2 %d", ok.Load(), codes, served[1].Load(), served[2].Load())
}

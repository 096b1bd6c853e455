//go:build linux

package exec_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/iii-workbench/iii/engine/modules/cron" // CronModule
	httpapi "github.com/iii-workbench/iii/engine/modules/http"
	"github.com/iii-workbench/iii/sdk"
)

// httpLoad requests a URL in n goroutines until stopped, counting every
// request that errs or does not answer 200.
type httpLoad struct {
	requests, failures atomic.Int64
	last               atomic.Value // the version of the latest answer
	mu                 sync.Mutex
	firstErr           string
	cancel             context.CancelFunc
	wg                 sync.WaitGroup
	client             *http.Client
}

func startHTTPLoad(url string, n int) *httpLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &httpLoad{cancel: cancel, client: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: n}}}
	for range n {
		l.wg.Go(func() { // exits when stop cancels ctx
			for ctx.Err() == nil {
				version, err := l.get(ctx, url)
				if ctx.Err() != nil {
					return
				}
				l.requests.Add(1)
				if err != nil {
					l.failures.Add(1)
					l.mu.Lock()
					if l.firstErr == "" {
						l.firstErr = err.Error()
					}
					l.mu.Unlock()
					continue
				}
				l.last.Store(version)
			}
		})
	}
	return l
}

func (l *httpLoad) get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s %s", url, resp.Status, body)
	}
	var out struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("GET %s: body %s: %w", url, body, err)
	}
	return out.Version, nil
}

func (l *httpLoad) stop() {
	l.cancel()
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

// tickLog is ticks::record, served by an SDK worker of the test: the cron
// firings of echo::tick, by scheduled time.
type tickLog struct {
	mu  sync.Mutex
	at  map[time.Time]int
	w   *sdk.Worker
	end context.CancelFunc
}

func startTickLog(t *testing.T, url string) *tickLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := sdk.Connect(ctx, url, sdk.WithName("ticks"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	tl := &tickLog{at: map[time.Time]int{}, w: w, end: cancel}
	err = w.RegisterFunction("ticks::record", sdk.Typed(func(_ context.Context, in struct {
		ScheduledTime string `json:"scheduled_time"`
	}) (any, error) {
		at, err := time.Parse(time.RFC3339, in.ScheduledTime)
		if err != nil {
			return nil, err
		}
		tl.mu.Lock()
		tl.at[at]++
		tl.mu.Unlock()
		return nil, nil
	}))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return tl
}

func (tl *tickLog) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tl.w.Close(ctx)
	tl.end()
}

// times lists the scheduled times seen, in order, and those seen twice.
func (tl *tickLog) times() (all, doubled []time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for at, n := range tl.at {
		all = append(all, at)
		if n > 1 {
			doubled = append(doubled, at)
		}
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	return all, doubled
}

func (tl *tickLog) latest() time.Time {
	all, _ := tl.times()
	if len(all) == 0 {
		return time.Time{}
	}
	return all[len(all)-1]
}

// triggerModules are the modules the reload tests bind triggers of.
const triggerModules = `
	- {class: RestApiModule, config: {host: 127.0.0.1, port: 0}}
	- {class: CronModule}`

// TestReloadKeepsTriggers: the Go test worker, bound to an HTTP route and a
// per-second cron schedule, reloaded 20 times under load.
func TestReloadKeepsTriggers(t *testing.T) {
	h := newHarness(t, opts{modules: triggerModules, extra: `
		watch: ["**/*.txt"]
		debounce_ms: 30
		env: {WORKER_TRIGGERS: "1"}`})
	logsOnFailure(t, h)
	reloadUnderLoad(t, h, 20)
}

// TestReloadKeepsTriggersNode: the same with a worker on the published
// Node iii-sdk, started and reloaded by the module as `node worker.mjs`
// (the scaffolded Node worker's shape).
func TestReloadKeepsTriggersNode(t *testing.T) {
	node, err := osexec.LookPath("node")
	sdkDir, _ := filepath.Abs("../../compat/testdata/node/node_modules")
	if _, serr := os.Stat(filepath.Join(sdkDir, "iii-sdk")); err != nil || serr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node (%v) and iii-sdk in %s (%v) are required in CI (.ci/run installs them)", err, sdkDir, serr)
		}
		t.Skipf("needs node (%v) and iii-sdk in %s (%v)", err, sdkDir, serr)
	}
	src, err := os.ReadFile("testdata/node/worker.mjs")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, opts{slow: true, run: node + " worker.mjs", modules: triggerModules, extra: `
		watch: ["**/*.txt"]
		debounce_ms: 30`}, func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "worker.mjs"), src, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(sdkDir, filepath.Join(dir, "node_modules")); err != nil {
			t.Fatal(err)
		}
	})
	logsOnFailure(t, h)
	// Fewer reloads than the Go worker's 20: a Node start costs ~0.5 s of
	// CPU, seconds on a loaded machine.
	reloadUnderLoad(t, h, 2)
}

// TestReloadKeepsTriggersPython: the same with a worker on the published
// Python iii-sdk (the scaffolded Python worker's shape), run with the
// compat suite's virtualenv.
func TestReloadKeepsTriggersPython(t *testing.T) {
	python, _ := filepath.Abs("../../compat/testdata/python/.venv/bin/python")
	if _, err := os.Stat(python); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the compat suite's Python virtualenv is required in CI (.ci/run makes it): %v", err)
		}
		t.Skipf("needs the compat suite's Python virtualenv: %v", err)
	}
	src, err := os.ReadFile("testdata/python/worker.py")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, opts{slow: true, run: python + " worker.py", modules: triggerModules, extra: `
		watch: ["**/*.txt"]
		debounce_ms: 30`}, func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "worker.py"), src, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	logsOnFailure(t, h)
	// Fewer reloads than the Go worker's 20: a Python start costs ~0.5 s
	// of CPU, seconds on a loaded machine.
	reloadUnderLoad(t, h, 2)
}

// TestReloadKeepsTriggersPython25: the same worker script on the Python
// iii-sdk 0.25, which declares features: its new process registers the
// worker name and functions the old one still holds, which the engine
// would refuse (WORKER_NAMESPACE_CONFLICT) were the old one not marked
// retiring by the reload.
func TestReloadKeepsTriggersPython25(t *testing.T) {
	python, _ := filepath.Abs("../../compat/testdata/python25/.venv/bin/python")
	if _, err := os.Stat(python); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the compat suite's Python 0.25 virtualenv is required in CI (.ci/run makes it): %v", err)
		}
		t.Skipf("needs the compat suite's Python 0.25 virtualenv: %v", err)
	}
	src, err := os.ReadFile("testdata/python/worker.py")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, opts{slow: true, run: python + " worker.py", modules: triggerModules, extra: `
		watch: ["**/*.txt"]
		debounce_ms: 30`}, func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "worker.py"), src, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	logsOnFailure(t, h)
	reloadUnderLoad(t, h, 2)
}

// reloadUnderLoad reloads h's worker (bound to GET /echo/hello and a
// per-second cron on echo::tick) the given number of times under HTTP load
// and calls by function id. Each new process registers the same triggers
// and takes them over: no request fails, no call fails, every second fires
// exactly once, and the engine lists each binding once, owned by the
// serving worker.
func reloadUnderLoad(t *testing.T, h *harness, reloads int) {
	t.Helper()
	h.waitRunning()
	m, ok := h.srv.Modules().Get("http")
	if !ok {
		t.Fatal("http module not started")
	}
	url := "http://" + m.(*httpapi.Module).Addr() + "/echo/hello"
	ticks := startTickLog(t, h.srv.URL())
	defer ticks.stop()
	load := startHTTPLoad(url, 2)
	defer load.stop()
	c := startCaller(t, h.srv.URL(), 2)
	c.limit = h.limit
	defer c.stop(t)
	h.until("HTTP answers from v1", func() bool { return load.last.Load() == "v1" })
	c.waitAnswers(t, "v1")
	h.until("a cron tick", func() bool { return !ticks.latest().IsZero() })
	// Failures before the route first appeared are not the reloads'.
	load.failures.Store(0)
	load.requests.Store(0)
	first := ticks.latest()

	start := time.Now()
	for i := 1; i <= reloads; i++ {
		v := fmt.Sprintf("v%d", i+1)
		reqs, calls := load.requests.Load(), c.calls.Load()
		h.write("version.txt", v)
		h.waitReloads(i)
		h.until("HTTP answers from "+v, func() bool { return load.last.Load() == v })
		c.waitAnswers(t, v)
		h.until(fmt.Sprintf("10 requests and 10 calls after reload %d", i), func() bool {
			return load.requests.Load() >= reqs+10 && c.calls.Load() >= calls+10
		})
	}
	elapsed := time.Since(start)
	// Ticks through the whole window: wait for one scheduled after it.
	end := time.Now().Truncate(time.Second).Add(time.Second)
	h.until("a cron tick after the reloads", func() bool { return !ticks.latest().Before(end) })
	load.stop()
	c.stop(t)

	if f := load.failures.Load(); f != 0 {
		t.Errorf("%d of %d HTTP requests failed across %d reloads (first: %s), want 0", f, load.requests.Load(), reloads, load.firstErr)
	}
	if f := c.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed across %d reloads (first: %v), want 0", f, c.calls.Load(), reloads, c.firstErr)
	}
	all, doubled := ticks.times()
	var window []time.Time
	for _, at := range all {
		if !at.Before(first) && !at.After(end) {
			window = append(window, at)
		}
	}
	want := int(end.Sub(first)/time.Second) + 1
	if len(window) != want || len(doubled) != 0 {
		t.Errorf("cron ticks from %s to %s: %d distinct (want %d, one a second), doubled %v; got %v",
			first.Format(time.TimeOnly), end.Format(time.TimeOnly), len(window), want, doubled, window)
	}
	t.Logf("%d reloads in %v: %d HTTP requests (%d failed), %d calls (%d failed), %d cron ticks over %v (%d missed, %d doubled)",
		reloads, elapsed.Round(time.Millisecond), load.requests.Load(), load.failures.Load(), c.calls.Load(), c.failures.Load(),
		len(window), end.Sub(first), want-len(window), len(doubled))

	// The engine lists what is served: one route and one schedule, owned by
	// the serving worker.
	cur := h.status().WorkerIDs
	owners := map[string][]string{}
	for _, tr := range h.srv.Engine().Snapshot().Triggers {
		if tr.Type == "http" || tr.Type == "cron" {
			owners[tr.Type] = append(owners[tr.Type], tr.OwnerWorker)
		}
	}
	if len(cur) != 1 || !slices.Equal(owners["http"], cur) || !slices.Equal(owners["cron"], cur) {
		t.Errorf("bindings by owner %v, want one http and one cron owned by %v", owners, cur)
	}
}

// logsOnFailure logs the engine's last log records if the test fails.
func logsOnFailure(t *testing.T, h *harness) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		h.logs.mu.Lock()
		defer h.logs.mu.Unlock()
		recs := h.logs.recs[max(0, len(h.logs.recs)-300):]
		for _, r := range recs {
			t.Log(r)
		}
	})
}

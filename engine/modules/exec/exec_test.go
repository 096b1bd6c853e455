//go:build linux

package exec_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/modules/exec"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

func TestSpawn(t *testing.T) {
	h := newHarness(t, opts{token: "s3cret"})
	st := h.waitRunning()
	env := h.mustCall("echo::env", nil)
	want := map[string]string{
		"III_URL":         h.srv.URL(),
		"III_WORKER_NAME": "echo",
		"III_ENGINE_PID":  strconv.Itoa(os.Getpid()),
		"III_TOKEN":       "s3cret",
		"version":         "v1",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("worker env %s = %v, want %q", k, env[k], v)
		}
	}
	// run is exec'd by the shell: the worker is the process itself.
	if pid := int(env["pid"].(float64)); pid != st.PID {
		t.Errorf("worker pid %d, status PID %d: want the same (sh -c exec)", pid, st.PID)
	}
	snap := h.srv.Engine().Snapshot()
	for _, w := range snap.Workers {
		if w.ID == st.WorkerIDs[0] && (w.Name != "echo" || !slices.Contains(w.Functions, "echo::hello")) {
			t.Errorf("engine worker %+v: want name echo serving echo::hello", w)
		}
	}

	// Output: logged with worker and stream, published as LogLine.
	deadline := time.Now().Add(waitLimit)
	for {
		out := h.logs.find(map[string]string{"msg": "ready v1", "worker": "echo", "stream": "stdout", "module": "exec"})
		errs := h.logs.find(map[string]string{"msg": "stderr line from v1", "worker": "echo", "stream": "stderr"})
		if len(out) == 1 && len(errs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log records for the worker's stdout/stderr: got %v and %v, want one each", out, errs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A manual restart (the TUI's R key) is a zero-drop reload; its output
	// is published.
	if err := h.mod.Restart("echo"); err != nil {
		t.Fatal(err)
	}
	st2 := h.waitReloads(1)
	if st2.PID == st.PID {
		t.Errorf("after Restart the PID is still %d", st.PID)
	}
	deadline = time.Now().Add(waitLimit)
	for !slices.ContainsFunc(h.logLines(), func(l event.LogLine) bool {
		return l.Worker == "echo" && l.PID == st2.PID && l.Stream == "stdout" && l.Line == "ready v1"
	}) {
		if time.Now().After(deadline) {
			t.Fatalf("no LogLine{echo, pid %d, stdout, ready v1}; got %+v", st2.PID, h.logLines())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := h.mod.Restart("nope"); !errors.Is(err, exec.ErrUnknownWorker) {
		t.Errorf("Restart(nope) = %v, want ErrUnknownWorker", err)
	}
}

func TestCrashRestart(t *testing.T) {
	h := newHarness(t, opts{extra: "restart_backoff_ms: 50"})
	st := h.waitRunning()
	if _, err := h.call("echo::crash", nil); err != nil {
		t.Fatalf("echo::crash: %v", err)
	}
	st2 := h.waitFor("a restart after the crash", func(st exec.WorkerStatus) bool {
		return st.Restarts == 1 && st.Status == event.ProcessRunning && len(st.WorkerIDs) > 0
	})
	if st2.PID == st.PID || st2.ExitCode != 3 || !strings.Contains(st2.Error, "exited with code 3") ||
		!slices.Contains(st2.LastLines, "crashing on request") {
		t.Errorf("after crash: %+v; want a new PID, exit code 3, the error and the last lines", st2)
	}
	if got := h.mustCall("echo::hello", nil)["version"]; got != "v1" {
		t.Errorf("hello after restart = %v, want v1", got)
	}
	// Events reach the harness's subscription a moment after the status.
	h.until("ProcessChanged{crashed, exit 3, last lines}", func() bool {
		return slices.ContainsFunc(h.events(), func(e event.ProcessChanged) bool {
			return e.Status == event.ProcessCrashed && e.ExitCode == 3 && slices.Contains(e.LastLines, "crashing on request")
		})
	})

	// SIGKILL from outside is a crash too.
	if err := syscall.Kill(st2.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st3 := h.waitFor("a restart after SIGKILL", func(st exec.WorkerStatus) bool {
		return st.Restarts == 2 && st.Status == event.ProcessRunning && len(st.WorkerIDs) > 0
	})
	if st3.ExitCode != -1 || !strings.Contains(st3.Error, "killed") {
		t.Errorf("after SIGKILL: exit code %d, error %q; want -1 and killed", st3.ExitCode, st3.Error)
	}
}

func TestCrashBackoff(t *testing.T) {
	h := newHarness(t, opts{version: "exit", extra: `
		watch: [version.txt]
		debounce_ms: 20
		restart_backoff_ms: 50
		restart_backoff_max_ms: 200`})
	// Collect the backoffs of successive restarts until the cap is seen
	// twice.
	var delays []time.Duration
	deadline := time.Now().Add(waitLimit)
	for {
		delays = delays[:0]
		for _, e := range h.events() {
			if e.Status == event.ProcessRestarting {
				delays = append(delays, e.RestartIn)
			}
		}
		if n := len(delays); n >= 4 && delays[n-1] == 200*time.Millisecond && delays[n-2] == 200*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart backoffs %v: want them to grow to 200ms", delays)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 1; i < len(delays); i++ {
		if want := min(2*delays[i-1], 200*time.Millisecond); delays[i] != want {
			t.Errorf("backoffs %v: #%d is %v, want %v", delays, i, delays[i], want)
		}
	}
	st := h.status()
	if st.ExitCode != 3 || !slices.Contains(st.LastLines, "version exit: exiting with code 3") || st.Restarts < 4 {
		t.Errorf("status %+v: want exit code 3, its last line, 4+ restarts", st)
	}
	// A fix on disk starts it at once.
	h.write("version.txt", "v2")
	h.waitRunning()
	if got := h.mustCall("echo::hello", nil)["version"]; got != "v2" {
		t.Errorf("hello = %v, want v2", got)
	}
}

// caller calls echo::hello through the engine from an SDK worker, in n
// goroutines, until stopped, counting failures.
type caller struct {
	calls, failures atomic.Int64
	mu              sync.Mutex
	firstErr        error
	last            atomic.Value // version string
	cancel          context.CancelFunc
	wg              sync.WaitGroup
	w               *sdk.Worker
	limit           time.Duration // of waitAnswers; 0: waitLimit
}

func startCaller(t *testing.T, url string, n int) *caller {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := sdk.Connect(ctx, url, sdk.WithName("caller"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &caller{cancel: cancel, w: w}
	for range n {
		c.wg.Go(func() { // exits when stop cancels ctx
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				out, err := sdk.Call[map[string]string](cctx, w, "echo::hello", nil)
				ccancel()
				if ctx.Err() != nil {
					return
				}
				c.calls.Add(1)
				if err != nil {
					c.failures.Add(1)
					c.mu.Lock()
					if c.firstErr == nil {
						c.firstErr = err
					}
					c.mu.Unlock()
					continue
				}
				c.last.Store(out["version"])
			}
		})
	}
	return c
}

func (c *caller) stop(t *testing.T) {
	c.cancel()
	c.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.w.Close(ctx)
}

// waitAnswers waits until the caller's answers are version.
func (c *caller) waitAnswers(t *testing.T, version string) {
	t.Helper()
	limit := waitLimit
	if c.limit > 0 {
		limit = c.limit
	}
	deadline := time.Now().Add(limit)
	for c.last.Load() != version {
		if time.Now().After(deadline) {
			t.Fatalf("answers are %v, want %s", c.last.Load(), version)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestReloadZeroDrop(t *testing.T) {
	const reloads = 20
	h := newHarness(t, opts{extra: `
		watch: ["**/*.txt"]
		debounce_ms: 30`})
	h.waitRunning()
	c := startCaller(t, h.srv.URL(), 4)
	defer c.stop(t)
	c.waitAnswers(t, "v1")
	pids := []int{h.status().PID}
	start := time.Now()
	for i := 1; i <= reloads; i++ {
		v := fmt.Sprintf("v%d", i+1)
		before := c.calls.Load()
		h.write("version.txt", v)
		st := h.waitReloads(i)
		pids = append(pids, st.PID)
		c.waitAnswers(t, v)
		// Calls keep flowing through each reload.
		until(t, waitLimit, fmt.Sprintf("10 calls after reload %d", i), func() bool { return c.calls.Load() >= before+10 })
	}
	elapsed := time.Since(start)
	c.stop(t)
	if f := c.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed across %d reloads (first: %v), want 0", f, c.calls.Load(), reloads, c.firstErr)
	}
	t.Logf("%d reloads in %v (%v each), %d calls, %d failed", reloads, elapsed.Round(time.Millisecond),
		(elapsed / reloads).Round(time.Millisecond), c.calls.Load(), c.failures.Load())
	// Only the last process is left.
	for _, pid := range pids[:len(pids)-1] {
		if alive(pid) {
			t.Errorf("replaced process %d still runs", pid)
		}
	}
	distinct := slices.Clone(pids)
	slices.Sort(distinct)
	if len(slices.Compact(distinct)) != reloads+1 {
		t.Errorf("pids %v: want %d distinct", pids, reloads+1)
	}
}

func TestReloadFailureKeepsOld(t *testing.T) {
	h := newHarness(t, opts{extra: `
		watch: [version.txt]
		debounce_ms: 30
		startup_timeout_ms: 1500`})
	st := h.waitRunning()
	c := startCaller(t, h.srv.URL(), 2)
	defer c.stop(t)
	c.waitAnswers(t, "v1")

	for _, bad := range []struct{ version, why string }{
		{"exit", "exited with code 3"},
		{"hang", "did not register"},
	} {
		errBefore := h.status().Error
		h.write("version.txt", bad.version)
		got := h.waitFor("the failed reload to "+bad.version, func(s exec.WorkerStatus) bool {
			return s.Error != errBefore && s.Status == event.ProcessRunning
		})
		if got.PID != st.PID || got.Reloads != 0 || !strings.Contains(got.Error, "reload failed") ||
			!strings.Contains(got.Error, bad.why) {
			t.Errorf("after reload to %q: %+v; want pid %d kept, no reload, error mentioning %q", bad.version, got, st.PID, bad.why)
		}
		if v := h.mustCall("echo::hello", nil)["version"]; v != "v1" {
			t.Errorf("after failed reload to %q: hello = %v, want v1", bad.version, v)
		}
		// The failed process is gone.
		h.mu.Lock()
		for pid := range h.pids {
			if pid != st.PID && alive(pid) {
				t.Errorf("after failed reload to %q: process %d (%s) still runs", bad.version, pid, procInfo(pid))
			}
		}
		h.mu.Unlock()
	}
	h.write("version.txt", "v2")
	h.waitReloads(1)
	c.waitAnswers(t, "v2")
	c.stop(t)
	if f := c.failures.Load(); f != 0 {
		t.Errorf("%d of %d calls failed (first: %v), want 0", f, c.calls.Load(), c.firstErr)
	}
}

// TestReloadFailurePIDs: the process events of a failed reload name the
// old process as serving and the new one as the one that failed, with the
// failed one's output; after a later reload succeeds, no event names the
// new process with the earlier failure.
func TestReloadFailurePIDs(t *testing.T) {
	h := newHarness(t, opts{extra: `
		watch: [version.txt]
		debounce_ms: 30`})
	old := h.waitRunning().PID
	h.write("version.txt", "exit")
	h.waitFor("the failed reload", func(s exec.WorkerStatus) bool { return s.Error != "" && s.Status == event.ProcessRunning })
	// The status changes first; its event and the failed process's output
	// reach the harness's subscription a moment later.
	var failed *event.ProcessChanged
	h.until("a process event reporting the failed reload", func() bool {
		for _, e := range h.events() {
			if strings.Contains(e.Error, "reload failed") {
				failed = &e
				return true
			}
		}
		return false
	})
	var failedPID int
	h.until("the failed process's last output line", func() bool {
		for _, l := range h.logLines() {
			if strings.Contains(l.Line, "exiting with code 3") {
				failedPID = l.PID
			}
		}
		return failedPID != 0
	})
	if failed.PID != old || failed.FailedPID != failedPID || failedPID == 0 || failedPID == old {
		t.Errorf("failed reload event: pid %d, failed pid %d; want pid %d (serving) and failed pid %d (its output)",
			failed.PID, failed.FailedPID, old, failedPID)
	}
	if !slices.ContainsFunc(failed.LastLines, func(l string) bool { return strings.Contains(l, "exiting with code 3") }) {
		t.Errorf("failed reload event's last lines %q; want the failed process's output", failed.LastLines)
	}
	seen := len(h.events())
	h.write("version.txt", "v2")
	st := h.waitReloads(1)
	for _, e := range h.events()[seen:] {
		if e.PID == st.PID && (e.Error != "" || e.FailedPID != 0 || len(e.LastLines) > 0) {
			t.Errorf("%s event of the new process %d carries the earlier failure: error %q, failed pid %d, lines %q",
				e.Status, e.PID, e.Error, e.FailedPID, e.LastLines)
		}
	}
}

// TestReloadDroppedFunction: a new version that no longer serves a
// function replaces the old one once its registrations have settled.
func TestReloadDroppedFunction(t *testing.T) {
	h := newHarness(t, opts{extra: `
		watch: [version.txt]
		debounce_ms: 30
		reload_settle_ms: 300`})
	h.waitRunning()
	h.write("version.txt", "partial-v2")
	h.waitReloads(1)
	if v := h.mustCall("echo::hello", nil)["version"]; v != "partial-v2" {
		t.Errorf("hello = %v, want partial-v2", v)
	}
	var eb *protocol.ErrorBody
	if _, err := h.call("echo::crash", nil); !errors.As(err, &eb) || eb.Code != "function_not_found" {
		t.Errorf("echo::crash after the reload: %v, want function_not_found", err)
	}
}

func TestInstall(t *testing.T) {
	extra := `
		watch: [version.txt]
		debounce_ms: 30
		install: ["echo installing; echo; echo run >> installs.log", "test \"$(cat deps.txt)\" != bad"]
		install_inputs: [deps.txt]`
	h := newHarnessWith(t, opts{extra: extra}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "deps.txt"), []byte("a"), 0o644)
	})
	installs := func() int {
		b, _ := os.ReadFile(filepath.Join(h.dir, "installs.log"))
		return strings.Count(string(b), "run\n")
	}
	h.waitRunning()
	if n := installs(); n != 1 {
		t.Fatalf("installs after start = %d, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(h.dir, ".iii", "install.sha256")); err != nil {
		t.Errorf("install state: %v", err)
	}
	if len(h.logs.find(map[string]string{"msg": "installing", "worker": "echo", "stream": "install"})) != 1 {
		t.Errorf("no log record of the install output")
	}
	if blank := h.logs.find(map[string]string{"msg": "", "stream": "install"}); len(blank) != 0 {
		t.Errorf("the install's blank line was recorded: %v", blank)
	}

	steps := []struct {
		file, content string
		installs      int
		reloads       int
		fails         string // substring of the error; "" for success
	}{
		{"version.txt", "v2", 1, 1, ""},              // not an input: no install
		{"deps.txt", "b", 2, 2, ""},                  // input changed: install, reload
		{"deps.txt", "bad", 3, 2, "install"},         // install fails: old keeps serving
		{"version.txt", "v3", 3, 2, "still failing"}, // same inputs: no retry
		{"deps.txt", "good", 4, 3, ""},               // fixed: install, reload
	}
	for _, s := range steps {
		errBefore, reloadsBefore := h.status().Error, h.status().Reloads
		h.write(s.file, s.content)
		st := h.waitFor(fmt.Sprintf("the reload after %s=%s", s.file, s.content), func(st exec.WorkerStatus) bool {
			return st.Status == event.ProcessRunning && (st.Reloads != reloadsBefore || st.Error != errBefore)
		})
		if n := installs(); n != s.installs || st.Reloads != s.reloads ||
			(s.fails == "") != (st.Error == "") || !strings.Contains(st.Error, s.fails) {
			t.Errorf("after %s=%s: installs %d, reloads %d, error %q; want %d, %d, %q", s.file, s.content,
				n, st.Reloads, st.Error, s.installs, s.reloads, s.fails)
		}
	}
	if v := h.mustCall("echo::hello", nil)["version"]; v != "v3" {
		t.Errorf("hello = %v, want v3", v)
	}
	// A new engine on the same project does not install again.
	h.stop()
	h.start(opts{extra: extra})
	h.waitRunning()
	if n := installs(); n != 4 {
		t.Errorf("installs after an engine restart = %d, want 4 (no new install)", n)
	}
}

// TestInstallWritesDoNotReload: an install that rewrites watched files
// (npm install rewrites package-lock.json, an install input, and may
// touch package.json) does not reload the worker it installed for once it
// has started; a real edit afterwards still does.
func TestInstallWritesDoNotReload(t *testing.T) {
	h := newHarnessWith(t, opts{extra: `
		watch: [version.txt, package.json]
		debounce_ms: 150
		install: ["sleep 0.1; echo lockfile-v3 > package-lock.json.tmp && mv package-lock.json.tmp package-lock.json; touch package.json"]`},
		func(dir string) {
			os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name": "w"}`), 0o644)
		})
	st := h.waitRunning()
	if _, err := os.Stat(filepath.Join(h.dir, "package-lock.json")); err != nil {
		t.Fatalf("the install did not run: %v", err)
	}
	// Past the debounce and the watcher's longest delay (1 s), a reload
	// caused by the install's writes would have happened.
	time.Sleep(1500 * time.Millisecond)
	if got := h.status(); got.PID != st.PID || got.Reloads != 0 || got.Restarts != 0 {
		t.Fatalf("after the first start: pid %d, reloads %d, restarts %d; want pid %d, no reload or restart (the install's own writes)",
			got.PID, got.Reloads, got.Restarts, st.PID)
	}
	h.write("version.txt", "v2")
	h.waitReloads(1)
	if v := h.mustCall("echo::hello", nil)["version"]; v != "v2" {
		t.Errorf("hello = %v after the edit, want v2", v)
	}
}

func TestNoOrphans(t *testing.T) {
	h := newHarness(t, opts{extra: `
		watch: [version.txt]
		debounce_ms: 30
		stop_grace_ms: 1000
		restart_backoff_ms: 20
		env: {WORKER_CHILD: "1"}`})
	st := h.waitRunning()
	env := h.mustCall("echo::env", nil)
	pid, child := int(env["pid"].(float64)), int(env["child_pid"].(float64))
	if pid != st.PID || !alive(child) {
		t.Fatalf("worker pid %d (status %d), child %d alive %v", pid, st.PID, child, alive(child))
	}
	h.notePID(child)
	// SIGKILL of the worker: its group (the child) goes too.
	syscall.Kill(pid, syscall.SIGKILL)
	h.waitFor("the restart after SIGKILL", func(st exec.WorkerStatus) bool {
		return st.Restarts == 1 && st.Status == event.ProcessRunning && len(st.WorkerIDs) > 0
	})
	waitDead(t, pid, child)

	// Ctrl-C during a reload: the old process is draining a slow call
	// when the engine stops; neither process nor child may survive.
	env = h.mustCall("echo::env", nil)
	h.notePID(int(env["child_pid"].(float64)))
	slow := make(chan error, 1)
	go func() { // exits when the call fails at shutdown (bounded by h.call's timeout)
		_, err := h.call("echo::slow", map[string]int{"MS": 20000})
		slow <- err
	}()
	h.waitFor("the slow call", func(exec.WorkerStatus) bool {
		n, _ := h.srv.Engine().InFlight(h.status().WorkerIDs[0])
		return n == 1
	})
	h.write("version.txt", "v2")
	h.waitFor("draining", func(st exec.WorkerStatus) bool { return st.Status == event.ProcessDraining })
	newEnv := h.mustCall("echo::env", nil)
	if newEnv["version"] != "v2" {
		t.Errorf("while draining, new calls reach version %v, want v2", newEnv["version"])
	}
	h.notePID(int(newEnv["child_pid"].(float64)))
	start := time.Now()
	h.stop() // checks every process seen, children included
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v with stop_grace 1s", d)
	}
	<-slow
}

func waitDead(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d (%s) still alive", pid, procInfo(pid))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestDebounce(t *testing.T) {
	const debounce = 150 * time.Millisecond
	h := newHarness(t, opts{extra: `
		watch: [version.txt]
		debounce_ms: 150`})
	h.waitRunning()
	// An editor's save storm: writes 15 ms apart make one reload. A gap
	// the scheduler stretched to the debounce may make one more; the bound
	// follows from the gaps measured, not from the sleeps.
	want := 1
	var last time.Time
	for i := range 10 {
		if i > 0 {
			time.Sleep(15 * time.Millisecond)
		}
		h.write("version.txt", fmt.Sprintf("v%d", i+2))
		if now := time.Now(); i > 0 && now.Sub(last) >= debounce {
			want++
		}
		last = time.Now()
	}
	h.waitReloads(1)
	// The last write is served once the last reload is done.
	h.waitFor("the last write served", func(exec.WorkerStatus) bool {
		out, err := h.call("echo::hello", nil)
		return err == nil && out["version"] == "v11"
	})
	// Nothing else comes within three debounce periods.
	for end := time.Now().Add(3 * debounce); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if st := h.status(); st.Reloads > want {
			t.Fatalf("10 quick writes made %d reloads, want at most %d (1 plus the gaps of %v or more)", st.Reloads, want, debounce)
		}
	}
}

func TestNotAWorker(t *testing.T) {
	// A process that never connects is restarted plainly on a change.
	h := newHarness(t, opts{version: "hang", extra: `
		watch: [version.txt]
		debounce_ms: 30
		startup_timeout_ms: 300`})
	st := h.waitFor("running without an engine worker", func(st exec.WorkerStatus) bool {
		return st.Status == event.ProcessRunning
	})
	if len(st.WorkerIDs) != 0 {
		t.Errorf("worker ids %v, want none", st.WorkerIDs)
	}
	h.write("version.txt", "hang ")
	st2 := h.waitFor("the restart", func(st exec.WorkerStatus) bool { return st.Reloads == 1 })
	if st2.PID == st.PID || st2.PID == 0 {
		t.Errorf("pid after reload %d, before %d: want a new process", st2.PID, st.PID)
	}
	waitDead(t, st.PID)
}

// TestEngineDeath: a worker process does not outlive an engine killed with
// SIGKILL (Pdeathsig).
func TestEngineDeath(t *testing.T) {
	cmd := osexec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), engineHelperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil || !alive(pid) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q (%v): want the pid of a running worker", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitDead(t, pid)
}

package compat_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	// testTimeout bounds each top-level test.
	testTimeout = 90 * time.Second
	// stopGrace is how long a worker may take to exit after its stdin
	// closes before it is killed.
	stopGrace = 5 * time.Second
	// reconnectMS is the SDKs' initial reconnect delay in the tests.
	reconnectMS = 100
)

// testContext is the test's context bounded by testTimeout.
func testContext(t *testing.T) context.Context {
	return enginetest.ContextWithin(t, testTimeout)
}

// lang is an SDK language.
type lang string

const (
	node   lang = "node"
	python lang = "python"
	// python25 is the current-generation Python SDK (namespaces, features,
	// large messages); its tests are in python25_test.go and it is not in
	// langs.
	python25 lang = "python25"
)

var langs = []lang{node, python}

const sdkVersion25 = "0.25.0"

// syncBuffer is a buffer safe for concurrent writers.
type syncBuffer = enginetest.Logs

// --- prerequisites -------------------------------------------------------

// missing skips the test, or fails it when CI=true, naming what to install.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: the compat suite must run)", msg)
	}
	t.Skip(msg)
}

const sdkVersion = "0.22.1"

// requireSDKs skips or fails the test unless every language's SDK is
// installed, before anything is started.
func requireSDKs(t *testing.T) {
	t.Helper()
	for _, l := range langs {
		command(t, l)
	}
}

// command returns how to run the worker script of l, or skips/fails the
// test when that SDK is not installed.
func command(t *testing.T, l lang) (bin string, args []string, dir string) {
	t.Helper()
	switch l {
	case node:
		dir, _ = filepath.Abs(filepath.Join("testdata", "node"))
		bin, err := exec.LookPath("node")
		if err != nil {
			missing(t, "node is not on PATH: install Node.js >= 20, then run `npm ci` in engine/compat/testdata/node")
		}
		raw, err := os.ReadFile(filepath.Join(dir, "node_modules", "iii-sdk", "package.json"))
		if err != nil {
			missing(t, "Node SDK not installed: run `npm ci` in engine/compat/testdata/node (%v)", err)
		}
		var pkg struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(raw, &pkg); err != nil || pkg.Version != sdkVersion {
			missing(t, "engine/compat/testdata/node/node_modules has iii-sdk %q, want %s: run `npm ci` there", pkg.Version, sdkVersion)
		}
		return bin, []string{"worker.mjs"}, dir
	case python:
		dir, _ = filepath.Abs(filepath.Join("testdata", "python"))
		bin := filepath.Join(dir, ".venv", "bin", "python")
		install := "run `python3 -m venv engine/compat/testdata/python/.venv && " +
			"engine/compat/testdata/python/.venv/bin/pip install -r engine/compat/testdata/python/requirements.txt`"
		if _, err := os.Stat(bin); err != nil {
			missing(t, "Python venv missing: %s (%v)", install, err)
		}
		dist, _ := filepath.Glob(filepath.Join(dir, ".venv", "lib", "python3*", "site-packages", "iii_sdk-"+sdkVersion+".dist-info"))
		if len(dist) == 0 {
			missing(t, "iii-sdk==%s is not installed in the Python venv: %s", sdkVersion, install)
		}
		return bin, []string{"-u", "worker.py"}, dir
	case python25:
		dir, _ = filepath.Abs(filepath.Join("testdata", "python25"))
		bin := filepath.Join(dir, ".venv", "bin", "python")
		install := "run `python3 -m venv engine/compat/testdata/python25/.venv && " +
			"engine/compat/testdata/python25/.venv/bin/pip install -r engine/compat/testdata/python25/requirements.txt` (.ci/run does)"
		if _, err := os.Stat(bin); err != nil {
			missing(t, "Python 0.25 venv missing: %s (%v)", install, err)
		}
		dist, _ := filepath.Glob(filepath.Join(dir, ".venv", "lib", "python3*", "site-packages", "iii_sdk-"+sdkVersion25+".dist-info"))
		if len(dist) == 0 {
			missing(t, "iii-sdk==%s is not installed in the Python 0.25 venv: %s", sdkVersion25, install)
		}
		return bin, []string{"-u", "worker.py"}, dir
	}
	t.Fatalf("unknown language %q", l)
	return "", nil, ""
}

// --- engine --------------------------------------------------------------

// testEngine is a real engine serving on a loopback socket.
type testEngine struct {
	eng  *engine.Engine
	url  string
	logs *syncBuffer
}

func newEngine(t *testing.T, logs *syncBuffer) *engine.Engine {
	t.Helper()
	eng, err := engine.New(engine.Options{Logger: logs.Logger()})
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	return eng
}

// logOnFailure dumps the engine log when the test has failed.
func (te *testEngine) logOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine log (%s):\n%s", te.url, te.logs.String())
		}
	})
}

// startEngine serves a new engine on a loopback port; cleanup shuts it
// down (closing its worker sockets) and then the listener.
func startEngine(t *testing.T) *testEngine {
	t.Helper()
	e := enginetest.New(t, engine.Options{})
	return &testEngine{eng: e.Engine, url: e.URL, logs: e.Logs}
}

// servedEngine is an engine served with Engine.Serve on a fixed address,
// for tests that restart the engine under its workers.
type servedEngine struct {
	testEngine
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// serveEngineOn starts an engine on addr ("127.0.0.1:0" for any port).
func serveEngineOn(ctx context.Context, t *testing.T, addr string) *servedEngine {
	t.Helper()
	var ln net.Listener
	var err error
	// The previous engine on addr has closed its listener; SO_REUSEADDR
	// makes the port free at once, but allow a short retry anyway.
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			break
		}
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	logs := &syncBuffer{}
	eng := newEngine(t, logs)
	sctx, cancel := context.WithCancel(context.Background())
	se := &servedEngine{
		testEngine: testEngine{eng: eng, url: "ws://" + ln.Addr().String(), logs: logs},
		cancel:     cancel,
		done:       make(chan error, 1),
	}
	// Exits when stop cancels sctx: Serve then shuts the engine down.
	go func() { se.done <- eng.Serve(sctx, ln) }()
	t.Cleanup(func() { se.stop(t) })
	se.logOnFailure(t)
	return se
}

// stop shuts the engine down and waits for Serve to return. Idempotent.
func (se *servedEngine) stop(t *testing.T) {
	se.once.Do(func() {
		se.cancel()
		if err := <-se.done; err != nil {
			t.Errorf("engine serve/shutdown: %v", err)
		}
	})
}

// addr is host:port of the engine's listener.
func (te *testEngine) addr() string { return strings.TrimPrefix(te.url, "ws://") }

// waitTick waits d or until ctx is done; false means ctx is done.
func waitTick(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// --- SDK worker processes ------------------------------------------------

// event is one "COMPAT <json>" line a worker script printed.
type event map[string]any

func (e event) str(key string) string {
	s, _ := e[key].(string)
	return s
}

func (e event) obj(key string) map[string]any {
	m, _ := e[key].(map[string]any)
	return m
}

func (e event) String() string {
	b, _ := json.Marshal(map[string]any(e))
	return string(b)
}

// workerProc is a worker script running in its own process group.
type workerProc struct {
	lang   lang
	name   string // worker name reported to the engine
	prefix string // its functions are <prefix>::echo|fail|hang|sink

	cmd     *exec.Cmd
	stdin   io.WriteCloser
	cancel  context.CancelFunc // kills the process group
	output  *syncBuffer        // stderr and non-event stdout
	exited  chan struct{}      // closed once the process is reaped
	waitErr error              // valid after exited

	mu     sync.Mutex
	events []event
	notify chan struct{} // cap 1; signalled on every new event

	inMu  sync.Mutex // serialises stdin writes
	calls atomic.Int64
}

// startWorker starts the worker script of l connected to url, with env
// (KEY=value) added to its environment. It does not wait for it to be
// ready (see ready). Cleanup closes its stdin (a graceful exit), then kills
// the process group after stopGrace.
func startWorker(t *testing.T, l lang, url, prefix string, env ...string) *workerProc {
	t.Helper()
	bin, args, dir := command(t, l)
	pctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, bin, args...)
	cmd.Dir = dir
	w := &workerProc{
		lang: l, name: "compat-" + prefix, prefix: prefix,
		cmd: cmd, cancel: cancel, output: &syncBuffer{},
		exited: make(chan struct{}), notify: make(chan struct{}, 1),
	}
	cmd.Env = append(os.Environ(),
		"III_URL="+url,
		"COMPAT_PREFIX="+prefix,
		"COMPAT_NAME="+w.name,
		fmt.Sprintf("COMPAT_RECONNECT_MS=%d", reconnectMS),
		"PYTHONUNBUFFERED=1",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	cmd.Stderr = w.output
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("%s worker stdout: %v", l, err)
	}
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatalf("%s worker stdin: %v", l, err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s worker: %v", l, err)
	}
	// Exits at EOF on stdout, i.e. when the process group is gone; then
	// reaps the process.
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			w.line(sc.Text())
		}
		w.waitErr = cmd.Wait()
		close(w.exited)
	}()
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("%s worker %s (exit: %v) output:\n%s", l, w.name, w.waitErr, w.output.String())
		}
	})
	return w
}

func (w *workerProc) line(s string) {
	raw, ok := strings.CutPrefix(s, "COMPAT ")
	if !ok {
		fmt.Fprintln(w.output, s)
		return
	}
	fmt.Fprintln(w.output, s)
	var ev event
	if err := json.Unmarshal([]byte(raw), &ev); err != nil {
		fmt.Fprintf(w.output, "(unparsable event: %v)\n", err)
		return
	}
	w.mu.Lock()
	w.events = append(w.events, ev)
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// stop closes stdin, waits stopGrace for a graceful exit, then kills the
// process group and waits for it to be reaped.
func (w *workerProc) stop() {
	w.inMu.Lock()
	w.stdin.Close()
	w.inMu.Unlock()
	tm := time.NewTimer(stopGrace)
	defer tm.Stop()
	select {
	case <-w.exited:
	case <-tm.C:
	}
	w.cancel() // kills the group if it is still there; no-op after Wait
	<-w.exited
}

// kill SIGKILLs the worker's process group and waits until it is reaped.
func (w *workerProc) kill(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s worker: %v", w.lang, err)
	}
	select {
	case <-w.exited:
	case <-ctx.Done():
		t.Fatalf("%s worker not reaped after SIGKILL: %v", w.lang, ctx.Err())
	}
}

// send writes one command line to the worker.
func (w *workerProc) send(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatalf("encode command: %v", err)
	}
	w.inMu.Lock()
	defer w.inMu.Unlock()
	if _, err := w.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("write command to %s worker: %v", w.lang, err)
	}
}

// waitEvents waits until n events match pred and returns the first n.
func (w *workerProc) waitEvents(t *testing.T, ctx context.Context, n int, what string, pred func(event) bool) []event {
	t.Helper()
	for {
		w.mu.Lock()
		var got []event
		for _, ev := range w.events {
			if pred(ev) {
				got = append(got, ev)
			}
		}
		w.mu.Unlock()
		if len(got) >= n {
			return got[:n]
		}
		select {
		case <-w.notify:
		case <-w.exited:
			// Every line was read before exited closed: one last look.
			got = got[:0]
			w.mu.Lock()
			for _, ev := range w.events {
				if pred(ev) {
					got = append(got, ev)
				}
			}
			w.mu.Unlock()
			if len(got) >= n {
				return got[:n]
			}
			t.Fatalf("%s worker %s exited (%v) while waiting for %s", w.lang, w.name, w.waitErr, what)
		case <-ctx.Done():
			t.Fatalf("%s worker %s: no %s (%d of %d seen): %v", w.lang, w.name, what, len(got), n, ctx.Err())
		}
	}
}

func (w *workerProc) waitEvent(t *testing.T, ctx context.Context, what string, pred func(event) bool) event {
	t.Helper()
	return w.waitEvents(t, ctx, 1, what, pred)[0]
}

// ready waits for the worker's "ready" event: its functions are registered
// and listed by the engine.
func (w *workerProc) ready(t *testing.T, ctx context.Context) {
	t.Helper()
	w.waitEvent(t, ctx, "ready event", func(e event) bool { return e.str("event") == "ready" })
}

func (w *workerProc) fn(name string) string { return w.prefix + "::" + name }

// invoked waits for the n-th invocation of the worker's function fn whose
// data matches pred.
func (w *workerProc) invoked(t *testing.T, ctx context.Context, fn string, pred func(data map[string]any) bool) event {
	t.Helper()
	return w.waitEvent(t, ctx, "invocation of "+fn, func(e event) bool {
		return e.str("event") == "invoked" && e.str("function_id") == fn && (pred == nil || pred(e.obj("data")))
	})
}

// startCall asks the worker to call functionID through its SDK and returns
// the call's id; see outcome.
func (w *workerProc) startCall(t *testing.T, functionID string, payload any, opts map[string]any) string {
	t.Helper()
	id := fmt.Sprintf("call-%d", w.calls.Add(1))
	cmd := map[string]any{"op": "call", "id": id, "function_id": functionID, "payload": payload}
	for k, v := range opts {
		cmd[k] = v
	}
	w.send(t, cmd)
	return id
}

// outcome waits for the result, error or sent event of call id.
func (w *workerProc) outcome(t *testing.T, ctx context.Context, id string) event {
	t.Helper()
	return w.waitEvent(t, ctx, "outcome of "+id, func(e event) bool {
		switch e.str("event") {
		case "result", "error", "sent":
			return e.str("id") == id
		}
		return false
	})
}

// call makes a call through the worker's SDK and waits for its outcome.
func (w *workerProc) call(t *testing.T, ctx context.Context, functionID string, payload any) event {
	t.Helper()
	return w.outcome(t, ctx, w.startCall(t, functionID, payload, nil))
}

// do sends a command and waits for the event that acknowledges it.
func (w *workerProc) do(t *testing.T, ctx context.Context, cmd map[string]any, ack string) event {
	t.Helper()
	key := "type_id"
	if _, ok := cmd["ref"]; ok {
		key = "ref"
	}
	w.send(t, cmd)
	return w.waitEvent(t, ctx, ack+" after "+cmd["op"].(string), func(e event) bool {
		if e.str("event") == "command_failed" {
			t.Fatalf("%s worker: command %v failed: %v", w.lang, cmd, e)
		}
		return e.str("event") == ack && e[key] == cmd[key]
	})
}

// startServer runs an engine with the config.yaml text given (modules on
// free ports, embedded Redis); see enginetest.Start.
func startServer(t *testing.T, ctx context.Context, yaml string) *enginetest.Server {
	t.Helper()
	srv := enginetest.Start(t, ctx, yaml)
	return srv
}

//go:build linux

package exec_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/modules/exec"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/server"
)

const waitLimit = 20 * time.Second

// slowWaitLimit is the wait limit of harnesses running interpreted workers
// (Node, Python): their start alone can take seconds on a loaded machine.
const slowWaitLimit = 60 * time.Second

// harness is an engine (engine/server) running the exec module with one
// worker named "echo" in root/w.
type harness struct {
	t     *testing.T
	ctx   context.Context
	root  string
	dir   string
	limit time.Duration // how long each wait may take
	srv   *server.Server
	mod   *exec.Module
	logs  *capture

	mu      sync.Mutex
	pids    map[int]bool // every process seen (LogLine and ProcessChanged)
	changes []event.ProcessChanged
	lines   []event.LogLine

	stopCollect context.CancelFunc
	collected   chan struct{}
}

type opts struct {
	version string // version.txt
	extra   string // more keys of the worker entry, YAML, one per line
	run     string // default: the test worker binary
	token   string
	modules string // more entries of the modules list, YAML, one per line
	slow    bool   // interpreted worker: waits get slowWaitLimit
}

func newHarness(t *testing.T, o opts) *harness {
	t.Helper()
	return newHarnessWith(t, o, nil)
}

// newHarnessWith is newHarness with a hook to prepare the worker dir.
func newHarnessWith(t *testing.T, o opts, prep func(dir string)) *harness {
	t.Helper()
	limit, total := waitLimit, 50*time.Second
	if o.slow {
		limit, total = slowWaitLimit, 3*slowWaitLimit
	}
	ctx, cancel := context.WithTimeout(context.Background(), total)
	t.Cleanup(cancel)
	h := &harness{t: t, ctx: ctx, root: t.TempDir(), limit: limit, logs: &capture{}, pids: map[int]bool{}}
	h.dir = filepath.Join(h.root, "w")
	if err := os.Mkdir(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.version == "" {
		o.version = "v1"
	}
	h.write("version.txt", o.version)
	if prep != nil {
		prep(h.dir)
	}
	h.start(o)
	return h
}

func (h *harness) start(o opts) {
	t := h.t
	t.Helper()
	run := o.run
	if run == "" {
		run = testWorker(t)
	}
	var extra strings.Builder
	for l := range strings.SplitSeq(strings.TrimSpace(o.extra), "\n") {
		if l != "" {
			extra.WriteString("          " + strings.TrimSpace(l) + "\n")
		}
	}
	auth := ""
	if o.token != "" {
		auth = ", auth_token: " + strconv.Quote(o.token)
	}
	var mods strings.Builder
	for l := range strings.SplitSeq(strings.TrimSpace(o.modules), "\n") {
		if l != "" {
			mods.WriteString("  " + strings.TrimSpace(l) + "\n")
		}
	}
	yml := fmt.Sprintf(`engine: {host: 127.0.0.1, port: 0%s}
modules:
%s  - class: ExecModule
    config:
      workers:
        - name: echo
          dir: w
          run: %s
%s`, auth, mods.String(), strconv.Quote(run), extra.String())
	cfg, err := config.Parse(filepath.Join(h.root, "config.yaml"), []byte(yml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config:\n%s\n%v", yml, err)
	}
	h.srv, err = server.Start(h.ctx, server.Options{Config: cfg, Logger: slog.New(h.logs)})
	if err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	m, ok := h.srv.Modules().Get("exec")
	if !ok {
		t.Fatal("exec module not started")
	}
	h.mod = m.(*exec.Module)
	sub := h.srv.Engine().Events().Subscribe(1 << 14)
	cctx, stop := context.WithCancel(context.Background())
	h.stopCollect, h.collected = stop, make(chan struct{})
	// Exits when stop is called (at cleanup).
	go func() {
		defer close(h.collected)
		defer sub.Close()
		for {
			select {
			case <-cctx.Done():
				return
			case ev := <-sub.C():
				h.mu.Lock()
				switch ev := ev.(type) {
				case event.LogLine:
					h.pids[ev.PID] = true
					h.lines = append(h.lines, ev)
				case event.ProcessChanged:
					if ev.PID > 0 {
						h.pids[ev.PID] = true
					}
					h.changes = append(h.changes, ev)
				}
				h.mu.Unlock()
			}
		}
	}()
	h.t.Cleanup(h.stop)
}

// stop stops the engine and checks that no process it started is left.
func (h *harness) stop() {
	h.t.Helper()
	if h.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if st := h.mod.Status(); len(st) == 1 && st[0].PID > 0 {
		h.notePID(st[0].PID)
	}
	if err := h.srv.Stop(ctx); err != nil {
		h.t.Errorf("stop: %v", err)
	}
	h.srv = nil
	h.stopCollect()
	<-h.collected
	h.mu.Lock()
	pids := make([]int, 0, len(h.pids))
	for pid := range h.pids {
		pids = append(pids, pid)
	}
	h.mu.Unlock()
	for _, pid := range pids {
		if alive(pid) {
			h.t.Errorf("process %d still runs after Stop (%s)", pid, procInfo(pid))
		}
		if m := groupMembers(pid); len(m) > 0 {
			h.t.Errorf("process group %d still has members %v after Stop", pid, m)
		}
	}
}

func (h *harness) notePID(pid int) {
	h.mu.Lock()
	h.pids[pid] = true
	h.mu.Unlock()
}

func (h *harness) write(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) status() exec.WorkerStatus {
	st := h.mod.Status()
	if len(st) != 1 {
		h.t.Fatalf("Status() = %+v, want one worker", st)
	}
	return st[0]
}

// until polls cond every millisecond until it holds, failing the test
// after limit.
func until(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}

// waitFor polls the status until cond holds.
func (h *harness) waitFor(what string, cond func(exec.WorkerStatus) bool) exec.WorkerStatus {
	h.t.Helper()
	deadline := time.Now().Add(h.limit)
	for {
		st := h.status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) || h.ctx.Err() != nil {
			h.t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) waitRunning() exec.WorkerStatus {
	h.t.Helper()
	return h.waitFor("status running with an engine worker", func(st exec.WorkerStatus) bool {
		return st.Status == event.ProcessRunning && len(st.WorkerIDs) > 0
	})
}

// waitReloads waits for the n-th completed reload.
func (h *harness) waitReloads(n int) exec.WorkerStatus {
	h.t.Helper()
	return h.waitFor(fmt.Sprintf("reload %d", n), func(st exec.WorkerStatus) bool {
		return st.Reloads >= n && st.Status == event.ProcessRunning
	})
}

// call invokes fn in-process and decodes the result. A worker registers
// its functions one by one after it connects, so function_not_found is
// retried for a few seconds.
func (h *harness) call(fn string, in any) (map[string]any, error) {
	data, _ := json.Marshal(in)
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	var (
		res json.RawMessage
		err error
	)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		res, err = h.srv.Engine().Invoke(ctx, engine.Request{FunctionID: fn, Data: data})
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != engine.CodeFunctionNotFound || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(res, &out); err != nil {
		return nil, fmt.Errorf("result %s: %w", res, err)
	}
	return out, nil
}

func (h *harness) mustCall(fn string, in any) map[string]any {
	h.t.Helper()
	out, err := h.call(fn, in)
	if err != nil {
		h.t.Fatalf("call %s: %v", fn, err)
	}
	return out
}

func (h *harness) events() []event.ProcessChanged {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.changes)
}

func (h *harness) logLines() []event.LogLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.lines)
}

// alive reports whether pid is a live (non-zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func procInfo(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// capture is a slog handler that keeps every record's message and attrs.
type capture struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }

func (c *capture) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	c.mu.Lock()
	c.recs = append(c.recs, m)
	c.mu.Unlock()
	return nil
}

func (c *capture) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureChild{c, as}
}

func (c *capture) WithGroup(string) slog.Handler { return c }

type captureChild struct {
	root  *capture
	attrs []slog.Attr
}

func (c *captureChild) Enabled(context.Context, slog.Level) bool { return true }

func (c *captureChild) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(c.attrs...)
	return c.root.Handle(ctx, r)
}

func (c *captureChild) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureChild{c.root, append(slices.Clone(c.attrs), as...)}
}

func (c *captureChild) WithGroup(string) slog.Handler { return c }

// find returns the records whose attrs include every pair of want.
func (c *capture) find(want map[string]string) []map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]string
	for _, r := range c.recs {
		ok := true
		for k, v := range want {
			if r[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

// until is until with the harness's wait limit.
func (h *harness) until(what string, cond func() bool) {
	h.t.Helper()
	until(h.t, h.limit, what, cond)
}

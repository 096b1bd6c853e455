package compat_test

import (
	"bufio"
	"context"
	"encoding/json"
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

	"github.com/iii-workbench/iii/engine"
	evt "github.com/iii-workbench/iii/engine/event"
)

// observe with the Python iii-sdk 0.25.0 (testdata/python25/observe_worker.py):
// its own small launcher, one command per stdin line, one event per
// "P25 <json>" stdout line.

const sdk25Version = "0.25.0"

// py25 is one observe_worker.py process.
type py25 struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *syncBuffer
	cancel context.CancelFunc
	exited chan struct{}

	mu     sync.Mutex
	events []map[string]any
	notify chan struct{}
}

func startPy25(t *testing.T, url, name string) *py25 {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("testdata", "python25"))
	bin := filepath.Join(dir, ".venv", "bin", "python")
	if _, err := os.Stat(bin); err != nil {
		missing(t, "Python 0.25 venv missing: run .ci/run (or python3 -m venv engine/compat/testdata/python25/.venv && pip install -r engine/compat/testdata/python25/requirements.txt) (%v)", err)
	}
	if dist, _ := filepath.Glob(filepath.Join(dir, ".venv", "lib", "python3*", "site-packages", "iii_sdk-"+sdk25Version+".dist-info")); len(dist) == 0 {
		missing(t, "iii-sdk==%s is not installed in engine/compat/testdata/python25/.venv", sdk25Version)
	}
	pctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, bin, "-u", "observe_worker.py")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "III_URL="+url, "COMPAT_NAME="+name, "PYTHONUNBUFFERED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	p := &py25{t: t, name: name, cmd: cmd, out: &syncBuffer{}, cancel: cancel, exited: make(chan struct{}), notify: make(chan struct{}, 1)}
	cmd.Stderr = p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start python 0.25 worker: %v", err)
	}
	// Exits at EOF on stdout (the process is gone), then reaps it.
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			raw, ok := strings.CutPrefix(sc.Text(), "P25 ")
			var ev map[string]any
			if !ok || json.Unmarshal([]byte(raw), &ev) != nil {
				p.out.Write([]byte(sc.Text() + "\n"))
				continue
			}
			p.mu.Lock()
			p.events = append(p.events, ev)
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(stopGrace):
			cancel()
			<-p.exited
		}
		cancel()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("python 0.25 worker %s events %v\noutput:\n%s", name, p.events, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

func (p *py25) send(cmd map[string]any) {
	p.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("command to %s: %v", p.name, err)
	}
}

// wait returns the n-th event (1-based) that pred accepts, waiting until
// ctx is done.
func (p *py25) waitN(ctx context.Context, n int, what string, pred func(map[string]any) bool) map[string]any {
	p.t.Helper()
	for {
		p.mu.Lock()
		seen := 0
		for _, ev := range p.events {
			if pred(ev) {
				if seen++; seen == n {
					p.mu.Unlock()
					return ev
				}
			}
		}
		p.mu.Unlock()
		select {
		case <-p.notify:
		case <-p.exited:
			p.t.Fatalf("%s exited while waiting for %s", p.name, what)
		case <-ctx.Done():
			p.t.Fatalf("%s: no %s (%d of %d)", p.name, what, seen, n)
		}
	}
}

func (p *py25) wait(ctx context.Context, what string, pred func(map[string]any) bool) map[string]any {
	p.t.Helper()
	return p.waitN(ctx, 1, what, pred)
}

func (p *py25) count(pred func(map[string]any) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, ev := range p.events {
		if pred(ev) {
			n++
		}
	}
	return n
}

func is(kind string, kv ...any) func(map[string]any) bool {
	return func(ev map[string]any) bool {
		if ev["event"] != kind {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(ev[kv[i].(string)]) != fmt.Sprint(kv[i+1]) {
				return false
			}
		}
		return true
	}
}

func (p *py25) register(ctx context.Context, cmd map[string]any) {
	p.t.Helper()
	cmd["cmd"] = "register"
	p.send(cmd)
	p.wait(ctx, "registered "+cmd["id"].(string), is("registered", "id", cmd["id"]))
}

// ready observes and waits for ready() to return or raise: "" on active,
// else the code it raised.
func (p *py25) observe(ctx context.Context, ref string, source map[string]any, target string, options map[string]any) string {
	p.t.Helper()
	cmd := map[string]any{"cmd": "observe", "ref": ref, "source": source, "target": target, "timeout": 3}
	if options != nil {
		cmd["options"] = options
	}
	p.send(cmd)
	ev := p.wait(ctx, "ready of "+ref, is("ready", "ref", ref))
	if ev["ok"] == true {
		return ""
	}
	return fmt.Sprint(ev["code"])
}

func envelope(ev map[string]any) map[string]any {
	d, _ := ev["data"].(map[string]any)
	return d
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestPy25Observe drives the Python 0.25 SDK's observe against the engine:
// routed and local calls, filters, capture, max_fires, bad input, a target
// that leaves, owner delivery (emit, obs.call, args), and a loop.
func TestPy25Observe(t *testing.T) {
	ctx := testContext(t)
	te := startEngine(t)
	sub := te.eng.Events().Subscribe(4096)
	defer sub.Close()
	host := startPy25(t, te.url, "py25-host")
	obs := startPy25(t, te.url, "py25-observer")
	sink := startPy25(t, te.url, "py25-sink")
	loop := startPy25(t, te.url, "py25-loop")
	for _, p := range []*py25{host, obs, sink, loop} {
		p.wait(ctx, "ready", is("ready"))
	}
	host.register(ctx, map[string]any{"id": "h::charge", "mode": "echo"})
	host.register(ctx, map[string]any{"id": "h::topics", "owner": true,
		"args_format": map[string]any{"type": "object", "required": []string{"topic"}, "properties": map[string]any{"topic": map[string]any{"type": "string"}}}})
	obs.register(ctx, map[string]any{"id": "o::alert"})
	sink.register(ctx, map[string]any{"id": "t::sink"})

	t.Run("routed and local calls", func(t *testing.T) {
		if code := obs.observe(ctx, "a", map[string]any{"function_id": "h::charge", "filters": map[string]any{"input.amount": map[string]any{"$gte": 500}}},
			"o::alert", map[string]any{"max_fires": 2, "metadata": map[string]any{"team": "oncall"}}); code != "" {
			t.Fatalf("observe: ready raised %s", code)
		}
		for i, amount := range []int{100, 900} {
			host.send(map[string]any{"cmd": "call", "ref": fmt.Sprint("r", i), "fn": "h::charge", "payload": map[string]any{"amount": amount}, "dispatch": "remote"})
			host.wait(ctx, "result", is("result", "ref", fmt.Sprint("r", i)))
		}
		got := obs.wait(ctx, "an activation", is("invoked", "function_id", "o::alert"))
		env := envelope(got)
		caller, _ := env["caller"].(map[string]any)
		out, _ := env["output"].(map[string]any) // the echo handler returns what it got, _caller_worker_id included
		if jsonOf(env["input"]) != `{"amount":900}` || out["amount"] != float64(900) || env["function_id"] != "h::charge" ||
			caller["worker_name"] != "py25-host" || got["depth"] != float64(1) || jsonOf(got["metadata"]) != `{"team":"oncall"}` {
			t.Errorf("activation %v: want the call of 900, its output, caller py25-host, depth 1, the observer's metadata", got)
		}
		// A call the host runs in-process (local dispatch) is reported and
		// activates the observer too; the second fire disposes it.
		host.send(map[string]any{"cmd": "call", "ref": "local", "fn": "h::charge", "payload": map[string]any{"amount": 950}})
		host.wait(ctx, "local result", is("result", "ref", "local"))
		got = obs.waitN(ctx, 2, "the local call's activation", is("invoked", "function_id", "o::alert"))
		if jsonOf(envelope(got)["input"]) != `{"amount":950}` {
			t.Errorf("second activation %v, want the local call of 950", got)
		}
		ev := obs.wait(ctx, "disposal", is("state", "ref", "a", "state", "disposed"))
		if r, _ := ev["reason"].(map[string]any); r["code"] != "MAX_FIRES" {
			t.Errorf("disposal %v, want MAX_FIRES", ev)
		}
		waitEvent(t, ctx, sub, "a local invocation of h::charge", func(e evt.Event) bool {
			s, ok := e.(evt.InvocationFinished)
			return ok && s.FunctionID == "h::charge" && s.Trigger == engine.TriggerKindLocal
		})
	})

	t.Run("bad input", func(t *testing.T) {
		if code := obs.observe(ctx, "missing", map[string]any{"function_id": "nope::missing"}, "o::alert", nil); code != "TIMEOUT" {
			t.Errorf("observer of a missing function: %s, want it pending (ready times out)", code)
		}
		for ref, tc := range map[string]struct {
			src    map[string]any
			target string
			code   string
		}{
			"filter": {map[string]any{"function_id": "h::charge", "filters": map[string]any{"input.amount": 5}}, "o::alert", "INVALID_FILTER"},
			"self":   {map[string]any{"function_id": "h::charge"}, "h::charge", "SELF_TARGET"},
			"args":   {map[string]any{"function_id": "h::topics", "args": map[string]any{}}, "o::alert", "INVALID_ARGS"},
		} {
			if code := obs.observe(ctx, ref, tc.src, tc.target, nil); code != tc.code {
				t.Errorf("%s: ready raised %q, want %s", ref, code, tc.code)
			}
		}
	})

	t.Run("owner delivery", func(t *testing.T) {
		if code := obs.observe(ctx, "topic", map[string]any{"function_id": "h::topics", "args": map[string]any{"topic": "a"}}, "o::alert", nil); code != "" {
			t.Fatalf("observe of an owner function: %s", code)
		}
		host.wait(ctx, "the added hook", is("added", "function_id", "h::topics"))
		before := obs.count(is("invoked", "function_id", "o::alert"))
		host.send(map[string]any{"cmd": "emit", "fn": "h::topics", "event": map[string]any{"n": 1}})
		got := obs.waitN(ctx, before+1, "the emitted event", is("invoked", "function_id", "o::alert"))
		if jsonOf(envelope(got)["input"]) != `{"n":1}` {
			t.Errorf("emit delivered %v", got)
		}
		host.send(map[string]any{"cmd": "obscall", "ref": "oc", "fn": "h::topics", "payload": map[string]any{"p": 1}})
		res := host.wait(ctx, "obs.call's result", is("result", "ref", "oc"))
		got = obs.waitN(ctx, before+2, "the call through the observer", is("invoked", "function_id", "o::alert"))
		if jsonOf(got["data"]) != `{"p":1}` || jsonOf(res["result"]) != `{"ok":true}` {
			t.Errorf("obs.call: target got %v, host got %v", got, res)
		}
	})

	t.Run("target leaves", func(t *testing.T) {
		if code := obs.observe(ctx, "sink", map[string]any{"function_id": "h::charge"}, "t::sink", nil); code != "" {
			t.Fatalf("observe: %s", code)
		}
		sink.cancel() // killed
		ev := obs.wait(ctx, "suspension", is("state", "ref", "sink", "state", "suspended"))
		if r, _ := ev["reason"].(map[string]any); r["code"] != "TARGET_UNAVAILABLE" {
			t.Errorf("suspension %v, want TARGET_UNAVAILABLE", ev)
		}
	})

	t.Run("A observes B observes A", func(t *testing.T) {
		loop.register(ctx, map[string]any{"id": "l::a", "mode": "echo"})
		loop.register(ctx, map[string]any{"id": "l::b", "mode": "echo"})
		for ref, fns := range map[string][2]string{"ab": {"l::a", "l::b"}, "ba": {"l::b", "l::a"}} {
			if code := loop.observe(ctx, ref, map[string]any{"function_id": fns[0], "capture": []string{"input"}}, fns[1], nil); code != "" {
				t.Fatalf("observe %s: %s", ref, code)
			}
		}
		dropped := te.eng.Dropped()[engine.DropObserve]
		loop.send(map[string]any{"cmd": "call", "ref": "go", "fn": "l::a", "payload": 0, "dispatch": "remote"})
		for d := 1; d <= engine.MaxObserveDepth; d++ {
			loop.wait(ctx, fmt.Sprint("activation at depth ", d), is("invoked", "depth", d))
		}
		waitCond(t, ctx, "the loop guard", func() bool { return te.eng.Dropped()[engine.DropObserve] > dropped })
		if n := loop.count(func(ev map[string]any) bool { return ev["event"] == "invoked" && ev["depth"] != float64(0) }); n != engine.MaxObserveDepth {
			t.Errorf("%d activations, want %d (then the loop guard)", n, engine.MaxObserveDepth)
		}
	})
}

func waitEvent(t *testing.T, ctx context.Context, sub *evt.Subscription, what string, pred func(evt.Event) bool) {
	t.Helper()
	for {
		select {
		case e := <-sub.C():
			if pred(e) {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no event: %s", what)
		}
	}
}

func waitCond(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if !waitTick(ctx, 10*time.Millisecond) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// The legacy shim with the real SDK: a function registered with
// ObserveHooks(legacy_trigger_type="webhook") stands in for that trigger
// type; another worker's deprecated register_trigger of the type reaches
// its on_observer_added as an observer with legacy {trigger_type,
// config}, the host delivers with obs.call, and unregister() removes it.
func TestPy25LegacyTriggerShim(t *testing.T) {
	ctx := testContext(t)
	te := startEngine(t)
	host := startPy25(t, te.url, "py25-legacy-host")
	app := startPy25(t, te.url, "py25-legacy-app")
	for _, p := range []*py25{host, app} {
		p.wait(ctx, "ready", is("ready"))
	}
	host.register(ctx, map[string]any{"id": "hooks::webhook", "owner": true, "legacy_trigger_type": "webhook"})
	app.register(ctx, map[string]any{"id": "app::on-hook"})
	// The host's metadata (observe.v1) may reach the engine after its
	// registration: the engine holds the observer pending until the host
	// has declared and acked it, so active below means the SDK has it.

	app.send(map[string]any{"cmd": "trigger", "ref": "t1", "type": "webhook", "fn": "app::on-hook", "config": map[string]any{"url": "/x"}})
	app.wait(ctx, "register_trigger sent", is("triggered", "ref", "t1"))
	added := host.wait(ctx, "the added hook", is("added", "function_id", "hooks::webhook"))
	legacy, _ := added["legacy"].(map[string]any)
	if added["target"] != "app::on-hook" || jsonOf(added["args"]) != `{"url":"/x"}` ||
		legacy["trigger_type"] != "webhook" || jsonOf(legacy["config"]) != `{"url":"/x"}` {
		t.Errorf("observer added from register_trigger: %v", added)
	}
	for active := false; !active; { // the SDK acks it once the added hook has returned
		for _, o := range te.eng.Observers() {
			active = active || o.ID == added["id"] && o.State == "active"
		}
		if !active && !waitTick(ctx, 10*time.Millisecond) {
			t.Fatalf("the legacy observer never became active: %v", te.eng.Observers())
		}
	}
	host.send(map[string]any{"cmd": "obscall", "ref": "oc", "fn": "hooks::webhook", "payload": map[string]any{"hook": 1}})
	res := host.wait(ctx, "obs.call's result", is("result", "ref", "oc"))
	got := app.wait(ctx, "the trigger's function", is("invoked", "function_id", "app::on-hook"))
	if jsonOf(got["data"]) != `{"hook":1}` || jsonOf(res["result"]) != `{"ok":true}` {
		t.Errorf("delivery through the legacy observer: app got %v, host got %v", got, res)
	}
	app.send(map[string]any{"cmd": "untrigger", "ref": "t1"})
	if r := host.wait(ctx, "the removed hook", is("removed", "function_id", "hooks::webhook")); r["id"] != added["id"] {
		t.Errorf("removed %v, want observer %v", r, added["id"])
	}
}

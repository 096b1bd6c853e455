package compat_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// The Rust iii-sdk 0.26.0-rc.4 has no registertrigger: routes,
// subscriptions and reactions are observers of the engine's built-in
// sources. testdata/rust is a worker written as iii's Rust docs show; this
// file builds it with cargo (once per test binary) and runs it.

// rustBuildTimeout bounds the cargo build. .ci/run builds the worker
// before the tests, so here it is an up-to-date check of a few seconds; a
// cold build (about 200 crates) takes minutes.
const rustBuildTimeout = 12 * time.Minute

var rustBuild struct {
	once sync.Once
	bin  string
	err  error
	skip string
}

// rustWorkerBin builds testdata/rust and returns its binary, or skips (or,
// with CI=true, fails) the test when cargo is missing.
func rustWorkerBin(t *testing.T) string {
	t.Helper()
	rustBuild.once.Do(func() {
		cargo, err := exec.LookPath("cargo")
		if err != nil {
			rustBuild.skip = "cargo is not on PATH: install Rust (rustup) to build engine/compat/testdata/rust"
			return
		}
		dir, _ := filepath.Abs(filepath.Join("testdata", "rust"))
		target := filepath.Join(dir, "target")
		ctx, cancel := context.WithTimeout(context.Background(), rustBuildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, cargo, "build", "--locked", "--quiet")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CARGO_TARGET_DIR="+target)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			rustBuild.err = fmt.Errorf("cargo build in %s (%s): %w\n%s", dir, time.Since(start).Round(time.Second), err, out)
			return
		}
		rustBuild.bin = filepath.Join(target, "debug", "iii-compat-worker")
	})
	if rustBuild.skip != "" {
		missing(t, "%s", rustBuild.skip)
	}
	if rustBuild.err != nil {
		t.Fatal(rustBuild.err)
	}
	return rustBuild.bin
}

// sourcesWorker is a running testdata/rust worker or its Python 0.25 twin,
// testdata/python25/sources_worker.py.
type sourcesWorker struct {
	prefix string
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	lines  chan string
	out    *syncBuffer
	done   chan struct{}
}

// sourcesLangs are the workers that serve the built-in sources.
var sourcesLangs = []string{"rust", "python25"}

// sourcesCommand returns how to run the sources worker of l, skipping (or
// with CI=true failing) when its SDK is not there.
func sourcesCommand(t *testing.T, l string) (bin string, args []string) {
	t.Helper()
	if l == "rust" {
		return rustWorkerBin(t), nil
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "python25"))
	py := filepath.Join(dir, ".venv", "bin", "python")
	dist, _ := filepath.Glob(filepath.Join(dir, ".venv", "lib", "python3*", "site-packages", "iii_sdk-0.25.0.dist-info"))
	if len(dist) == 0 {
		missing(t, "iii-sdk==0.25.0 is not installed in %s/.venv: run .ci/run, or python3 -m venv there and pip install -r requirements.txt", dir)
	}
	return py, []string{"-u", filepath.Join(dir, "sources_worker.py")}
}

// startSourcesWorker runs the sources worker of l against url with env
// (KEY=value) on top of III_URL and SRC_PREFIX. Cleanup closes its stdin
// (it shuts down) and kills it if it lingers.
func startSourcesWorker(t *testing.T, l, url, prefix string, env ...string) *sourcesWorker {
	t.Helper()
	bin, args := sourcesCommand(t, l)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), append([]string{"III_URL=" + url, "SRC_PREFIX=" + prefix, "RUST_LOG=warn"}, env...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w := &sourcesWorker{prefix: prefix, cmd: cmd, stdin: stdin, lines: make(chan string, 64), out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = w.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	// Exits when the process closes its stdout.
	go func() {
		defer close(w.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(w.out, sc.Text())
			w.lines <- sc.Text()
		}
	}()
	// Exits when the process does.
	go func() {
		defer close(w.done)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("%s worker %s output:\n%s", l, prefix, w.out.String())
		}
	})
	return w
}

func (w *sourcesWorker) stop() {
	w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(stopGrace):
		w.cmd.Process.Signal(syscall.SIGKILL)
		<-w.done
	}
}

// answers reads the worker's observer lines up to all-answered: name ->
// "ready" or the rejection code.
func (w *sourcesWorker) answers(t *testing.T, ctx context.Context) map[string]string {
	t.Helper()
	got := map[string]string{}
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				t.Fatalf("worker exited before answering its observers: %v", got)
			}
			f := strings.Fields(line)
			switch {
			case line == "all-answered":
				return got
			case len(f) == 2 && f[0] == "ready":
				got[f[1]] = "ready"
			case len(f) >= 3 && f[0] == "rejected":
				got[f[1]] = f[2]
			}
		case <-ctx.Done():
			t.Fatalf("worker did not answer its observers: %v (%v)", got, ctx.Err())
		}
	}
}

// events polls <prefix>::events through the engine until pred holds for
// one of the recorded events of kind.
func (w *sourcesWorker) event(t *testing.T, ctx context.Context, eng *engine.Engine, kind string, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	var last json.RawMessage
	for {
		res, err := eng.Invoke(ctx, engine.Request{FunctionID: w.prefix + "::events", Data: json.RawMessage(`{}`)})
		if err == nil {
			last = res
			var evs []struct {
				Kind  string         `json:"kind"`
				Input map[string]any `json:"input"`
			}
			if err := json.Unmarshal(res, &evs); err != nil {
				t.Fatalf("%s::events: %v: %s", w.prefix, err, res)
			}
			for _, ev := range evs {
				if ev.Kind == kind && pred(ev.Input) {
					return ev.Input
				}
			}
		}
		if !waitTick(ctx, 50*time.Millisecond) {
			t.Fatalf("no %s event matched; the worker's events: %s (last error %v)", kind, last, err)
		}
	}
}

// startSourcesServer runs an engine with every module that brings a
// built-in source; it returns the server and the HTTP API's base URL.
func startSourcesServer(t *testing.T, ctx context.Context) (*enginetest.Server, string) {
	t.Helper()
	srv := startServer(t, ctx, `engine: {port: 0}
modules:
  - class: RestApiModule
    config: {host: 127.0.0.1, port: 0, default_timeout: 5000}
  - class: PubSubModule
  - class: StateModule
  - class: CronModule
  - class: QueueModule
`)
	return srv, httpBase(t, srv)
}

// TestBuiltinSourcesThroughObserve: a Rust 0.26 worker and a Python 0.25
// worker each serve an HTTP route, a pub/sub topic, a state reaction, a
// cron schedule and a queue consumer, all through observe; a route without
// a path is refused with INVALID_ARGS and the same route for another
// function with HTTP_ROUTE_CONFLICT; 0.22 registertrigger bindings work
// beside them (the Python one's own, and the engine's), and one on an
// observer's route is a conflict; a worker's route goes with it.
func TestBuiltinSourcesThroughObserve(t *testing.T) {
	t.Parallel()
	for _, l := range sourcesLangs {
		sourcesCommand(t, l)
	}
	ctx := testContext(t)
	srv, base := startSourcesServer(t, ctx)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	for _, l := range sourcesLangs {
		t.Run(l, func(t *testing.T) { testSources(t, ctx, srv, base, client, l) })
	}
}

func testSources(t *testing.T, ctx context.Context, srv *enginetest.Server, base string, client *http.Client, l string) {
	eng := srv.Engine()
	prefix := l[:2] + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	topic, scope, queueTopic := prefix+"-topic", prefix+"-scope", prefix+"-jobs"
	w := startSourcesWorker(t, l, srv.URL(), prefix, "SRC_ROUTE=/"+prefix+"/hello/:name", "SRC_TOPIC="+topic,
		"SRC_SCOPE="+scope, "SRC_CRON=* * * * * *", "SRC_QUEUE="+queueTopic, "SRC_LEGACY_ROUTE=/"+prefix+"/legacy")

	got := w.answers(t, ctx)
	want := map[string]string{"route": "ready", "topic": "ready", "state": "ready", "cron": "ready", "queue": "ready",
		"bad-route": "INVALID_ARGS", "taken-route": "HTTP_ROUTE_CONFLICT"}
	for name, state := range want {
		if got[name] != state {
			t.Errorf("observer %s: %q, want %q (all: %v)", name, got[name], state, got)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("http", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/"+prefix+"/hello/you?lang="+l, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Message string            `json:"message"`
			Query   map[string]string `json:"query"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 201 || resp.Header.Get("x-worker") == "" || body.Message != "hello you" || body.Query["lang"] != l {
			t.Errorf("GET: %d x-worker=%q %+v, want 201, the worker's header, {hello you, lang=%s}",
				resp.StatusCode, resp.Header.Get("x-worker"), body, l)
		}
	})
	t.Run("publish", func(t *testing.T) {
		for _, tp := range []string{prefix + "-other", topic} {
			if _, err := eng.Invoke(ctx, engine.Request{FunctionID: "publish",
				Data: json.RawMessage(fmt.Sprintf(`{"topic":%q,"data":{"n":1}}`, tp))}); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
		ev := w.event(t, ctx, eng, "publish", func(in map[string]any) bool { return in["topic"] == topic })
		if d, _ := ev["data"].(map[string]any); d["n"] != float64(1) {
			t.Errorf("publish delivered %v, want {topic, data: {n: 1}}", ev)
		}
		w.event(t, ctx, eng, "publish", func(in map[string]any) bool {
			if in["topic"] != topic {
				t.Errorf("the topic filter let %v through", in)
			}
			return true
		})
	})
	t.Run("state", func(t *testing.T) {
		if _, err := eng.Invoke(ctx, engine.Request{FunctionID: "state::set",
			Data: json.RawMessage(fmt.Sprintf(`{"scope":%q,"key":"k","value":{"v":2}}`, scope))}); err != nil {
			t.Fatalf("state::set: %v", err)
		}
		ev := w.event(t, ctx, eng, "state", func(in map[string]any) bool { return in["key"] == "k" })
		if ev["event_type"] != "state:created" || ev["scope"] != scope {
			t.Errorf("state event %v, want state:created in %s", ev, scope)
		}
	})
	t.Run("cron", func(t *testing.T) {
		ev := w.event(t, ctx, eng, "cron", func(map[string]any) bool { return true })
		// The default delivery is the envelope: the tick is its input.
		in, _ := ev["input"].(map[string]any)
		if ev["function_id"] != "cron::on-tick" || in["expression"] != "* * * * * *" {
			t.Errorf("cron activation %v, want an envelope of cron::on-tick with the expression", ev)
		}
	})
	t.Run("queue", func(t *testing.T) {
		if _, err := eng.Invoke(ctx, engine.Request{FunctionID: "iii::durable::publish",
			Data: json.RawMessage(fmt.Sprintf(`{"topic":%q,"data":{"job":7}}`, queueTopic))}); err != nil {
			t.Fatalf("durable publish: %v", err)
		}
		w.event(t, ctx, eng, "queue", func(in map[string]any) bool { return in["job"] == float64(7) })
		// The message went through the SDK's observer: one of its fires.
		for _, o := range eng.Observers() {
			if o.FunctionID == "queue::on-message" && o.Fires != 1 {
				t.Errorf("queue observer %s: fires %d after one message, want 1", o.ID, o.Fires)
			}
		}
	})
	t.Run("registertrigger alongside", func(t *testing.T) {
		if l == "python25" {
			// Its own deprecated register_trigger route serves too.
			for {
				code, body := httpDo(t, ctx, client, "POST", base+"/"+prefix+"/legacy", `{"a":1}`, nil)
				if code == 200 && strings.Contains(string(body), `"echo"`) {
					break
				}
				if !waitTick(ctx, 50*time.Millisecond) {
					t.Fatalf("POST legacy route: %d %s", code, body)
				}
			}
		}
		id, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: "http", FunctionID: prefix + "::echo",
			Config: json.RawMessage(fmt.Sprintf(`{"api_path":"/%s/echo","http_method":"POST"}`, prefix))})
		if err != nil {
			t.Fatalf("registertrigger: %v", err)
		}
		defer eng.UnregisterTrigger(id)
		code, body := httpDo(t, ctx, client, "POST", base+"/"+prefix+"/echo", `{"a":1}`, nil)
		if code != 200 || !strings.Contains(string(body), `"echo"`) {
			t.Errorf("POST echo: %d %s", code, body)
		}
		if _, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: "http", FunctionID: prefix + "::echo",
			Config: json.RawMessage(fmt.Sprintf(`{"api_path":"/%s/hello/:who"}`, prefix))}); err == nil ||
			!strings.Contains(err.Error(), "conflicts") {
			t.Errorf("registertrigger on the observer's route: %v, want a conflict", err)
		}
	})
	t.Run("observer views", func(t *testing.T) {
		// The route observer is listed with the trigger it stands for.
		var route *engine.ObserverInfo
		for _, oi := range eng.Observers() {
			if oi.FunctionID == "http::on-request" && oi.Target == prefix+"::hello" && oi.State == "active" {
				route = &oi
			}
		}
		if route == nil {
			t.Fatalf("no active observer of http::on-request targeting %s::hello: %+v", prefix, eng.Observers())
		}
		var cfg struct {
			APIPath    string `json:"api_path"`
			HTTPMethod string `json:"http_method"`
		}
		if route.Legacy == nil || route.Legacy.TriggerType != "http" || json.Unmarshal(route.Legacy.Config, &cfg) != nil ||
			cfg.APIPath != "/"+prefix+"/hello/:name" || cfg.HTTPMethod != "GET" || !route.Engine {
			t.Errorf("route observer %+v (legacy %+v), want an engine source with legacy http {api_path, GET}", route, route.Legacy)
		}
	})
	t.Run("sources listed", func(t *testing.T) {
		res, err := eng.Invoke(ctx, engine.Request{FunctionID: "engine::functions::list", Data: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		for _, fn := range []string{"http::on-request", "cron::on-tick", "state::on-changed", "queue::on-message", "publish"} {
			if !strings.Contains(string(res), `"`+fn+`"`) {
				t.Errorf("engine::functions::list lacks %s", fn)
			}
		}
	})

	// The worker leaves: its observers go, and its route with them.
	w.stop()
	for {
		code, _ := httpDo(t, ctx, client, "GET", base+"/"+prefix+"/hello/you", "", nil)
		if code == 404 {
			break
		}
		if !waitTick(ctx, 50*time.Millisecond) {
			t.Fatalf("GET after the worker left: %d, want 404", code)
		}
	}
}

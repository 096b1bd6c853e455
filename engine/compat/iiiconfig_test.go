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
	"syscall"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	httpapi "github.com/iii-workbench/iii/engine/modules/http"
	"github.com/iii-workbench/iii/engine/modules/stream"
)

// iiiConfig is a config.yaml as iii v0.22 writes it (workers on free
// ports), with keys we read but do not implement.
const iiiConfig = `workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: ${III_TEST_WM_PORT:0}
  - name: iii-http
    config:
      host: 127.0.0.1
      port: 0
      default_timeout: 5000
      cors:
        allowed_origins: ['*']
        allowed_methods: [GET, POST]
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: in_memory}}
  - name: iii-stream
    config:
      host: 127.0.0.1
      port: 0
      adapter:
        name: kv
        config: {store_method: in_memory, save_interval_ms: 5000}
  - name: iii-pubsub
    config: {adapter: {name: local}}
  - name: iii-cron
    config: {adapter: {name: kv}}
  - name: iii-observability
    config:
      enabled: true
      service_name: ${OTEL_SERVICE_NAME:iii}
      logs_console_output: true
      metrics_retention_seconds: 3600
`

// startScript runs a script of testdata/<lang> (not the command-driven
// compat worker) connected to url, with the same process handling as
// startWorker.
func startScript(t *testing.T, l lang, url, script string) *workerProc {
	t.Helper()
	bin, args, dir := command(t, l)
	args = append(args[:len(args)-1:len(args)-1], script) // the interpreter's flags, then the script
	pctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, bin, args...)
	cmd.Dir = dir
	w := &workerProc{lang: l, name: script, prefix: "app", cmd: cmd, cancel: cancel, output: &syncBuffer{},
		exited: make(chan struct{}), notify: make(chan struct{}, 1)}
	cmd.Env = append(os.Environ(), "III_URL="+url, "PYTHONUNBUFFERED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	cmd.Stderr = w.output
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", script, err)
	}
	// Exits at EOF on stdout, when the process group is gone; then reaps it.
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
			t.Logf("%s (exit: %v) output:\n%s", script, w.waitErr, w.output.String())
		}
	})
	return w
}

// TestIIIConfigApp: an engine started from an iii-format config.yaml (as
// `iii start --config` loads it) runs an app written for iii v0.22
// unchanged, in Node (iiiapp.mjs) and Python (iiiapp.py): an HTTP route
// counting visits in state, a custom stream backend registered with
// createStream / create_stream, missing items that are undefined in the
// Node SDK (None in Python), and iii's wording for a conflicting route.
// Every not-implemented key is warned about once.
func TestIIIConfigApp(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	for _, l := range langs {
		t.Run(string(l), func(t *testing.T) {
			t.Parallel()
			script := map[lang]string{node: "iiiapp.mjs", python: "iiiapp.py"}[l]
			testIIIConfigApp(t, l, script)
		})
	}
}

func testIIIConfigApp(t *testing.T, l lang, script string) {
	ctx := testContext(t)

	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(iiiConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	if cfg.Format != config.FormatIII || cfg.Redis.Store != config.StoreMemory {
		t.Fatalf("config %s: format %q, store %q; want iii, memory", path, cfg.Format, cfg.Redis.Store)
	}
	srv := enginetest.StartConfig(t, ctx, cfg)
	logs := srv.Logs
	for _, key := range []string{"workers[3].config.adapter.config.save_interval_ms",
		"workers[6].config.logs_console_output", "workers[6].config.metrics_retention_seconds"} {
		if n := strings.Count(logs.String(), "key="+key+"\n"); n != 1 {
			t.Errorf("warning for %s logged %d times, want once:\n%s", key, n, logs.String())
		}
	}
	hm, ok := srv.Modules().Get("http")
	sm, ok2 := srv.Modules().Get("stream")
	if !ok || !ok2 {
		t.Fatalf("modules running: %v; want http and stream among them", srv.Modules().IDs())
	}
	base := "http://" + hm.(*httpapi.Module).Addr()

	w := startScript(t, l, srv.URL(), script)
	missing := w.waitEvent(t, ctx, "missing event", func(e event) bool { return e.str("event") == "missing" })
	for _, k := range []string{"state", "stream", "custom"} {
		if missing.str(k) != "undefined" {
			t.Errorf("%s get of a missing item: the %s SDK sees %s, want undefined (None)", k, l, missing.str(k))
		}
	}
	w.ready(t, ctx)

	// The HTTP route and state.
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	for i, want := range []string{`{"first":true,"hello":"ann","visits":1}`, `{"first":false,"hello":"ann","visits":2}`} {
		status, body := httpDo(t, ctx, client, "GET", base+"/hello/ann", "", nil)
		if status != 200 {
			t.Fatalf("GET /hello/ann #%d: %d %s", i+1, status, body)
		}
		assertJSON(t, fmt.Sprintf("GET /hello/ann #%d", i+1), json.RawMessage(body), json.RawMessage(want))
	}
	if out := w.output.String(); !strings.Contains(out, "conflicts with already-registered route 'GET /hello/:name'") {
		t.Errorf("the SDK did not log iii's route-conflict wording; its output:\n%s", out)
	}

	// The custom stream backend serves stream "custom": calls reach it, and
	// subscribers see the changes.
	c := dialStream(t, ctx, sm.(*stream.Module).URL())
	c.join(ctx, "sub-1", "custom", "room")
	c.expect(ctx, "custom", "room", nil, map[string]any{"type": "sync", "data": []any{}})
	eng := srv.Engine()
	call := func(fn string, in any) json.RawMessage {
		t.Helper()
		b, _ := json.Marshal(in)
		res, err := eng.Invoke(ctx, engine.Request{FunctionID: fn, Data: b})
		if err != nil {
			t.Fatalf("%s %s: %v", fn, b, err)
		}
		return res
	}
	item := map[string]any{"stream_name": "custom", "group_id": "room", "item_id": "i1"}
	with := func(k string, v any) map[string]any {
		m := map[string]any{k: v}
		for k, v := range item {
			m[k] = v
		}
		return m
	}
	assertJSON(t, "stream::set custom", call("stream::set", with("data", map[string]any{"n": 1})),
		map[string]any{"old_value": nil, "new_value": map[string]any{"n": 1}})
	w.waitEvent(t, ctx, "backend set", func(e event) bool {
		in := e.obj("input")
		return e.str("event") == "backend" && e.str("op") == "set" && in["item_id"] == "i1" && in["stream_name"] == "custom"
	})
	c.expect(ctx, "custom", "room", "i1", map[string]any{"type": "create", "data": map[string]any{"n": 1}})
	assertJSON(t, "stream::get custom", call("stream::get", item), map[string]any{"n": 1})
	assertJSON(t, "stream::list custom", call("stream::list", map[string]any{"stream_name": "custom", "group_id": "room"}), []any{map[string]any{"n": 1}})
	assertJSON(t, "stream::list_groups custom", call("stream::list_groups", map[string]any{"stream_name": "custom"}), []any{"room"})
	assertJSON(t, "stream::delete custom", call("stream::delete", item), map[string]any{"old_value": map[string]any{"n": 1}})
	c.expect(ctx, "custom", "room", "i1", map[string]any{"type": "delete", "data": map[string]any{"n": 1}})
	w.waitEvent(t, ctx, "backend delete", func(e event) bool { return e.str("event") == "backend" && e.str("op") == "delete" })
	// The engine's own store never saw stream "custom".
	assertJSON(t, "stream::list_all", call("stream::list_all", map[string]any{}), map[string]any{"stream": []any{}, "count": 0})
}

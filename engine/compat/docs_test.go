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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// iii's current docs (docs/next of the iii repository: creating-workers,
// using-iii, understanding-iii) and the READMEs of iii-sdk 0.25 (PyPI) and
// 0.26.0-rc.4 (crates.io), acted out: the config.yaml forms they show load,
// and their Python and Rust examples (testdata/python25/docs_worker.py,
// testdata/rust/src/bin/docs.rs) run unchanged, or changed only where the
// SDK itself differs from its docs.

// TestDocsConfigForms: every config.yaml form the docs show loads as
// `iii start --config` loads it, and what this engine does not implement
// is warned about, not refused.
func TestDocsConfigForms(t *testing.T) {
	t.Parallel()
	forms := []struct {
		name, yaml string
		warn       []string // keys warned about
	}{
		{"using-iii/engine: configuration file structure", `workers:
  - name: http
    config:
      port: 3111
      host: 127.0.0.1
  - name: state
    config:
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/state_store.db
`, nil},
		{"using-iii/engine: environment variable expansion", `workers:
  - name: http
    config:
      port: ${HTTP_PORT:3111}
      host: ${HTTP_HOST:127.0.0.1}
`, nil},
		{"using-iii/configuration and upgrading/from-0-22-x: registration grace", `registration_namespace_grace_ms: 10000
workers:
  - name: http
`, []string{"registration_namespace_grace_ms"}},
		{"the grace setting alone", "registration_namespace_grace_ms: 10000\n", []string{"registration_namespace_grace_ms"}},
		{"using-iii/configuration: where configuration is stored", `workers:
  - name: configuration
    config:
      adapter:
        name: fs
        config:
          directory: ./config
`, []string{"workers[0].config"}},
		{"upgrading/from-0-21-x: renamed workers", `workers:
  - name: http
  - name: queue
`, nil},
		{"creating-workers/queues: creating a queue", `workers:
  - name: queue
    config:
      queue_configs:
        email-jobs:
          max_retries: 3
          concurrency: 10
          type: standard
`, nil},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(f.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatalf("config.Load refuses the docs' form:\n%s\n%v", f.yaml, err)
			}
			if cfg.Format != config.FormatIII {
				t.Errorf("format %q, want iii", cfg.Format)
			}
			var warned []string
			for _, w := range cfg.Warnings {
				warned = append(warned, w.Key)
			}
			for _, k := range f.warn {
				if !slices.Contains(warned, k) {
					t.Errorf("no warning for %s (warnings: %v)", k, cfg.Warnings)
				}
			}
		})
	}
	t.Run("a bad grace is refused with its key", func(t *testing.T) {
		for _, v := range []string{"-1", "soon"} {
			_, err := config.Parse("config.yaml", []byte("registration_namespace_grace_ms: "+v+"\nworkers:\n  - name: http\n"), os.LookupEnv)
			if err == nil || !strings.Contains(err.Error(), "config.yaml:1: registration_namespace_grace_ms") {
				t.Errorf("grace %s: %v, want an error naming the line and key", v, err)
			}
		}
	})
}

// docsConfig is a config.yaml in the docs' style: the workers they use,
// on free ports, data in memory.
const docsConfig = `workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
  - name: http
    config:
      port: 0
      host: 127.0.0.1
  - name: state
    config:
      adapter:
        name: kv
        config:
          store_method: in_memory
  - name: queue
    config:
      queue_configs:
        email-jobs:
          max_retries: 3
          concurrency: 10
          type: standard
  - name: pubsub
  - name: iii-stream
    config:
      host: 127.0.0.1
      port: 0
      adapter:
        name: kv
        config:
          store_method: in_memory
`

// startDocsServer starts docsConfig (plus extra workers: entries) as
// `iii start --config` would, and returns it with its HTTP base URL.
func startDocsServer(t *testing.T, ctx context.Context, extra string) (*enginetest.Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(docsConfig+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	srv := enginetest.StartConfig(t, ctx, cfg)
	return srv, httpBase(t, srv)
}

// TestDocsPython25 runs the docs' Python examples (docs_worker.py) on
// iii-sdk 0.25: an HTTP endpoint, bindings with metadata, one function
// under two triggers, conditions on http and cron triggers, unregistering,
// a queue and durable topics, state and stream reactions with conditions,
// function schemas and metadata, invoking
// (void, enqueue, async, per-invocation metadata, namespaces), a trigger
// type of one's own and channels; all of it from workers in namespace
// orders, as the docs write them. Then the 0.25 README's observe example,
// and a route served as an observer, from a worker in orders.
func TestDocsPython25(t *testing.T) {
	t.Parallel()
	command(t, python25)
	ctx := testContext(t)
	srv, base := startDocsServer(t, ctx, "  - name: cron\n")
	w := startScript(t, python25, srv.URL(), "docs_worker.py")
	w.ready(t, ctx)

	outcomes := map[string]event{}
	w.mu.Lock()
	for _, ev := range w.events {
		if ev.str("event") == "outcome" {
			outcomes[ev.str("example")] = ev
		}
	}
	w.mu.Unlock()
	result := func(example string) any {
		t.Helper()
		ev, ok := outcomes[example]
		if !ok || ev.str("code") != "" {
			t.Errorf("%s: %v, want a result", example, ev)
			return nil
		}
		return ev["result"]
	}
	resultJSON := func(example string, want string) {
		t.Helper()
		if got := result(example); got != nil || want == "null" {
			assertJSON(t, example, got, json.RawMessage(want))
		}
	}
	resultJSON("trigger", `{"c":5}`)
	resultJSON("trigger in namespace orders", `{"c":5}`)
	if ev := outcomes["trigger naming default"]; ev.str("code") != "function_not_found" || !strings.Contains(ev.str("message"), "orders") {
		t.Errorf("math::add named in default: %v, want function_not_found naming orders", ev)
	}
	resultJSON("void", `null`)
	resultJSON("per-invocation metadata", `{"ok":true,"metadata":{"who":"docs"}}`)
	resultJSON("trigger_async", `{"c":8}`)
	resultJSON("enqueue", `true`)
	resultJSON("durable publish", `null`)
	resultJSON("fifo publish", `null`)
	resultJSON("workers info", `"orders"`)
	resultJSON("function metadata", `{"owner":"math-team","public":true}`)
	resultJSON("unregister function", `"function_not_found"`)
	resultJSON("trigger type", `{"bindings":[["orders::list",{"api_path":"/orders","http_method":"GET"},{"team":"platform"}]],
		"results":[{"orders":[]}],"after_unregister":0}`)
	resultJSON("channels", `{"processed":{"bytes":13},"generated":"hello world"}`)

	// The enqueued and the published messages reach email::send, the fifo
	// one email::ordered.
	w.waitEvents(t, ctx, 2, "two deliveries to email::send", func(e event) bool {
		return e.str("event") == "invoked" && e.str("function_id") == "email::send"
	})
	w.invoked(t, ctx, "email::ordered", func(d map[string]any) bool { return d["n"] == float64(1) })

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	jsonHdr := map[string]string{"Content-Type": "application/json"}
	t.Run("http endpoint", func(t *testing.T) {
		status, body := httpDo(t, ctx, client, "POST", base+"/math/add", `{"a":2,"b":3}`, jsonHdr)
		if status != 200 || strings.TrimSpace(string(body)) != `{"c":5}` {
			t.Errorf("POST /math/add: %d %s, want 200 {\"c\":5}", status, body)
		}
	})
	t.Run("two triggers, one function", func(t *testing.T) {
		status, body := httpDo(t, ctx, client, "POST", base+"/reports/generate", `{}`, jsonHdr)
		if status != 202 {
			t.Errorf("POST /reports/generate: %d %s, want 202", status, body)
		}
		res, err := srv.Engine().Invoke(ctx, engine.Request{FunctionID: "engine::registered-triggers::list",
			Data: json.RawMessage(`{"function_id":"reports::generate"}`)})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Triggers []struct {
				ID   string `json:"id"`
				Type string `json:"trigger_type"`
			} `json:"registered_triggers"`
		}
		if err := json.Unmarshal(res, &got); err != nil {
			t.Fatal(err)
		}
		types := []string{}
		for _, tr := range got.Triggers {
			types = append(types, tr.Type)
			if tr.Type != "http" {
				continue
			}
			// The docs say discovery sees a binding's metadata; iii (and
			// this engine) show it in the binding's info, not the list.
			info, err := srv.Engine().Invoke(ctx, engine.Request{FunctionID: "engine::registered-triggers::info",
				Data: json.RawMessage(fmt.Sprintf(`{"id":%q}`, tr.ID))})
			var detail struct {
				Metadata map[string]any `json:"metadata"`
			}
			if err != nil || json.Unmarshal(info, &detail) != nil || detail.Metadata["team"] != "platform" || detail.Metadata["env"] != "staging" {
				t.Errorf("the http binding's info: %s (%v), want its metadata", info, err)
			}
		}
		slices.Sort(types)
		if !slices.Equal(types, []string{"cron", "http"}) {
			t.Errorf("bindings of reports::generate: %s, want a cron and an http one", res)
		}
	})
	t.Run("condition in the trigger's namespace", func(t *testing.T) {
		// orders::is-priority is in orders, where the worker bound the route.
		status, body := httpDo(t, ctx, client, "POST", base+"/orders/expedite", `{"customer_tier":"gold"}`, jsonHdr)
		if status != 200 || !strings.Contains(string(body), `"expedited":true`) {
			t.Errorf("POST /orders/expedite (gold): %d %s, want 200 from orders::expedite", status, body)
		}
		status, body = httpDo(t, ctx, client, "POST", base+"/orders/expedite", `{"customer_tier":"silver"}`, jsonHdr)
		if status != 422 || !strings.Contains(string(body), "CONDITION_NOT_MET") {
			t.Errorf("POST /orders/expedite (silver): %d %s, want 422 CONDITION_NOT_MET", status, body)
		}
		// The cron trigger's condition, in orders too, lets the tick through.
		w.invoked(t, ctx, "orders::every-second-ok", nil)
		w.invoked(t, ctx, "orders::tick", nil)
	})
	t.Run("state and stream reactions, conditions in the namespace", func(t *testing.T) {
		resultJSON("state set", `{"items":1}`)
		resultJSON("stream set", `{"status":"online"}`)
		w.invoked(t, ctx, "orders::cart-ok", nil)
		w.invoked(t, ctx, "orders::on-cart", func(d map[string]any) bool { return d["key"] == "c1" })
		w.invoked(t, ctx, "orders::user-ok", nil)
		w.invoked(t, ctx, "orders::on-user", func(d map[string]any) bool { return d["id"] == "user-1" || d["item_id"] == "user-1" })
	})
	t.Run("observers in the worker's namespace", func(t *testing.T) {
		// The README's observer, in orders: the large orders reach
		// alerts::big-order (in orders), called in-process and remotely.
		resultJSON("create order", `{"status_code":201,"body":{"id":"123","item":"widget"}}`)
		got := w.waitEvents(t, ctx, 2, "two big orders", func(e event) bool {
			return e.str("event") == "invoked" && e.str("function_id") == "alerts::big-order"
		})
		totals := []float64{}
		for _, ev := range got {
			body, _ := ev.obj("data")["body"].(map[string]any)
			totals = append(totals, body["total"].(float64))
		}
		slices.Sort(totals)
		if !slices.Equal(totals, []float64{900, 901}) {
			t.Errorf("alerts::big-order got totals %v, want 900 and 901", totals)
		}
		// A route observer with its target and condition in orders.
		status, body := httpDo(t, ctx, client, "POST", base+"/obs/gated", `{"ok":true}`, jsonHdr)
		if status != 200 || !strings.Contains(string(body), `"handled":true`) {
			t.Errorf("POST /obs/gated (ok): %d %s, want 200 from orders::gated", status, body)
		}
		status, body = httpDo(t, ctx, client, "POST", base+"/obs/gated", `{"ok":false}`, jsonHdr)
		if status != 422 || !strings.Contains(string(body), "CONDITION_NOT_MET") {
			t.Errorf("POST /obs/gated (not ok): %d %s, want 422 CONDITION_NOT_MET", status, body)
		}
	})
	t.Run("unregistered trigger", func(t *testing.T) {
		for {
			status, _ := httpDo(t, ctx, client, "POST", base+"/math/gone", `{"a":1,"b":1}`, jsonHdr)
			if status == 404 {
				break
			}
			if !waitTick(ctx, 50*time.Millisecond) {
				t.Fatalf("POST /math/gone after its trigger was unregistered: %d, want 404", status)
			}
		}
	})
}

// TestDocsRustReadme runs the examples of the iii-sdk 0.26.0-rc.4 README
// (testdata/rust/src/bin/docs.rs): hello world with its route, calls
// (void, enqueue), observing a function and its failures, a stable
// observer id reused after dispose, the engine's own sources, streams,
// hosting an observable function (added hook, match by keys, args_format,
// private) and an observer's own initial state (for_observer).
func TestDocsRustReadme(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(filepath.Dir(rustWorkerBin(t)), "docs")
	ctx := testContext(t)
	// No cron worker: the README's hosting example registers cron::on-tick.
	srv, base := startDocsServer(t, ctx, "")

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "III_URL="+srv.URL(), "RUST_LOG=warn")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	steps := make(chan map[string]any, 16)
	// Exits when the process closes its stdout.
	go func() {
		defer close(steps)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			fmt.Fprintln(out, sc.Text())
			raw, ok := strings.CutPrefix(sc.Text(), "DOCS ")
			if !ok {
				continue
			}
			var step map[string]any
			if json.Unmarshal([]byte(raw), &step) == nil {
				steps <- step
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() // exits when the process does
		select {
		case <-done:
		case <-time.After(stopGrace):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("docs worker output:\n%s", out.String())
		}
	})

	got := map[string]map[string]any{}
	for len(got) == 0 || got["done"] == nil {
		select {
		case step, ok := <-steps:
			if !ok {
				t.Fatalf("the docs worker exited after %d steps", len(got))
			}
			got[step["step"].(string)] = step
		case <-ctx.Done():
			t.Fatalf("docs worker: %d steps seen: %v", len(got), ctx.Err())
		}
	}
	check := func(step, want string) {
		t.Helper()
		s := got[step]
		delete(s, "step")
		assertJSON(t, step, s, json.RawMessage(want))
	}
	// Only the parts that do not vary (ids, times) are compared.
	pick := func(step string, keys ...string) {
		for _, k := range keys {
			if m, ok := got[step][k].(map[string]any); ok {
				got[step][k] = subset(m, "input", "output", "error", "function_id", "status", "kind")
			}
		}
	}
	check("hello", `{"route_ready":true,"call":{"ok":true,"result":{"message":"Hello, world!"}}}`)
	if p, _ := got["calls"]["process"].(map[string]any); p != nil {
		delete(p, "_caller_worker_id")
	}
	pick("calls", "reindex")
	if e, _ := got["calls"]["enqueue"].(map[string]any); e != nil {
		if r, _ := e["result"].(map[string]any); r != nil && r["messageReceiptId"] != nil {
			r["messageReceiptId"] = "id"
		}
	}
	check("calls", `{"create":{"ok":true,"result":{"status_code":201,"body":{"id":"123","item":"widget"}}},
		"void":{"ok":true,"result":null},"track":{"event":"page_view"},
		"enqueue":{"ok":true,"result":{"messageReceiptId":"id"}},"process":{"order_id":"456"},
		"reindex_ready":true,"reindex":{"function_id":"orders::create","status":"success",
			"input":{"body":{"item":"widget"}},"output":{"status_code":201,"body":{"id":"123","item":"widget"}}}}`)
	pick("observe-errors", "alert")
	check("observe-errors", `{"ready":true,"small":{"ok":true,"result":{"charged":20}},
		"big":{"ok":false,"error":"remote error (invocation_failed): handler error: card declined"},
		"alert":{"function_id":"payments::charge","status":"error","input":{"amount":700},
			"error":{"code":"invocation_failed","message":"handler error: card declined"}}}`)
	check("stable-id", `{"first_ready":true,"disposed":true,"again_ready":null,"again_state":"Active",
		"publish":{"ok":true,"result":null},"consumed":{"order":1}}`)
	if ev, _ := got["engine-sources"]["event"].(map[string]any); ev["function_id"] != "engine::on-functions-changed" ||
		!strings.Contains(fmt.Sprint(ev["input"]), "late::fn") || got["engine-sources"]["ready"] != nil {
		t.Errorf("engine-sources: %v, want an engine::on-functions-changed event listing late::fn", got["engine-sources"])
	}
	check("streams", `{"set":{"ok":true,"result":{"old_value":null,"new_value":{"status":"online"}}},
		"update":{"ok":true,"result":{"old_value":null,"new_value":{"status":"processing","total":100}}}}`)
	pick("hosting", "delivered")
	if h := got["hosting"]; !strings.Contains(fmt.Sprint(h["unknown_arg"]), "INVALID_ARGS") {
		t.Errorf("hosting: an unknown arg gave %v, want INVALID_ARGS", h["unknown_arg"])
	} else {
		delete(h, "unknown_arg")
	}
	check("hosting", `{"ready":null,"bad":"remote error (INVALID_CRON_EXPRESSION): * * *","started":["0 0 9 * * * *"],
		"observed":true,"observed_other":false,"tick":{"ok":true,"result":{"expression":"0 0 9 * * * *"}},
		"delivered":{"function_id":"cron::on-tick","status":"success","input":{"expression":"0 0 9 * * * *"},
			"output":{"expression":"0 0 9 * * * *"}}}`)
	pick("for-observer", "s1", "s2")
	check("for-observer", `{"ready":[null,null],"s1_count":1,
		"s1":{"function_id":"tmux::on-changed","status":"success","input":{"session":"s1","initial":true},"output":{"session":"s1","initial":true}},
		"s2":{"function_id":"tmux::on-changed","status":"success","input":{"session":"s2","initial":true},"output":{"session":"s2","initial":true}}}`)

	// The hello world route serves POST /greet.
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	status, body := httpDo(t, ctx, client, "POST", base+"/greet", `{"name":"x"}`, map[string]string{"Content-Type": "application/json"})
	if status != 200 || !strings.Contains(string(body), "Hello, world!") {
		t.Errorf("POST /greet: %d %s, want 200 with hello::greet's message", status, body)
	}
}

// subset is m with only keys.
func subset(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
	_ "github.com/iii-workbench/iii/engine/modules/queue" // QueueModule, for --enqueue
	"github.com/iii-workbench/iii/sdk"
)

// startEngine starts a bare engine (no modules) on a free port; cfgText,
// when not empty, is its config.yaml.
func startEngine(t *testing.T, cfgText string) *devserver.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts devserver.Options
	if cfgText != "" {
		cfg, err := config.Parse("test.yaml", []byte(cfgText), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		opts.Config = cfg
	}
	srv, err := devserver.Start(ctx, opts)
	if err != nil {
		t.Fatalf("devserver.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("devserver Stop: %v", err)
		}
	})
	return srv
}

// connectWorker connects a Go SDK worker named name and closes it at
// cleanup (before the engine stops: cleanups run last-in first-out).
func connectWorker(t *testing.T, url, name string, opts ...sdk.Option) *sdk.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := sdk.Connect(ctx, url, append([]sdk.Option{sdk.WithName(name)}, opts...)...)
	if err != nil {
		t.Fatalf("sdk.Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("worker Close: %v", err)
		}
	})
	return w
}

// withoutCaller drops the "_caller_worker_id" the engine adds to object
// payloads.
func withoutCaller(in json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(in, &m) != nil || m == nil {
		return in
	}
	delete(m, "_caller_worker_id")
	out, _ := json.Marshal(m)
	return out
}

// testFunctions is a worker serving the functions the invoke tests call.
type testFunctions struct {
	recorded chan json.RawMessage // test::record's inputs
	release  chan struct{}        // ends test::slow
}

func serveTestFunctions(t *testing.T, w *sdk.Worker) *testFunctions {
	t.Helper()
	tf := &testFunctions{recorded: make(chan json.RawMessage, 8), release: make(chan struct{})}
	// Registered after the worker, so it runs before the worker's Close.
	t.Cleanup(func() { close(tf.release) })
	fns := map[string]sdk.Handler{
		"test::echo": func(_ context.Context, in json.RawMessage) (any, error) {
			return withoutCaller(in), nil
		},
		"test::nothing": func(context.Context, json.RawMessage) (any, error) { return nil, nil },
		"test::fail": func(context.Context, json.RawMessage) (any, error) {
			return nil, sdk.Errorf("payment_declined", "card %s declined", "4242")
		},
		"test::crash": func(context.Context, json.RawMessage) (any, error) {
			return nil, errors.New("boom")
		},
		"test::slow": func(ctx context.Context, _ json.RawMessage) (any, error) {
			select {
			case <-ctx.Done():
			case <-tf.release:
			}
			return "late", nil
		},
		"test::record": func(_ context.Context, in json.RawMessage) (any, error) {
			tf.recorded <- withoutCaller(in)
			return nil, nil
		},
	}
	for id, h := range fns {
		if err := w.RegisterFunction(id, h); err != nil {
			t.Fatal(err)
		}
	}
	// The registrations are processed in order with this call on the same
	// socket: once it returns, the engine routes to every function above.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "engine::functions::list"}); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	return tf
}

// runIn runs the command line with the given environment variables and
// stdin (nil: empty).
func runIn(t *testing.T, vars map[string]string, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	env, stdout, stderr, logs := testEnv(vars)
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	env.Stdin = stdin
	code := Run(ctx, env, args)
	return result{code, stdout.String(), stderr.String(), logs}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestInvoke(t *testing.T) {
	srv := startEngine(t, "")
	w := connectWorker(t, srv.URL(), "tester")
	serveTestFunctions(t, w)
	addr := []string{"--address", srv.URL()}

	tests := []struct {
		name   string
		vars   map[string]string
		stdin  string
		args   []string
		code   int
		stdout string
		stderr string // exact, or a prefix when it ends in "…"
	}{
		{"success", nil, "", append([]string{"invoke", "test::echo", `{"x": 1}`}, addr...), ExitOK, `{"x":1}` + "\n", ""},
		{"no input is null", nil, "", append([]string{"invoke", "test::echo"}, addr...), ExitOK, "null\n", ""},
		{"no result is null", nil, "", append([]string{"invoke", "test::nothing", "{}"}, addr...), ExitOK, "null\n", ""},
		{"scalar input", nil, "", append([]string{"invoke", "test::echo", `"hi"`}, addr...), ExitOK, `"hi"` + "\n", ""},
		{"stdin without argument", nil, `{"from": "stdin"}`, append([]string{"invoke", "test::echo"}, addr...), ExitOK, `{"from":"stdin"}` + "\n", ""},
		{"stdin with -", nil, "[1, 2,\n 3]\n", append([]string{"invoke", "test::echo", "-"}, addr...), ExitOK, "[1,2,3]\n", ""},
		{"address from III_URL", map[string]string{"III_URL": srv.URL()}, "", []string{"invoke", "test::echo", "7"}, ExitOK, "7\n", ""},
		{"address without scheme", nil, "", []string{"invoke", "test::echo", "8", "--address", srv.Addr()}, ExitOK, "8\n", ""},
		{"function error", nil, "", append([]string{"invoke", "test::fail", "{}"}, addr...), ExitError, "",
			"error payment_declined: card 4242 declined\n"},
		{"plain handler error", nil, "", append([]string{"invoke", "test::crash", "{}"}, addr...), ExitError, "",
			"error invocation_failed: …"},
		{"unknown function", nil, "", append([]string{"invoke", "nope::missing", "{}"}, addr...), ExitError, "",
			"error function_not_found: …"},
		{"timeout", nil, "", append([]string{"invoke", "test::slow", "{}", "--timeout", "200ms"}, addr...), ExitError, "",
			"error TIMEOUT: invocation timed out after 200ms\n"},
		{"enqueue without a queue module", nil, "", append([]string{"invoke", "test::echo", "{}", "--enqueue", "jobs"}, addr...), ExitError, "",
			"error enqueue_error: cannot enqueue test::echo on queue \"jobs\": no queue module is running (add QueueModule to config.yaml)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runIn(t, tt.vars, strings.NewReader(tt.stdin), tt.args...)
			stderrOK := r.stderr == tt.stderr
			if prefix, ok := strings.CutSuffix(tt.stderr, "…"); ok {
				stderrOK = strings.HasPrefix(r.stderr, prefix) && strings.Count(r.stderr, "\n") == 1
			}
			if r.code != tt.code || r.stdout != tt.stdout || !stderrOK {
				t.Errorf("iii %q (stdin %q) = %d, stdout %q, stderr %q; want %d, %q, %q",
					tt.args, tt.stdin, r.code, r.stdout, r.stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestInvokeAsync(t *testing.T) {
	srv := startEngine(t, "")
	w := connectWorker(t, srv.URL(), "tester")
	tf := serveTestFunctions(t, w)

	r := runIn(t, nil, nil, "invoke", "--async", "test::record", `{"n": 1}`, "--address", srv.URL())
	if want := "sent test::record (--async: not waiting for a result)\n"; r.code != ExitOK || r.stdout != "" || r.stderr != want {
		t.Fatalf("iii invoke --async = %d, stdout %q, stderr %q; want 0, empty, %q", r.code, r.stdout, r.stderr, want)
	}
	select {
	case got := <-tf.recorded:
		if string(got) != `{"n":1}` {
			t.Errorf("test::record got %s; want {\"n\":1}", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("test::record was not called within 10s of iii invoke --async")
	}
}

func TestInvokeEnqueue(t *testing.T) {
	srv := startEngine(t, "engine: {host: 127.0.0.1, port: 0}\nmodules:\n  - class: QueueModule\n")
	w := connectWorker(t, srv.URL(), "tester")
	tf := serveTestFunctions(t, w)

	r := runIn(t, nil, nil, "invoke", "--enqueue", "default", "test::record", `{"n": 2}`, "--address", srv.URL())
	var receipt struct {
		ID string `json:"messageReceiptId"`
	}
	if r.code != ExitOK || r.stderr != "" || json.Unmarshal([]byte(r.stdout), &receipt) != nil || receipt.ID == "" {
		t.Fatalf("iii invoke --enqueue default = %d, stdout %q, stderr %q; want 0 and a receipt with messageReceiptId", r.code, r.stdout, r.stderr)
	}
	select {
	case got := <-tf.recorded:
		if string(got) != `{"n":2}` {
			t.Errorf("test::record got %s; want {\"n\":2}", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("test::record was not called within 10s of iii invoke --enqueue")
	}
}

func TestInvokeConnectionErrors(t *testing.T) {
	port := closedPort(t)
	srv := startEngine(t, "engine:\n  host: 127.0.0.1\n  port: 0\n  auth_token: s3cret\nmodules: []\n")
	w := connectWorker(t, srv.URL(), "tester", sdk.WithBearerToken("s3cret"))
	serveTestFunctions(t, w)

	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	webURL := "ws" + strings.TrimPrefix(web.URL, "http")

	tests := []struct {
		name   string
		vars   map[string]string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"not an engine", nil, []string{"invoke", "test::echo", "{}", "--address", web.URL}, ExitUsage, "",
			"iii: " + webURL + " is not an iii engine (HTTP 404 on the WebSocket upgrade): check --address\n"},
		{"no engine", nil, []string{"invoke", "test::echo", "{}", "--address", fmt.Sprintf("ws://127.0.0.1:%d", port)}, ExitUsage, "",
			fmt.Sprintf("iii: no engine at ws://127.0.0.1:%d: start one with \"iii dev\" or \"iii start\", or pass --address\n", port)},
		{"no engine, III_URL", map[string]string{"III_URL": fmt.Sprintf("ws://127.0.0.1:%d", port)}, []string{"invoke", "test::echo"}, ExitUsage, "",
			fmt.Sprintf("iii: no engine at ws://127.0.0.1:%d: start one with \"iii dev\" or \"iii start\", or pass --address\n", port)},
		{"token required", nil, []string{"invoke", "test::echo", "{}", "--address", srv.URL()}, ExitUsage, "",
			"iii: the engine requires a token: pass --token or set III_TOKEN\n"},
		{"wrong token", nil, []string{"invoke", "test::echo", "{}", "--address", srv.URL(), "--token", "guess"}, ExitUsage, "",
			"iii: the engine at " + srv.URL() + " rejected the token: check --token or III_TOKEN\n"},
		{"token flag", nil, []string{"invoke", "test::echo", "{}", "--address", srv.URL(), "--token", "s3cret"}, ExitOK, "{}\n", ""},
		{"III_TOKEN", map[string]string{"III_TOKEN": "s3cret"}, []string{"invoke", "test::echo", "{}", "--address", srv.URL()}, ExitOK, "{}\n", ""},
		{"listing without token", nil, []string{"functions", "--address", srv.URL()}, ExitUsage, "",
			"iii: the engine requires a token: pass --token or set III_TOKEN\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runIn(t, tt.vars, nil, tt.args...)
			if r.code != tt.code || r.stdout != tt.stdout || r.stderr != tt.stderr {
				t.Errorf("iii %q = %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, r.code, r.stdout, r.stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestInvokeUsageErrors(t *testing.T) {
	// None of these reaches an engine: the address is never dialled.
	addr := fmt.Sprintf("ws://127.0.0.1:%d", closedPort(t))
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string // stderr
	}{
		{"no function", "", []string{"invoke"}, "iii: iii invoke takes FUNCTION and an optional JSON input, got 0 arguments\nRun 'iii invoke --help' for usage.\n"},
		{"too many arguments", "", []string{"invoke", "a::b", "{}", "{}"}, "iii: iii invoke takes FUNCTION and an optional JSON input, got 3 arguments\nRun 'iii invoke --help' for usage.\n"},
		{"async and enqueue", "", []string{"invoke", "a::b", "--async", "--enqueue", "q"}, "iii: --async and --enqueue exclude each other\nRun 'iii invoke --help' for usage.\n"},
		{"empty queue", "", []string{"invoke", "a::b", "--enqueue", ""}, "iii: --enqueue needs a queue name\nRun 'iii invoke --help' for usage.\n"},
		{"zero timeout", "", []string{"invoke", "a::b", "--timeout", "0s"}, "iii: --timeout 0s: must be positive\nRun 'iii invoke --help' for usage.\n"},
		{"bad scheme", "", []string{"invoke", "a::b", "{}", "--address", "ftp://x"}, "iii: --address \"ftp://x\": the scheme must be ws or wss (like ws://127.0.0.1:49134)\nRun 'iii invoke --help' for usage.\n"},
		{"bad JSON argument", "", []string{"invoke", "a::b", `{"x": nope}`},
			"iii: the JSON argument is not valid JSON: line 1, column 8: invalid character 'o' in literal null (expecting 'u')\n    {\"x\": nope}\n           ^\n"},
		{"unquoted string", "", []string{"invoke", "a::b", `hello`},
			"iii: the JSON argument is not valid JSON: line 1, column 1: invalid character 'h' looking for beginning of value\n    hello\n    ^\n"},
		{"truncated JSON", "", []string{"invoke", "a::b", `{"x": [1, 2`},
			"iii: the JSON argument is not valid JSON: line 1, column 12: unexpected end of JSON input\n    {\"x\": [1, 2\n               ^\n"},
		{"trailing data", "", []string{"invoke", "a::b", `{} {}`},
			"iii: the JSON argument is not valid JSON: line 1, column 4: invalid character '{' after top-level value\n    {} {}\n       ^\n"},
		{"bad JSON on stdin", "{\n  \"a\": 1,\n  \"b\": ,\n}", []string{"invoke", "a::b", "-"},
			"iii: the JSON on stdin is not valid JSON: line 3, column 8: invalid character ',' looking for beginning of value\n      \"b\": ,\n           ^\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{tt.args[0], "--address", addr}, tt.args[1:]...)
			r := runIn(t, nil, strings.NewReader(tt.stdin), args...)
			if r.code != ExitUsage || r.stdout != "" || r.stderr != tt.want {
				t.Errorf("iii %q (stdin %q) = %d, stdout %q, stderr %q; want %d, empty, %q", args, tt.stdin, r.code, r.stdout, r.stderr, ExitUsage, tt.want)
			}
		})
	}
}

func TestPrintJSON(t *testing.T) {
	tests := []struct {
		in     string
		pretty bool
		want   string
	}{
		{`{"a": [1, {"b": null}], "c": "<&>"}`, false, `{"a":[1,{"b":null}],"c":"<&>"}` + "\n"},
		{`{"a": [1, {"b": null}], "c": "<&>"}`, true, "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": \"<&>\"\n}\n"},
		{``, false, "null\n"},
		{``, true, "null\n"},
		{`42`, true, "42\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := printJSON(&b, json.RawMessage(tt.in), tt.pretty); err != nil || b.String() != tt.want {
			t.Errorf("printJSON(%q, pretty %v) = %q, %v; want %q", tt.in, tt.pretty, b.String(), err, tt.want)
		}
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, v := range []any{f, &bytes.Buffer{}, nil} {
		if isTerminal(v) {
			t.Errorf("isTerminal(%T) = true; want false", v)
		}
	}
}

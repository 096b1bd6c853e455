//go:build unix

package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine"
	_ "github.com/iii-workbench/iii/engine/modules/http" // RestApiModule, for the HTTP trigger
	"github.com/iii-workbench/iii/templates"
)

// TestNewWorkerRuns scaffolds a worker per language and runs it the way
// config.yaml tells iii dev to (its install commands, then its run
// command) against a real engine with the HTTP module: iii invoke gets the
// greeting and the input back, so does GET /NAME/hello, and the worker
// leaves cleanly on SIGTERM.
//
// Node and Python install the published iii-sdk from their registries.
// Without npm or python3's venv the test skips, unless CI=true.
func TestNewWorkerRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("installs SDKs and runs workers")
	}
	for _, lang := range templates.Languages() {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			requireToolchain(t, lang)
			timeout := 3 * time.Minute
			if lang == "python" {
				timeout = 5 * time.Minute // a venv and pip install
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			runScaffold(ctx, t, lang)
		})
	}
}

// requireToolchain skips the test when lang's tools are missing, or fails
// it on CI.
func requireToolchain(t *testing.T, lang string) {
	t.Helper()
	var missing string
	switch lang {
	case "go":
		if _, err := exec.LookPath("go"); err != nil {
			missing = "go"
		}
	case "node":
		for _, tool := range []string{"node", "npm"} {
			if _, err := exec.LookPath(tool); err != nil {
				missing = tool
			}
		}
	case "python":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := exec.CommandContext(ctx, "python3", "-c", "import venv, ensurepip").Run(); err != nil {
			missing = "python3 with venv and ensurepip"
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; CI must run the %s scaffold", missing, lang)
	}
	t.Skipf("%s is not installed", missing)
}

func runScaffold(ctx context.Context, t *testing.T, lang string) {
	tmp := t.TempDir()
	name := "e2e-" + lang
	dir := filepath.Join(tmp, name)
	cfgPath := filepath.Join(tmp, "config.yaml")
	if r := runIn(t, nil, nil, "new", "worker", name, "--lang", lang, "--dir", dir, "--config", cfgPath); r.code != ExitOK {
		t.Fatalf("iii new worker %s --lang %s = %d, stderr %q", name, lang, r.code, r.stderr)
	}
	entries := execWorkers(t, cfgPath)
	if len(entries) != 1 || entries[0].Dir != name {
		t.Fatalf("config.yaml workers = %+v; want %s in %s", entries, name, name)
	}
	entry := entries[0]

	srv := startEngine(t, "engine: {host: 127.0.0.1, port: 0}\nmodules:\n  - class: RestApiModule\n    config: {host: 127.0.0.1, port: 0}\n")
	env := childEnv(srv.URL(), entry)
	for _, c := range entry.Install {
		install(ctx, t, dir, env, c)
	}
	p := startProcess(t, dir, env, entry.Run)

	// Registered: the function and its HTTP route.
	fn := name + "::hello"
	waitUntil(ctx, t, p, "the worker registered "+fn+" and its HTTP trigger", func() bool {
		snap := srv.Engine().Snapshot()
		found := false
		for _, tr := range snap.Triggers {
			found = found || tr.Type == "http" && tr.FunctionID == fn && tr.Active
		}
		return found && slices.ContainsFunc(snap.Functions, func(f engine.FunctionInfo) bool {
			return f.ID == fn && slices.Contains(f.Workers, name)
		})
	})

	r := runIn(t, nil, nil, "invoke", fn, `{"x":1}`, "--address", srv.URL())
	if want := `{"greeting":"hello from ` + name + `","input":{"x":1}}` + "\n"; r.code != ExitOK || r.stdout != want {
		t.Errorf("iii invoke %s '{\"x\":1}' = %d, stdout %q, stderr %q; want 0, %q\nworker output:\n%s", fn, r.code, r.stdout, r.stderr, want, p.out)
	}

	body := httpGet(ctx, t, srv, "/"+name+"/hello?x=1")
	want := map[string]any{"greeting": "hello from " + name, "input": map[string]any{"x": "1"}}
	if !reflect.DeepEqual(body, want) {
		t.Errorf("GET /%s/hello?x=1 = %v; want %v\nworker output:\n%s", name, body, want, p.out)
	}

	sig := syscall.SIGTERM // what iii dev sends on a reload or at exit
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker still runs 30s after %v; output:\n%s", sig, p.out)
	}
	if p.err != nil || !strings.Contains(p.out.String(), "shutting down") {
		t.Errorf("the worker exited with %v after %v; want exit 0 and a shutting down line; output:\n%s", p.err, sig, p.out)
	}
	waitUntil(ctx, t, nil, "the engine dropped the worker", func() bool {
		return !slices.ContainsFunc(srv.Engine().Snapshot().Functions, func(f engine.FunctionInfo) bool {
			return f.ID == fn
		})
	})
}

// childEnv is the environment iii dev gives a worker (III_URL,
// III_WORKER_NAME, the entry's env), plus settings that keep the tools
// quiet and Go offline: a Go scaffold must build from the module cache.
func childEnv(url string, e execEntry) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "III_") || strings.HasPrefix(kv, "GOFLAGS=")
	})
	env = append(env, "III_URL="+url, "III_WORKER_NAME="+e.Name,
		"GOPROXY=off", "GOFLAGS=-mod=readonly", "GOWORK=off", "GOTOOLCHAIN=local",
		"npm_config_audit=false", "npm_config_fund=false", "npm_config_update_notifier=false",
		"npm_config_loglevel=error", "npm_config_prefer_offline=true",
		"PIP_DISABLE_PIP_VERSION_CHECK=1")
	for k, v := range e.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// install runs one install command in its own process group, killed as a
// group when ctx ends.
func install(ctx context.Context, t *testing.T, dir string, env []string, command string) {
	t.Helper()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install %q: %v\n%s", command, err, out)
	}
	t.Logf("install %q: %v", command, time.Since(start).Round(time.Millisecond))
}

// process is a worker started like iii dev starts it.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when it has exited
	err  error         // its exit, once done is closed
}

// startProcess starts command in dir in its own process group; cleanup
// kills the group and waits.
func startProcess(t *testing.T, dir string, env []string, command string) *process {
	t.Helper()
	p := &process{out: new(syncBuffer), done: make(chan struct{})}
	// As the exec module does: exec a simple command, so the worker is the
	// shell's replacement and gets the signals itself.
	if !strings.ContainsAny(command, ";&|\n(){}`") {
		command = "exec " + command
	}
	p.cmd = exec.Command("sh", "-c", command)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", command, err)
	}
	// Exits when the process has exited and its output is drained.
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	return p
}

// waitUntil polls cond until it holds; it fails the test when ctx ends or
// the process p (if any) exits first.
func waitUntil(ctx context.Context, t *testing.T, p *process, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var exited chan struct{}
	if p != nil {
		exited = p.done
	}
	for !cond() {
		select {
		case <-ctx.Done():
			out := ""
			if p != nil {
				out = p.out.String()
			}
			t.Fatalf("not before the deadline: %s; worker output:\n%s", what, out)
		case <-exited:
			t.Fatalf("the worker exited (%v) before %s; output:\n%s", p.err, what, p.out)
		case <-tick.C:
		}
	}
}

// httpGet gets path from the HTTP module and decodes the JSON body.
func httpGet(ctx context.Context, t *testing.T, srv *devserver.Server, path string) any {
	t.Helper()
	m, ok := srv.Modules().Get("http")
	if !ok {
		t.Fatal("the HTTP module is not running")
	}
	addr, ok := m.(interface{ Addr() string })
	if !ok {
		t.Fatalf("the HTTP module %T has no Addr", m)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr.Addr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &v) != nil {
		t.Fatalf("GET %s = %s %s; want 200 and JSON", path, resp.Status, b)
	}
	return v
}

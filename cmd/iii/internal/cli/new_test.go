package cli

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/templates"
)

// execEntry is a worker entry of the ExecModule as the tests read it back.
type execEntry struct {
	Name    string            `yaml:"name"`
	Dir     string            `yaml:"dir"`
	Install []string          `yaml:"install"`
	Run     string            `yaml:"run"`
	Watch   []string          `yaml:"watch"`
	Env     map[string]string `yaml:"env"`
}

// execWorkers reads the ExecModule's workers from a config file, checking
// that the file still loads.
func execWorkers(t *testing.T, path string) []execEntry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(path, data, func(string) (string, bool) { return "", true }); err != nil {
		t.Fatalf("config.Parse(%s): %v\n%s", path, err, data)
	}
	var f struct {
		Modules []struct {
			Class  string `yaml:"class"`
			Name   string `yaml:"name"`
			Config struct {
				Workers []execEntry `yaml:"workers"`
			} `yaml:"config"`
		} `yaml:"modules"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []execEntry
	n := 0
	for _, m := range f.Modules {
		if id, _ := config.ModuleID(m.Class + m.Name); id == config.ModuleExec {
			n++
			out = append(out, m.Config.Workers...)
		}
	}
	if n != 1 {
		t.Fatalf("%s has %d ExecModule entries; want 1:\n%s", path, n, data)
	}
	return out
}

// tree lists the files under dir, slash-separated and sorted.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNewWorker(t *testing.T) {
	tests := []struct {
		lang  string
		files []string // must exist; the Go scaffold has more (its SDK copy)
		entry execEntry
		check func(t *testing.T, dir string)
	}{
		{"node", []string{".gitignore", "README.md", "index.mjs", "package.json"},
			execEntry{Install: []string{"npm install --no-audit --no-fund --loglevel=error"}, Run: "node index.mjs",
				Watch: []string{"**/*.mjs", "**/*.js", "package.json"}, Env: map[string]string{}},
			func(t *testing.T, dir string) {
				var pkg struct {
					Name         string            `json:"name"`
					Type         string            `json:"type"`
					Dependencies map[string]string `json:"dependencies"`
				}
				if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "package.json"))), &pkg); err != nil {
					t.Fatalf("package.json: %v", err)
				}
				want := map[string]string{"iii-sdk": "0.22.1"}
				if pkg.Name != "demo" || pkg.Type != "module" || len(pkg.Dependencies) != 1 || pkg.Dependencies["iii-sdk"] != "0.22.1" {
					t.Errorf("package.json = %+v; want name demo, type module, dependencies %v", pkg, want)
				}
				src := readFile(t, filepath.Join(dir, "index.mjs"))
				for _, want := range []string{`from 'iii-sdk'`, `registerFunction('demo::hello'`, `type: 'http'`,
					`config: { api_path: 'demo/hello', http_method: 'GET' }`, `process.env.III_URL`,
					`process.env.III_WORKER_NAME`, `'SIGTERM'`, `'SIGINT'`, `greeting = 'hello from demo'`} {
					if !strings.Contains(src, want) {
						t.Errorf("index.mjs does not contain %q:\n%s", want, src)
					}
				}
			}},
		{"python", []string{".gitignore", "README.md", "main.py", "requirements.txt"},
			execEntry{Install: []string{"python3 -m venv .venv", ".venv/bin/pip install -q --disable-pip-version-check -r requirements.txt"},
				Run: ".venv/bin/python main.py", Watch: []string{"**/*.py", "requirements.txt"},
				Env: map[string]string{"PYTHONUNBUFFERED": "1"}},
			func(t *testing.T, dir string) {
				if got := readFile(t, filepath.Join(dir, "requirements.txt")); got != "iii-sdk==0.22.1\n" {
					t.Errorf("requirements.txt = %q; want %q", got, "iii-sdk==0.22.1\n")
				}
				src := readFile(t, filepath.Join(dir, "main.py"))
				for _, want := range []string{`from iii import InitOptions, register_worker`, `"demo::hello", hello`,
					`"type": "http"`, `"config": {"api_path": "demo/hello", "http_method": "GET"}`, `os.environ.get("III_URL")`,
					`os.environ.get("III_WORKER_NAME")`, `signal.SIGTERM`, `GREETING = "hello from demo"`} {
					if !strings.Contains(src, want) {
						t.Errorf("main.py does not contain %q:\n%s", want, src)
					}
				}
			}},
		{"go", []string{".gitignore", "README.md", "go.mod", "go.sum", "internal/iii/protocol/protocol.go", "internal/iii/sdk/worker.go", "main.go"},
			execEntry{Install: []string{}, Run: "go build -o bin/worker . && exec ./bin/worker", Watch: []string{"**/*.go", "go.mod", "go.sum"}, Env: map[string]string{}},
			func(t *testing.T, dir string) {
				if got := readFile(t, filepath.Join(dir, "go.mod")); !strings.HasPrefix(got, "module demo\n\ngo "+templates.GoVersion+"\n") {
					t.Errorf("go.mod = %q; want module demo, go %s", got, templates.GoVersion)
				}
				src := readFile(t, filepath.Join(dir, "main.go"))
				for _, want := range []string{`"demo/internal/iii/sdk"`, `w.RegisterFunction("demo::hello"`, `Type:       "http"`,
					`map[string]any{"api_path": "demo/hello", "http_method": "GET"}`, `"III_URL"`, `"III_WORKER_NAME"`,
					`syscall.SIGTERM`, `greeting = "hello from demo"`} {
					if !strings.Contains(src, want) {
						t.Errorf("main.go does not contain %q:\n%s", want, src)
					}
				}
				for _, f := range tree(t, dir) {
					if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, "/source.go") {
						t.Errorf("the scaffold has %s; want no tests and no embedding files", f)
					}
					if strings.HasSuffix(f, ".go") && strings.Contains(readFile(t, filepath.Join(dir, f)), `"github.com/iii-workbench/iii`) {
						t.Errorf("%s imports github.com/iii-workbench/iii; want the scaffold's own copy", f)
					}
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.lang, func(t *testing.T) {
			tmp := t.TempDir()
			dir := filepath.Join(tmp, "services", "demo")
			cfg := filepath.Join(tmp, "config.yaml")
			r := runIn(t, nil, nil, "new", "worker", "demo", "--lang", tt.lang, "--dir", dir, "--config", cfg)
			if r.code != ExitOK || r.stderr != "" || !strings.HasPrefix(r.stdout, `Created the `+tt.lang+` worker "demo" in `+dir+string(filepath.Separator)+" and created "+cfg) {
				t.Fatalf("iii new worker demo --lang %s = %d, stdout %q, stderr %q; want 0 and what was created", tt.lang, r.code, r.stdout, r.stderr)
			}
			got := tree(t, dir)
			for _, f := range tt.files {
				if !slices.Contains(got, f) {
					t.Errorf("scaffold files %q; want %s among them", got, f)
				}
			}
			if tt.lang != "go" && !slices.Equal(got, tt.files) {
				t.Errorf("scaffold files %q; want %q", got, tt.files)
			}
			tt.check(t, dir)

			want := tt.entry
			want.Name, want.Dir = "demo", "services/demo"
			ws := execWorkers(t, cfg)
			if len(ws) != 1 || !entryEqual(ws[0], want) {
				t.Errorf("config.yaml workers = %+v; want [%+v]", ws, want)
			}
			if text := readFile(t, cfg); !strings.HasPrefix(text, "# iii configuration, created by \"iii new worker\".") {
				t.Errorf("config.yaml does not start with its comment:\n%s", text)
			}
		})
	}
}

func entryEqual(a, b execEntry) bool {
	return a.Name == b.Name && a.Dir == b.Dir && slices.Equal(a.Install, b.Install) && a.Run == b.Run &&
		slices.Equal(a.Watch, b.Watch) && len(a.Env) == len(b.Env) && func() bool {
		for k, v := range a.Env {
			if b.Env[k] != v {
				return false
			}
		}
		return true
	}()
}

func TestNewWorkerDefaultDir(t *testing.T) {
	tmp := t.TempDir()
	t.Chdir(tmp)
	r := runIn(t, nil, nil, "new", "worker", "billing", "--lang", "python")
	if r.code != ExitOK {
		t.Fatalf("iii new worker billing = %d, stderr %q; want 0", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(tmp, "billing", "main.py")); err != nil {
		t.Errorf("no ./billing/main.py: %v", err)
	}
	if ws := execWorkers(t, filepath.Join(tmp, "config.yaml")); len(ws) != 1 || ws[0].Name != "billing" || ws[0].Dir != "billing" {
		t.Errorf("./config.yaml workers = %+v; want billing in dir billing", ws)
	}
}

func TestNewWorkerKeepsConfig(t *testing.T) {
	const before = `# top comment
engine:
  port: 49134 # the port
  auth_token: ${III_TOKEN:}

modules:
  - class: RestApiModule
    config: {host: 127.0.0.1, port: ${HTTP_PORT:3111}} # http
  # exec workers
  - class: ExecModule
    config:
      workers:
        - name: old
          dir: old
          run: node index.mjs
# trailing
`
	// Blank lines go (yaml.v3); comments, values and order stay.
	const after = `# top comment
engine:
  port: 49134 # the port
  auth_token: ${III_TOKEN:}
modules:
  - class: RestApiModule
    config: {host: 127.0.0.1, port: ${HTTP_PORT:3111}} # http
  # exec workers
  - class: ExecModule
    config:
      workers:
        - name: old
          dir: old
          run: node index.mjs
        - name: web
          dir: web
          install: ["npm install --no-audit --no-fund --loglevel=error"]
          run: node index.mjs
          watch: ["**/*.mjs", "**/*.js", "package.json"]
          env: {}
        - name: tasks
          dir: jobs/tasks
          install: ["python3 -m venv .venv", ".venv/bin/pip install -q --disable-pip-version-check -r requirements.txt"]
          run: .venv/bin/python main.py
          watch: ["**/*.py", "requirements.txt"]
          env: {PYTHONUNBUFFERED: "1"}
# trailing
`
	tmp := t.TempDir()
	cfg := filepath.Join(tmp, "config.yaml")
	if err := os.WriteFile(cfg, []byte(before), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"new", "worker", "web", "--lang", "node", "--dir", filepath.Join(tmp, "web"), "--config", cfg},
		{"new", "worker", "tasks", "--lang", "python", "--dir", filepath.Join(tmp, "jobs", "tasks"), "--config", cfg},
	} {
		if r := runIn(t, nil, nil, args...); r.code != ExitOK || !strings.Contains(r.stdout, " and added it to "+cfg) ||
			!strings.Contains(r.stdout, "iii dev --config "+cfg+" ") {
			t.Fatalf("iii %q = %d, stdout %q, stderr %q; want 0, added to %s, and the iii dev that reads it", args, r.code, r.stdout, r.stderr, cfg)
		}
	}
	if got := readFile(t, cfg); got != after {
		t.Errorf("config.yaml after two iii new worker =\n%s\nwant\n%s", got, after)
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("config.yaml mode = %v, %v; want 0640 kept", fi.Mode(), err)
	}
}

func TestAddExecWorker(t *testing.T) {
	w := execWorker{Name: "demo", Dir: "demo", Install: []string{}, Run: "go run .", Watch: []string{"**/*.go"}}
	const block = `  - class: ExecModule
    config:
      workers:
        - name: demo
          dir: demo
          install: []
          run: go run .
          watch: ["**/*.go"]
          env: {}
`
	const comment = `  # Worker processes: "iii dev" installs and starts each one and restarts
  # it when a watched file changes.
`
	tests := []struct {
		name, in, want string
	}{
		{"empty file", "", "modules:\n" + comment + block},
		{"comments only", "# just a comment\n# and another", "# just a comment\n# and another\nmodules:\n" + comment + block},
		{"no modules", "engine:\n    port: 1\n", "engine:\n  port: 1\nmodules:\n" + comment + block},
		{"null modules", "modules:\n", "modules:\n" + comment + block},
		{"empty modules", "modules: []\n", "modules:\n" + comment + block},
		{"other modules", "modules:\n  - class: http\n", "modules:\n  - class: http\n" + comment + block},
		{"exec by worker name as class, no config", "modules:\n  - class: iii-exec\n",
			"modules:\n  - class: iii-exec\n" + strings.TrimPrefix(block, "  - class: ExecModule\n")},
		{"exec with an empty list", "modules:\n  - class: ExecModule\n    config: {workers: []}\n", "modules:\n" + block},
	}
	for _, tt := range tests {
		got, err := addExecWorker("config.yaml", []byte(tt.in), w)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: addExecWorker(%q) =\n%s\n(err %v)\nwant\n%s", tt.name, tt.in, got, err, tt.want)
		}
	}

	bad := []struct {
		name, in, want string
	}{
		{"not YAML", "a: [\n", "config.yaml:1: did not find expected node content"},
		{"top level list", "- a\n", "config.yaml:1: the top level must be a mapping (engine:, redis:, modules:)"},
		{"modules not a list", "engine: {}\nmodules: 3\n", "config.yaml:2: modules: want a list of modules"},
		{"config not a mapping", "modules:\n  - class: ExecModule\n    config: 3\n", "config.yaml:3: modules[0].config: want a mapping"},
		{"workers not a list", "modules:\n  - class: ExecModule\n    config:\n      workers: x\n", "config.yaml:4: modules[0].config.workers: want a list of workers"},
		{"duplicate", "modules:\n  - class: ExecModule\n    config:\n      workers: [{name: demo, run: x}]\n",
			`config.yaml:4: the ExecModule already has a worker named "demo"; pick another name or remove that entry`},
	}
	for _, tt := range bad {
		got, err := addExecWorker("config.yaml", []byte(tt.in), w)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: addExecWorker(%q) = %q, %v; want error %q", tt.name, tt.in, got, err, tt.want)
		}
	}
	_, err := addExecWorker("config.yaml", []byte(bad[len(bad)-1].in), w)
	if dup := new(duplicateWorkerError); !errors.As(err, &dup) || dup.name != "demo" {
		t.Errorf("duplicate: error %v; want a *duplicateWorkerError for demo", err)
	}
}

func TestNewConfigText(t *testing.T) {
	text := newConfigText()
	cfg, err := config.Parse("config.yaml", text, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config.Parse(newConfigText()): %v\n%s", err, text)
	}
	if _, ok := cfg.Module(config.ModuleExec); !ok {
		t.Errorf("newConfigText() has no ExecModule:\n%s", text)
	}
	for id, class := range defaultClasses {
		if got, ok := config.ModuleID(class); !ok || got != id {
			t.Errorf("class %s names module %q, %v; want %q", class, got, ok, id)
		}
	}
	for _, id := range config.DefaultModules {
		if _, ok := defaultClasses[id]; !ok {
			t.Errorf("default module %q has no class name in defaultClasses", id)
		}
	}
}

func TestNewWorkerRefuses(t *testing.T) {
	tmp := t.TempDir()
	cfg := filepath.Join(tmp, "config.yaml")
	const cfgText = "modules:\n  - class: ExecModule\n    config:\n      workers:\n        - name: taken\n          dir: taken\n"
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(tmp, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	badCfg := filepath.Join(tmp, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("modules: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Keys iii dev refuses: at the top, and in a module's own config.
	unknownKey := filepath.Join(tmp, "unknown.yaml")
	if err := os.WriteFile(unknownKey, []byte("engine:\n  prot: 1\nmodules:\n  - class: ExecModule\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unknownModuleKey := filepath.Join(tmp, "unknownmod.yaml")
	if err := os.WriteFile(unknownModuleKey, []byte("modules:\n  - class: RestApiModule\n    config: {prot: 1}\n  - class: ExecModule\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	invalid := func(name, why string) string {
		return "iii: invalid worker name " + `"` + name + `": ` + why + "\nRun 'iii new worker --help' for usage.\n"
	}
	const lowercase = "use a lowercase letter, then lowercase letters, digits, '-' or '_' (like billing or order-sync)"
	tests := []struct {
		name string
		args []string
		code int
		want string // stderr
	}{
		{"upper case", []string{"Demo", "--lang", "go"}, ExitUsage, invalid("Demo", lowercase)},
		{"leading digit", []string{"1demo", "--lang", "go"}, ExitUsage, invalid("1demo", lowercase)},
		{"space", []string{"my worker", "--lang", "go"}, ExitUsage, invalid("my worker", lowercase)},
		{"dot", []string{"a.b", "--lang", "go"}, ExitUsage, invalid("a.b", lowercase)},
		{"path", []string{"../up", "--lang", "go"}, ExitUsage, invalid("../up", lowercase)},
		{"colons", []string{"a::b", "--lang", "go"}, ExitUsage, invalid("a::b", lowercase)},
		{"reserved engine", []string{"engine", "--lang", "go"}, ExitUsage, invalid("engine", "reserved for the engine; pick another name")},
		{"reserved iii-", []string{"iii-http", "--lang", "go"}, ExitUsage, invalid("iii-http", "reserved for the engine; pick another name")},
		{"too long", []string{strings.Repeat("a", 65), "--lang", "go"}, ExitUsage, invalid(strings.Repeat("a", 65), "longer than 64 characters")},
		{"empty", []string{"", "--lang", "go"}, ExitUsage, "iii: invalid worker name: the name is empty\nRun 'iii new worker --help' for usage.\n"},
		{"no name", []string{"--lang", "go"}, ExitUsage, "iii: iii new worker takes one NAME, got 0 arguments\nRun 'iii new worker --help' for usage.\n"},
		{"no lang", []string{"demo"}, ExitUsage, "iii: --lang is required: go, node, python\nRun 'iii new worker --help' for usage.\n"},
		{"unknown lang", []string{"demo", "--lang", "rust"}, ExitUsage, "iii: --lang \"rust\": want go, node, python\nRun 'iii new worker --help' for usage.\n"},
		{"existing dir", []string{"demo", "--lang", "node", "--dir", existing}, ExitError, "iii: " + existing + " already exists; pick another name or --dir\n"},
		{"duplicate worker", []string{"taken", "--lang", "node", "--dir", filepath.Join(tmp, "taken")}, ExitError,
			"iii: " + cfg + `:5: the ExecModule already has a worker named "taken"; pick another name or remove that entry` + "\n"},
		{"bad config", []string{"demo", "--lang", "node", "--dir", filepath.Join(tmp, "demo"), "--config", badCfg}, ExitError,
			"iii: " + badCfg + ":1: did not find expected node content\n"},
		{"unknown key", []string{"demo", "--lang", "node", "--dir", filepath.Join(tmp, "demo"), "--config", unknownKey}, ExitError,
			"iii: " + unknownKey + ":2: engine.prot: unknown key (known: host, port, auth_token, invocation_timeout_ms, max_frame_bytes, shared_functions)\n"},
		{"unknown module key", []string{"demo", "--lang", "node", "--dir", filepath.Join(tmp, "demo"), "--config", unknownModuleKey}, ExitError,
			"iii: " + unknownModuleKey + ":3: modules[0].config.prot: unknown key (known: host, port, …"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"new", "worker"}, tt.args...)
			if !slices.Contains(args, "--config") {
				args = append(args, "--config", cfg)
			}
			if !slices.Contains(args, "--dir") {
				args = append(args, "--dir", filepath.Join(tmp, "new"))
			}
			r := runIn(t, nil, nil, args...)
			// A want ending in … is a prefix (a module's list of keys grows).
			want, prefix := strings.CutSuffix(tt.want, "…")
			if r.code != tt.code || r.stdout != "" || (prefix && !strings.HasPrefix(r.stderr, want)) || (!prefix && r.stderr != want) {
				t.Errorf("iii %q = %d, stdout %q, stderr %q; want %d, empty, %q", args, r.code, r.stdout, r.stderr, tt.code, tt.want)
			}
			// Nothing was written.
			if got := tree(t, tmp); !slices.Equal(got, []string{"bad.yaml", "config.yaml", "unknown.yaml", "unknownmod.yaml"}) {
				t.Errorf("after iii %q the directory has %q; want it untouched", args, got)
			}
			if got := readFile(t, cfg); got != cfgText {
				t.Errorf("after iii %q config.yaml is\n%s\nwant it untouched", args, got)
			}
		})
	}
	r := runIn(t, nil, nil, "new", "thing")
	if want := "iii: unknown template \"thing\": try iii new worker\nRun 'iii new --help' for usage.\n"; r.code != ExitUsage || r.stderr != want {
		t.Errorf("iii new thing = %d, stderr %q; want 2, %q", r.code, r.stderr, want)
	}
}

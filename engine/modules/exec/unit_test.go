package exec

import (
	"strings"
	"testing"
	"time"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern string
		path    string
		want    bool
	}{
		{"**/*.mjs", "a.mjs", true},
		{"**/*.mjs", "src/lib/a.mjs", true},
		{"**/*.mjs", "src/lib/a.js", false},
		{"*.mjs", "a.mjs", true},
		{"*.mjs", "src/a.mjs", false},
		{"src/**", "src/a/b/c.go", true},
		{"src/**", "src", true},
		{"src/**/test_*.py", "src/test_a.py", true},
		{"src/**/test_*.py", "src/x/y/test_a.py", true},
		{"src/**/test_*.py", "lib/test_a.py", false},
		{"./package.json", "package.json", true},
		{"package.json", "sub/package.json", false},
		{"**/**/*.go", "a/b.go", true},
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/x/c", false},
		{"**", "anything/at/all", true},
	}
	for _, tt := range tests {
		g, err := compileGlob(tt.pattern)
		if err != nil {
			t.Fatalf("compileGlob(%q): %v", tt.pattern, err)
		}
		if got := g.match(tt.path); got != tt.want {
			t.Errorf("glob %q match %q = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
	for _, bad := range []string{"", "/abs/x", "../up", "a/[b"} {
		if _, err := compileGlob(bad); err == nil {
			t.Errorf("compileGlob(%q) = nil error, want an error", bad)
		}
	}
}

func TestIgnores(t *testing.T) {
	s, err := compileIgnores([]string{"fixtures", "web/generated/**", "*.tmp"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want bool
	}{
		{"node_modules", true},
		{"node_modules/x/index.js", true},
		{"src/node_modules/x.js", true},
		{".git/HEAD", true},
		{"pkg/__pycache__/a.pyc", true},
		{"a.pyc", true},
		{".iii/install.sha256", true},
		{"fixtures/a.json", true},
		{"web/generated/a/b.ts", true},
		{"web/src/a.ts", false},
		{"x.tmp", true},
		{"src/index.mjs", false},
		{"builder.go", false},
	}
	for _, tt := range tests {
		if got := s.ignored(tt.path); got != tt.want {
			t.Errorf("ignored(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name  string
		in    string
		limit int
		want  []string
	}{
		{"lines", "a\nb\n", 10, []string{"a", "b"}},
		{"no final newline", "a\nb", 10, []string{"a", "b"}},
		{"crlf", "a\r\nb\r\n", 10, []string{"a", "b"}},
		{"empty lines", "\n\na\n", 10, []string{"", "", "a"}},
		{"cut", long + "\nshort\n", 10, []string{"xxxxxxxxxx" + truncatedMark, "short"}},
		{"exactly the limit", "0123456789\n", 10, []string{"0123456789"}},
		{"longer than the reader's buffer", strings.Repeat("y", 10000) + "\nz\n", 20000,
			[]string{strings.Repeat("y", 10000), "z"}},
		{"nothing", "", 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			readLines(strings.NewReader(tt.in), tt.limit, func(l string) { got = append(got, l) })
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("readLines(%.30q, %d) = %.80q, want %.80q", tt.in, tt.limit, got, tt.want)
			}
		})
	}
}

func TestTail(t *testing.T) {
	tl := newTail(3)
	if got := tl.snapshot(); len(got) != 0 {
		t.Errorf("empty tail = %q", got)
	}
	for _, l := range []string{"1", "2"} {
		tl.add(l)
	}
	if got := strings.Join(tl.snapshot(), ","); got != "1,2" {
		t.Errorf("tail after 1,2 = %s, want 1,2", got)
	}
	for _, l := range []string{"3", "4", "5"} {
		tl.add(l)
	}
	if got := strings.Join(tl.snapshot(), ","); got != "3,4,5" {
		t.Errorf("tail after 1..5 = %s, want 3,4,5", got)
	}
}

func TestShellCommand(t *testing.T) {
	tests := []struct{ in, want string }{
		{"node index.mjs", "exec node index.mjs"},
		{"  python -m app > out.log", "exec python -m app > out.log"},
		{"npm run dev && echo done", "npm run dev && echo done"},
		{"cd src; node a.js", "cd src; node a.js"},
		{"PORT=1 node a.js", "PORT=1 node a.js"},
		{"exec node a.js", "exec node a.js"},
		{"node $(cat entry)", "node $(cat entry)"},
		{"a | b", "a | b"},
	}
	for _, tt := range tests {
		if got := shellCommand(tt.in); got != tt.want {
			t.Errorf("shellCommand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := WorkerConfig{Name: "a", Run: "node a.js"}
	tests := []struct {
		name string
		m    *Module
		want string // substring of the error; "" for none
	}{
		{"ok", &Module{Workers: []WorkerConfig{ok}}, ""},
		{"none", &Module{}, ""},
		{"iii shape", &Module{Exec: []string{"npm i", "npm start"}, Watch: []string{"src/**"}}, ""},
		{"both shapes", &Module{Exec: []string{"x"}, Workers: []WorkerConfig{ok}}, "not both"},
		{"watch alone", &Module{Watch: []string{"x"}}, "watch without exec"},
		{"no name", &Module{Workers: []WorkerConfig{{Run: "x"}}}, "name is required"},
		{"space in name", &Module{Workers: []WorkerConfig{{Name: "a b", Run: "x"}}}, "no spaces"},
		{"no run", &Module{Workers: []WorkerConfig{{Name: "a"}}}, "run is required"},
		{"twice", &Module{Workers: []WorkerConfig{ok, ok}}, `"a" is used twice`},
		{"negative", &Module{Workers: []WorkerConfig{{Name: "a", Run: "x", DebounceMS: -1}}}, "debounce_ms must not be negative"},
		{"bad watch", &Module{Workers: []WorkerConfig{{Name: "a", Run: "x", Watch: []string{"../x"}}}}, "watch: pattern"},
		{"bad input", &Module{Workers: []WorkerConfig{{Name: "a", Run: "x", Install: []string{"i"}, InstallInputs: []string{"/etc/x"}}}}, "install_inputs"},
		{"empty install", &Module{Workers: []WorkerConfig{{Name: "a", Run: "x", Install: []string{" "}}}}, "install[0] is empty"},
		{"bad env", &Module{Workers: []WorkerConfig{{Name: "a", Run: "x", Env: map[string]string{"A=B": "c"}}}}, "invalid variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate(%+v) = %v, want nil", tt.m.Workers, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate(%+v) = %v, want an error containing %q", tt.m.Workers, err, tt.want)
			}
		})
	}
	m := &Module{Workers: []WorkerConfig{{Name: "a", Run: "x", Install: []string{"npm i"}, Watch: []string{"*.js"}, RestartBackoffMS: 50}}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	w := m.resolved[0]
	if w.debounce != DefaultDebounce || w.backoff != 50*time.Millisecond || w.backoffMax != DefaultRestartBackoffMax {
		t.Errorf("durations = debounce %v backoff %v max %v, want %v 50ms %v", w.debounce, w.backoff, w.backoffMax, DefaultDebounce, DefaultRestartBackoffMax)
	}
	if len(w.inputs) != len(defaultInstallInputs) || len(w.globs) != len(defaultInstallInputs)+1 {
		t.Errorf("inputs %v globs %d, want the default inputs, watched too", w.inputs, len(w.globs))
	}
}

package templates

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"go/format"
	"go/parser"
	"go/token"
	gover "go/version"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// goModRequires reads the require lines of ../go.mod: module path -> version.
func goModRequires(t *testing.T) (map[string]string, string) {
	t.Helper()
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	req := map[string]string{}
	goLine := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		switch {
		case len(f) == 2 && f[0] == "go":
			goLine = f[1]
		case len(f) >= 2 && strings.Contains(f[0], ".") && strings.HasPrefix(f[1], "v"):
			req[f[0]] = f[1]
		}
	}
	return req, goLine
}

func TestGoDepsMatchGoMod(t *testing.T) {
	req, goLine := goModRequires(t)
	sum, err := os.ReadFile("../go.sum")
	if err != nil {
		t.Fatal(err)
	}
	sumLines := strings.Split(string(sum), "\n")
	for _, d := range GoDeps {
		if v := req[d.Path]; v != d.Version {
			t.Errorf("GoDeps has %s %s; ../go.mod requires %q", d.Path, d.Version, v)
		}
		for _, line := range []string{d.Path + " " + d.Version + " " + d.Sum, d.Path + " " + d.Version + "/go.mod " + d.ModSum} {
			if !slices.Contains(sumLines, line) {
				t.Errorf("../go.sum has no line %q; update GoDeps", line)
			}
		}
	}
	if gover.Lang("go"+goLine) != gover.Lang("go"+GoVersion) {
		t.Errorf("GoVersion %s; ../go.mod says go %s", GoVersion, goLine)
	}
}

// TestGoDepsCoverSDK checks that the SDK copy imports nothing but the
// standard library, itself and GoDeps, so the scaffold's go.mod is
// complete.
func TestGoDepsCoverSDK(t *testing.T) {
	used := map[string]bool{}
	for _, c := range copied {
		src := c.src
		names, err := fs.Glob(src, "*.go")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasSuffix(n, "_test.go") {
				continue
			}
			b, err := fs.ReadFile(src, n)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parser.ParseFile(token.NewFileSet(), n, b, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				first, _, _ := strings.Cut(p, "/")
				if !strings.Contains(first, ".") || slices.ContainsFunc(copied, func(c copiedPkg) bool { return c.imp == p }) {
					continue // standard library, or rewritten to the copy
				}
				// The module with the longest path that holds p
				// (go.opentelemetry.io/otel/trace, not .../otel).
				i := -1
				for j, d := range GoDeps {
					if (p == d.Path || strings.HasPrefix(p, d.Path+"/")) && (i < 0 || len(d.Path) > len(GoDeps[i].Path)) {
						i = j
					}
				}
				if i < 0 {
					t.Errorf("%s imports %s, which GoDeps does not provide", n, p)
					continue
				}
				used[GoDeps[i].Path] = true
			}
		}
	}
	for _, d := range GoDeps {
		switch {
		case !used[d.Path] && !d.Indirect:
			t.Errorf("GoDeps has %s, which the SDK does not import; mark it Indirect if a dependency needs it", d.Path)
		case used[d.Path] && d.Indirect:
			t.Errorf("GoDeps marks %s Indirect, but the SDK imports it", d.Path)
		}
	}
}

func modulePaths() []string {
	var ps []string
	for _, d := range GoDeps {
		ps = append(ps, d.Path)
	}
	return ps
}

// TestGoScaffoldOffline resolves a Go scaffold's packages and module graph
// with the network off, as iii dev builds it: go.mod and go.sum must be
// complete, and the module cache that built iii has everything.
func TestGoScaffoldOffline(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	s, err := Worker("go", "offline-check")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range s.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(gobin, "list", "-deps", "-test", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("go list -deps in a Go scaffold, offline: %v\n%s", err, out)
	}
}

// TestGoDepsComplete checks GoDeps against the modules the SDK and the
// protocol package build with, as the go command lists them: a scaffold
// needs every one of them in its go.mod and go.sum to build offline.
func TestGoDepsComplete(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-deps", "-f", "{{with .Module}}{{.Path}} {{.Version}}{{end}}", "../sdk", "../engine/protocol", "../engine/cork")
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	want := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) == 2 { // the iii module itself has no version
			want[f[0]+" "+f[1]] = true
		}
	}
	// The scaffold's go line must not sort before any dependency's.
	cmd = exec.Command(gobin, append([]string{"list", "-m", "-f", "{{.Path}} {{.GoVersion}}"}, modulePaths()...)...)
	cmd.Dir, cmd.Env = "..", append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) == 2 && gover.Compare("go"+GoVersion, "go"+f[1]) < 0 {
			t.Errorf("GoVersion %s is older than the go line of %s (%s)", GoVersion, f[0], f[1])
		}
	}
	have := map[string]bool{}
	for _, d := range GoDeps {
		have[d.Path+" "+d.Version] = true
		if !want[d.Path+" "+d.Version] {
			t.Errorf("GoDeps has %s %s, which the SDK does not build with", d.Path, d.Version)
		}
	}
	for m := range want {
		if !have[m] {
			t.Errorf("the SDK builds with %s, which GoDeps lacks", m)
		}
	}
}

// TestSDKVersion checks the pinned iii-sdk against the one the wire
// compatibility suite tests.
func TestSDKVersion(t *testing.T) {
	data, err := os.ReadFile("../engine/compat/testdata/node/package.json")
	if err != nil {
		t.Skipf("no compat suite package.json: %v", err)
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(data, &pkg); err != nil {
		t.Fatal(err)
	}
	if got := pkg.Dependencies["iii-sdk"]; got != SDKVersion {
		t.Errorf("SDKVersion %s; engine/compat tests Node iii-sdk %q", SDKVersion, got)
	}
	req, err := os.ReadFile("../engine/compat/testdata/python/requirements.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^iii-sdk==` + regexp.QuoteMeta(SDKVersion) + `$`).Match(req) {
		t.Errorf("SDKVersion %s; engine/compat's requirements.txt pins another iii-sdk:\n%s", SDKVersion, req)
	}
}

func TestWorker(t *testing.T) {
	want := map[string][]string{
		"go":     {".gitignore", "README.md", "go.mod", "go.sum", "main.go"},
		"node":   {".gitignore", "README.md", "index.mjs", "package.json"},
		"python": {".gitignore", "README.md", "main.py", "requirements.txt"},
	}
	if got := Languages(); !slices.Equal(got, []string{"go", "node", "python"}) {
		t.Errorf("Languages() = %q", got)
	}
	for _, lang := range Languages() {
		s, err := Worker(lang, "order-sync")
		if err != nil {
			t.Fatalf("Worker(%s): %v", lang, err)
		}
		var top []string
		for _, f := range s.Files {
			if !strings.HasPrefix(f.Path, "internal/") {
				top = append(top, f.Path)
			}
			if bytes.Contains(f.Data, []byte("{{")) || bytes.Contains(f.Data, []byte("<no value>")) {
				t.Errorf("%s/%s still has template syntax:\n%s", lang, f.Path, f.Data)
			}
			if path.Ext(f.Path) == ".go" {
				if out, err := format.Source(f.Data); err != nil || !bytes.Equal(out, f.Data) {
					t.Errorf("%s/%s is not gofmt-clean (%v)", lang, f.Path, err)
				}
			}
		}
		if !slices.Equal(top, want[lang]) {
			t.Errorf("Worker(%s) files %q; want %q (plus internal/ for go)", lang, top, want[lang])
		}
		if s.Exec.Run == "" || len(s.Exec.Watch) == 0 {
			t.Errorf("Worker(%s).Exec = %+v; want run and watch", lang, s.Exec)
		}
	}

	s, err := Worker("go", "order-sync")
	if err != nil {
		t.Fatal(err)
	}
	var sdkFiles int
	for _, f := range s.Files {
		if strings.HasPrefix(f.Path, sdkDir+"/") {
			sdkFiles++
		}
		if strings.HasPrefix(f.Path, "internal/") {
			if !bytes.HasPrefix(f.Data, []byte("// Code generated by iii new worker from github.com/iii-workbench/iii/")) {
				t.Errorf("%s does not start with the generated-code header", f.Path)
			}
			for _, c := range copied {
				if bytes.Contains(f.Data, []byte(`"`+c.imp+`"`)) {
					t.Errorf("%s still imports %s", f.Path, c.imp)
				}
			}
		}
	}
	if sdkFiles == 0 || !slices.ContainsFunc(s.Files, func(f File) bool {
		return bytes.Contains(f.Data, []byte(`"order-sync/internal/iii/protocol"`))
	}) {
		t.Errorf("the Go scaffold has %d SDK files and none imports order-sync/internal/iii/protocol", sdkFiles)
	}
}

// TestWorkerAliases: py, js and ts pick the python and node templates.
func TestWorkerAliases(t *testing.T) {
	for alias, want := range map[string]string{"py": "python", "js": "node", "ts": "node", "golang": "go"} {
		s, err := Worker(alias, "demo")
		if err != nil || s.Lang != want {
			t.Errorf("Worker(%q) = %v, %v; want the %s template", alias, s, err, want)
		}
	}
}

func TestWorkerErrors(t *testing.T) {
	if _, err := Worker("rust", "demo"); !errors.Is(err, ErrTemplatesUnknownLang) {
		t.Errorf("Worker(rust) error %v; want ErrTemplatesUnknownLang", err)
	}
	if _, err := Worker("go", "Demo"); !errors.Is(err, ErrTemplatesBadName) {
		t.Errorf("Worker(go, Demo) error %v; want ErrTemplatesBadName", err)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "demo", "order-sync", "order_sync", "w2", strings.Repeat("a", 64), "engines", "iiii"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "Demo", "2fa", "-x", "_x", "a b", "a.b", "a/b", "a::b", "é", strings.Repeat("a", 65),
		"engine", "iii", "iii-http", "std", "cmd"} {
		if err := CheckName(bad); !errors.Is(err, ErrTemplatesBadName) {
			t.Errorf("CheckName(%q) = %v; want ErrTemplatesBadName", bad, err)
		}
	}
}

func TestOutputPath(t *testing.T) {
	for in, want := range map[string]string{
		"main.go.tmpl":       "main.go",
		"dot-gitignore.tmpl": ".gitignore",
		"sub/dot-env.tmpl":   "sub/.env",
		"dotty.txt.tmpl":     "dotty.txt",
	} {
		if got := outputPath(in); got != want {
			t.Errorf("outputPath(%q) = %q; want %q", in, got, want)
		}
	}
}

// Package templates holds the project templates of `iii new`, embedded in
// the binary and rendered with text/template.
//
// A worker template is a directory worker/<lang>. Every file in it ends in
// .tmpl (so the Go toolchain never reads a template as code or as a nested
// module); the suffix is dropped when rendering and a leading "dot-"
// becomes "." (go:embed skips dotfiles).
package templates

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/iii-workbench/iii/engine/cork"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

//go:embed worker
var files embed.FS

// SDKVersion is the published iii-sdk (npm and PyPI) that the Node and
// Python templates pin: the version engine/compat tests against.
const SDKVersion = "0.22.1"

// GoVersion is the go line of a scaffolded Go worker's go.mod: iii's
// release (the minor of its own go line), and no older than the go line of
// any module in GoDeps (golang.org/x/sys v0.48.0 says 1.26.0; "1.26" would
// sort before it and make the go command want to edit go.mod).
const GoVersion = "1.26.0"

// GoDep is a module the Go SDK needs, with its go.sum hashes.
type GoDep struct {
	Path, Version string
	Sum           string // h1: hash of the module
	ModSum        string // h1: hash of its go.mod
	// Indirect: the SDK does not import the module, a module it imports
	// does (go.mod lists it as // indirect).
	Indirect bool
}

// GoDeps are the external modules of the Go SDK, direct and indirect (every
// module that provides a package the SDK builds with), at the versions of
// iii's own go.mod and go.sum, so a scaffolded worker builds from the
// module cache that built iii. Tests keep them in step with go.mod, go.sum
// and the SDK's imports.
//
// The OpenTelemetry modules are the SDK's tracing (see sdk/tracing.go);
// logr, stdr, auto/sdk, otel/metric, xxhash and x/sys come with them.
var GoDeps = []GoDep{
	{"github.com/cespare/xxhash/v2", "v2.3.0",
		"h1:UL815xU9SqsFlibzuggzjXhog7bL6oX9BbNZnL2UFvs=", "h1:VGX0DQ3Q6kWi7AoAeZDth3/j3BFtOZR5XLFGgcrjCOs=", true},
	{"github.com/coder/websocket", "v1.8.15",
		"h1:6B2JPeOGlpff2Uz6vOEH1Vzpi0iUz20A+lPVhPHtNUA=", "h1:NX3SzP+inril6yawo5CQXx8+fk145lPDC6pumgx0mVg=", false},
	{"github.com/go-logr/logr", "v1.4.4",
		"h1:tG4xh9yMsRCAiodLVTxyrkzSZ9+o0L1Kg/+cPVcbP/8=", "h1:9T104GzyrTigFIr8wt5mBrctHMim0Nb2HLGrmQ40KvY=", true},
	{"github.com/go-logr/stdr", "v1.2.2",
		"h1:hSWxHoqTgW2S2qGc0LTAI563KZ5YKYRhT3MFKZMbjag=", "h1:mMo/vtBO5dYbehREoey6XUKy/eSumjCCveDpRre4VKE=", true},
	{"github.com/google/uuid", "v1.6.0",
		"h1:NIvaJDMOsjHA8n1jAhLSgzrAzy1Hgr+hNrb57e+94F0=", "h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo=", false},
	{"go.opentelemetry.io/auto/sdk", "v1.2.1",
		"h1:jXsnJ4Lmnqd11kwkBV2LgLoFMZKizbCi5fNZ/ipaZ64=", "h1:KRTj+aOaElaLi+wW1kO/DZRXwkF4C5xPbEe3ZiIhN7Y=", true},
	{"go.opentelemetry.io/otel", "v1.46.0",
		"h1:FHt5/CDyVxi/8IM1CH7VE/rRgq3kLHa2mSTVMO8AWyc=", "h1:Gj3SEScelsNC45tp4nSxRYlS+f5iez7W8XPMCt905kE=", false},
	{"go.opentelemetry.io/otel/metric", "v1.46.0",
		"h1:yBnkXvgV7AXFILZc5K6IZe/CBFF3OS7BJ8ov6/lj0K8=", "h1:iPmdWqifKUdzziPkvvzIJXITl56fQx2mGM/DHLB3/2o=", true},
	{"go.opentelemetry.io/otel/sdk", "v1.46.0",
		"h1:h5CNQQjEbuQXY/JfZtgt3i7HVFV3aHPO2OAwO2eTYPI=", "h1:GAERFXFt5SYCEB+YiKUbMBeza6UaDH7GmGOZEfh2gSM=", false},
	{"go.opentelemetry.io/otel/trace", "v1.46.0",
		"h1:OULy7ccdJnZtJ0UDYFOIGaCmiWzJ8Vi2G/Rsu60qs1c=", "h1:J7GAXweO77XSFkB/rmAqk9D6ihszhFjLU+d9WuUxDLI=", false},
	{"golang.org/x/sys", "v0.48.0",
		"h1:bbX/i/6MgT9BVLM9RT1thmxL04yeTAhbEz4SyadbXoo=", "h1:hNLxWAXmnKAxqDtdwIYC4bM9oQPEecfsnNMuSxOs3og=", true},
}

// Import paths of the Go SDK inside iii, and where a Go scaffold keeps its
// copy (under the scaffold's module path).
const (
	sdkImport      = "github.com/iii-workbench/iii/sdk"
	protocolImport = "github.com/iii-workbench/iii/engine/protocol"
	corkImport     = "github.com/iii-workbench/iii/engine/cork"
	sdkDir         = "internal/iii/sdk"
	protocolDir    = "internal/iii/protocol"
	corkDir        = "internal/iii/cork"
)

// copiedPkg is a package of iii a Go scaffold holds a copy of: its
// sources, its import path, and the copy's folder in the scaffold.
type copiedPkg struct {
	src      fs.FS
	imp, dir string
}

// copied are the packages a Go scaffold holds a copy of: the SDK and the
// packages of iii it imports.
var copied = []copiedPkg{
	{sdk.Source, sdkImport, sdkDir},
	{protocol.Source, protocolImport, protocolDir},
	{cork.Source, corkImport, corkDir},
}

// Exec is how iii dev's ExecModule installs, runs and watches a worker:
// one entry of its workers list (name and dir are the caller's).
type Exec struct {
	Install []string
	Run     string
	Watch   []string
	Env     map[string]string
}

var langs = map[string]Exec{
	"node": {
		Install: []string{"npm install --no-audit --no-fund --loglevel=error"},
		Run:     "node index.mjs",
		Watch:   []string{"**/*.mjs", "**/*.js", "package.json"},
	},
	"python": {
		Install: []string{"python3 -m venv .venv", ".venv/bin/pip install -q --disable-pip-version-check -r requirements.txt"},
		Run:     ".venv/bin/python main.py",
		Watch:   []string{"**/*.py", "requirements.txt"},
		// Line-by-line output when stdout is a pipe, as iii dev reads it.
		Env: map[string]string{"PYTHONUNBUFFERED": "1"},
	},
	"go": {
		Install: []string{},
		// Built on every start (the build cache keeps that quick), then
		// exec'd: the worker is the process iii dev signals, not a go run
		// that exits 1 on signals and leaves its child behind on SIGKILL.
		Run:   "go build -o bin/worker . && exec ./bin/worker",
		Watch: []string{"**/*.go", "go.mod", "go.sum"},
	},
}

// aliases are other names Worker takes for a language. The node template
// is plain JavaScript (ES modules); ts picks it too, to start from.
var aliases = map[string]string{
	"py": "python", "python3": "python",
	"js": "node", "javascript": "node", "ts": "node", "typescript": "node",
	"golang": "go",
}

// Languages lists the languages of the worker templates, sorted.
func Languages() []string {
	var ls []string
	for l := range langs {
		ls = append(ls, l)
	}
	slices.Sort(ls)
	return ls
}

// Errors of Worker and CheckName; match with errors.Is.
var (
	ErrTemplatesUnknownLang = errors.New("unknown language")
	ErrTemplatesBadName     = errors.New("invalid worker name")
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// maxName bounds a worker name; it becomes a directory, a Go module path,
// an npm package name and part of function IDs and URLs.
const maxName = 64

// reserved names belong to the engine: engine::* functions are internal,
// iii and iii-* are the built-in workers' names, std and cmd are reserved
// Go module paths.
var reserved = []string{"engine", "iii", "std", "cmd"}

// CheckName reports why name cannot be a worker name. A worker name is a
// lowercase identifier, [a-z][a-z0-9_-]*, at most 64 characters, and not
// one the engine reserves.
func CheckName(name string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrTemplatesBadName, name, fmt.Sprintf(format, args...))
	}
	switch {
	case name == "":
		return fmt.Errorf("%w: the name is empty", ErrTemplatesBadName)
	case len(name) > maxName:
		return bad("longer than %d characters", maxName)
	case !nameRE.MatchString(name):
		return bad("use a lowercase letter, then lowercase letters, digits, '-' or '_' (like billing or order-sync)")
	case slices.Contains(reserved, name) || strings.HasPrefix(name, "iii-"):
		return bad("reserved for the engine; pick another name")
	}
	return nil
}

// File is one file of a scaffold.
type File struct {
	Path string // slash-separated, relative to the worker's directory
	Data []byte
}

// Scaffold is a rendered worker.
type Scaffold struct {
	Lang  string
	Files []File // sorted by Path
	Exec  Exec
}

// data is what the worker templates see.
type data struct {
	Name       string // worker name and Go module path
	Function   string // NAME::hello
	APIPath    string // NAME/hello, the HTTP trigger's api_path
	SDKVersion string
	GoVersion  string
	GoDeps     []GoDep
}

// Worker renders the worker template of lang for a worker called name.
func Worker(lang, name string) (*Scaffold, error) {
	if l, ok := aliases[lang]; ok {
		lang = l
	}
	ex, ok := langs[lang]
	if !ok {
		return nil, fmt.Errorf("%w %q: want one of %s", ErrTemplatesUnknownLang, lang, strings.Join(Languages(), ", "))
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	d := data{Name: name, Function: name + "::hello", APIPath: name + "/hello",
		SDKVersion: SDKVersion, GoVersion: GoVersion, GoDeps: GoDeps}
	s := &Scaffold{Lang: lang, Exec: ex}
	root := "worker/" + lang
	err := fs.WalkDir(files, root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		text, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		t, err := template.New(p).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return fmt.Errorf("templates: %w", err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, d); err != nil {
			return fmt.Errorf("templates: %w", err)
		}
		s.Files = append(s.Files, File{Path: outputPath(strings.TrimPrefix(p, root+"/")), Data: b.Bytes()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if lang == "go" {
		for _, c := range copied {
			files, err := goSources(c.src, c.imp, c.dir, name)
			if err != nil {
				return nil, err
			}
			s.Files = append(s.Files, files...)
		}
	}
	slices.SortFunc(s.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return s, nil
}

// outputPath maps a template file name to the scaffold's file name.
func outputPath(p string) string {
	dir, base := path.Split(strings.TrimSuffix(p, ".tmpl"))
	if rest, ok := strings.CutPrefix(base, "dot-"); ok {
		base = "." + rest
	}
	return dir + base
}

// generatedHeader marks the copied SDK files, so tools and people leave
// them alone.
const generatedHeader = "// Code generated by iii new worker from %s; DO NOT EDIT.\n\n"

// goSources copies the non-test Go files of the embedded package from into
// dir, with the iii import paths rewritten to the scaffold's module.
func goSources(src fs.FS, from, dir, module string) ([]File, error) {
	names, err := fs.Glob(src, "*.go")
	if err != nil {
		return nil, err
	}
	var pairs []string
	for _, c := range copied {
		pairs = append(pairs, `"`+c.imp+`"`, `"`+module+"/"+c.dir+`"`)
	}
	replacer := strings.NewReplacer(pairs...)
	var out []File
	for _, n := range names {
		// source.go holds the embedding itself; the scaffold needs none.
		if strings.HasSuffix(n, "_test.go") || n == "source.go" {
			continue
		}
		b, err := fs.ReadFile(src, n)
		if err != nil {
			return nil, err
		}
		text := fmt.Sprintf(generatedHeader, from) + replacer.Replace(string(b))
		out = append(out, File{Path: dir + "/" + n, Data: []byte(text)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("templates: no Go sources for %s", dir)
	}
	return out, nil
}

package exec

import (
	"fmt"
	"path"
	"strings"
)

// glob is a slash-separated pattern relative to a worker's dir. Each
// segment is a path.Match pattern; a "**" segment matches zero or more
// segments ("**/*.mjs" matches "a.mjs" and "src/lib/a.mjs").
type glob struct {
	src  string
	segs []string
}

func compileGlob(p string) (glob, error) {
	clean := strings.TrimPrefix(path.Clean(strings.ReplaceAll(p, `\`, "/")), "./")
	if p == "" || clean == "." || strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../") {
		return glob{}, fmt.Errorf("pattern %q: want a path relative to the worker's dir", p)
	}
	segs := strings.Split(clean, "/")
	for _, s := range segs {
		if s == "**" {
			continue
		}
		if _, err := path.Match(s, ""); err != nil {
			return glob{}, fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	return glob{src: p, segs: segs}, nil
}

// match reports whether rel (slash-separated, relative) matches.
func (g glob) match(rel string) bool {
	return matchSegs(g.segs, strings.Split(rel, "/"))
}

func matchSegs(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for len(pat) > 1 && pat[1] == "**" {
				pat = pat[1:]
			}
			if len(pat) == 1 {
				return true
			}
			for i := range len(name) + 1 {
				if matchSegs(pat[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

// ignoreSet decides which paths the watcher skips. A pattern without a
// slash matches any single path segment (a dir or file name anywhere); one
// with a slash matches the whole relative path, like a glob.
type ignoreSet struct {
	names []string
	paths []glob
}

// builtinIgnores are skipped for every worker.
var builtinIgnores = []string{".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__",
	".mypy_cache", ".pytest_cache", "dist", "build", "*.pyc", ".DS_Store", ".iii"}

func compileIgnores(extra []string) (ignoreSet, error) {
	var s ignoreSet
	for _, p := range append(append([]string(nil), builtinIgnores...), extra...) {
		p = strings.TrimSuffix(strings.ReplaceAll(p, `\`, "/"), "/")
		if !strings.Contains(p, "/") {
			if _, err := path.Match(p, ""); err != nil || p == "" {
				return s, fmt.Errorf("ignore pattern %q: invalid", p)
			}
			s.names = append(s.names, p)
			continue
		}
		g, err := compileGlob(p)
		if err != nil {
			return s, fmt.Errorf("ignore %w", err)
		}
		s.paths = append(s.paths, g)
	}
	return s, nil
}

// ignored reports whether rel or any of its parent dirs is ignored.
func (s ignoreSet) ignored(rel string) bool {
	segs := strings.Split(rel, "/")
	for _, seg := range segs {
		for _, n := range s.names {
			if ok, _ := path.Match(n, seg); ok {
				return true
			}
		}
	}
	for i := range segs {
		prefix := segs[:i+1]
		for _, g := range s.paths {
			if matchSegs(g.segs, prefix) {
				return true
			}
		}
	}
	return false
}

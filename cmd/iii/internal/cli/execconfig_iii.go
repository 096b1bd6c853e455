package cli

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/iii-workbench/iii/engine/config"
)

// isIIIConfig reports whether a config file's text is in iii's format.
func isIIIConfig(src []byte) bool {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(src)).Decode(&doc); err != nil || len(doc.Content) == 0 {
		return false
	}
	return config.IsIIIDocument(doc.Content[0])
}

// iii's config format has no ExecModule with named workers: each process
// is an iii-exec entry, {exec: [commands...], watch: [globs...]}, whose
// commands run in the engine's directory. A new worker becomes one such
// entry: every command changes into the worker's directory first, every
// glob is prefixed with it, and the environment is exported before the
// last command (the long-running one).

// iiiExecError is returned when an iii-exec entry already runs a worker
// in the same directory.
type iiiExecError struct {
	file string
	line int
	dir  string
}

func (e *iiiExecError) Error() string {
	return fmt.Sprintf("%s:%d: an iii-exec entry already runs a worker in %s; pick another name or --dir, or remove that entry", e.file, e.line, e.dir)
}

// shellSafe matches words the shell takes as they are.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9._/@%+=:,-]+$`)

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// addIIIExecWorker appends w to an iii-format file as an iii-exec entry of
// its workers: list (or modules:, when that is the list the file uses).
func addIIIExecWorker(file string, root *yaml.Node, w execWorker) error {
	key := "workers"
	if mapValue(root, key) == nil && mapValue(root, "modules") != nil {
		key = "modules"
	}
	list := mapValue(root, key)
	switch {
	case list == nil:
		list = &yaml.Node{Kind: yaml.SequenceNode}
		root.Content = append(root.Content, scalar(key), list)
	case isNull(list):
		*list = yaml.Node{Kind: yaml.SequenceNode, LineComment: list.LineComment}
	case list.Kind != yaml.SequenceNode:
		return fmt.Errorf("%s:%d: %s: want a list of workers", file, list.Line, key)
	}
	cd := "cd " + shellQuote(w.Dir) + " && "
	for _, e := range list.Content {
		if n := mapValue(e, "name"); n == nil || n.Value != "iii-exec" {
			continue
		}
		cmds := mapValue(mapValue(e, "config"), "exec")
		if cmds == nil || cmds.Kind != yaml.SequenceNode {
			continue
		}
		if slices.ContainsFunc(cmds.Content, func(c *yaml.Node) bool { return strings.HasPrefix(c.Value, cd) }) {
			return &iiiExecError{file, e.Line, w.Dir}
		}
	}
	var cmds []string
	for _, c := range w.Install {
		cmds = append(cmds, cd+c)
	}
	run := cd
	keys := make([]string, 0, len(w.Env))
	for k := range w.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		run += "export " + k + "=" + shellQuote(w.Env[k]) + " && "
	}
	cmds = append(cmds, run+w.Run)
	var watch []string
	for _, g := range w.Watch {
		if w.Dir != "." {
			g = strings.TrimSuffix(w.Dir, "/") + "/" + g
		}
		watch = append(watch, g)
	}
	entry := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		scalar("name"), scalar("iii-exec"),
		scalar("config"), {Kind: yaml.MappingNode, Content: []*yaml.Node{
			scalar("watch"), flowList(watch),
			scalar("exec"), flowList(cmds),
		}},
	}}
	entry.HeadComment = fmt.Sprintf("Worker %s: iii-exec runs these commands in turn (the last one keeps running)\nand starts them again when a watched file changes.", w.Name)
	list.Style = 0
	list.Content = append(list.Content, entry)
	return nil
}

package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/module"
)

// execWorker is one entry of the ExecModule's workers list in config.yaml.
type execWorker struct {
	Name    string
	Dir     string // relative to the config file's directory, slash-separated
	Install []string
	Run     string
	Watch   []string
	Env     map[string]string
}

// duplicateWorkerError is returned when the ExecModule already has a
// worker of that name.
type duplicateWorkerError struct {
	file string
	line int
	name string
}

func (e *duplicateWorkerError) Error() string {
	return fmt.Sprintf("%s:%d: the ExecModule already has a worker named %q; pick another name or remove that entry", e.file, e.line, e.name)
}

// yamlLine pulls the line out of yaml.v3 errors ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// defaultClasses names the default modules as config.yaml usually spells
// them.
var defaultClasses = map[string]string{
	config.ModuleHTTP:          "RestApiModule",
	config.ModuleQueue:         "QueueModule",
	config.ModulePubSub:        "PubSubModule",
	config.ModuleCron:          "CronModule",
	config.ModuleStream:        "StreamModule",
	config.ModuleState:         "StateModule",
	config.ModuleObservability: "OtelModule",
	config.ModuleExec:          "ExecModule",
}

// newConfigText is a config.yaml for a project that has none: the modules
// that run without a config file (those this binary has), so creating the
// file changes nothing else, and an ExecModule with no workers yet.
func newConfigText() []byte {
	var b bytes.Buffer
	b.WriteString(`# iii configuration, created by "iii new worker". With this file exactly
# the modules listed here run; see the iii README for every key.
engine:
  host: 127.0.0.1
  port: 49134
modules:
`)
	for _, id := range config.DefaultModules {
		if _, ok := module.Lookup(id); !ok {
			continue
		}
		class := defaultClasses[id]
		if class == "" {
			class = id
		}
		fmt.Fprintf(&b, "  - class: %s\n", class)
	}
	b.WriteString(`  # Worker processes: "iii dev" installs and starts each one and restarts
  # it when a watched file changes.
  - class: ExecModule
    config:
      workers: []
`)
	return b.Bytes()
}

// addExecWorker returns the config file src with w appended to its
// ExecModule's workers list, adding an ExecModule entry (and a modules
// list) when there is none. Comments and every other entry stay as they
// are; yaml.v3 re-indents the file with two spaces and drops blank lines.
// file names src in errors.
func addExecWorker(file string, src []byte, w execWorker) ([]byte, error) {
	// ${VAR:default} is not YAML (in a flow mapping it is a syntax error):
	// edit the text with each reference held by a plain placeholder.
	held, refs := holdVarRefs(src)
	out, err := addExecWorkerYAML(file, held, w)
	if err != nil {
		return nil, err
	}
	return restoreVarRefs(out, refs), nil
}

// addExecWorkerYAML is addExecWorker on text that is plain YAML.
func addExecWorkerYAML(file string, src []byte, w execWorker) ([]byte, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("%s:%s: %s", file, m[1], m[2])
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	// A file of comments only decodes to nothing; keep its text and add
	// the new entry after it.
	var keep []byte
	if len(doc.Content) == 0 && len(bytes.TrimSpace(src)) > 0 {
		keep = slices.Clone(src)
		if !bytes.HasSuffix(keep, []byte("\n")) {
			keep = append(keep, '\n')
		}
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode}
	}
	if len(doc.Content) == 0 {
		doc.Content = []*yaml.Node{{Kind: yaml.MappingNode}}
	}
	root := doc.Content[0]
	if isNull(root) { // an empty document, comments at most
		*root = yaml.Node{Kind: yaml.MappingNode, HeadComment: root.HeadComment, FootComment: root.FootComment}
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the top level must be a mapping (engine:, redis:, modules:)", file, root.Line)
	}
	if config.IsIIIDocument(root) {
		if err := addIIIExecWorker(file, root, w); err != nil {
			return nil, err
		}
		return encodeConfig(file, keep, &doc)
	}

	modules := mapValue(root, "modules")
	switch {
	case modules == nil:
		modules = &yaml.Node{Kind: yaml.SequenceNode}
		root.Content = append(root.Content, scalar("modules"), modules)
	case isNull(modules):
		*modules = yaml.Node{Kind: yaml.SequenceNode, LineComment: modules.LineComment}
	case modules.Kind != yaml.SequenceNode:
		return nil, fmt.Errorf("%s:%d: modules: want a list of modules", file, modules.Line)
	}

	var workers *yaml.Node
	for i, m := range modules.Content {
		if m.Kind != yaml.MappingNode || !isExec(m) {
			continue
		}
		cfg := mapValue(m, "config")
		switch {
		case cfg == nil:
			cfg = &yaml.Node{Kind: yaml.MappingNode}
			m.Content = append(m.Content, scalar("config"), cfg)
		case isNull(cfg):
			*cfg = yaml.Node{Kind: yaml.MappingNode}
		case cfg.Kind != yaml.MappingNode:
			return nil, fmt.Errorf("%s:%d: modules[%d].config: want a mapping", file, cfg.Line, i)
		}
		workers = mapValue(cfg, "workers")
		switch {
		case workers == nil:
			workers = &yaml.Node{Kind: yaml.SequenceNode}
			cfg.Content = append(cfg.Content, scalar("workers"), workers)
		case isNull(workers):
			*workers = yaml.Node{Kind: yaml.SequenceNode}
		case workers.Kind != yaml.SequenceNode:
			return nil, fmt.Errorf("%s:%d: modules[%d].config.workers: want a list of workers", file, workers.Line, i)
		}
		for _, x := range workers.Content {
			if n := mapValue(x, "name"); n != nil && n.Value == w.Name {
				return nil, &duplicateWorkerError{file, x.Line, w.Name}
			}
		}
		// Everything inside a flow collection is flow too: make the path to
		// the new entry block style, so it reads like the rest.
		m.Style, cfg.Style = 0, 0
		break
	}
	if workers == nil {
		workers = &yaml.Node{Kind: yaml.SequenceNode}
		entry := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			scalar("class"), scalar("ExecModule"),
			scalar("config"), {Kind: yaml.MappingNode, Content: []*yaml.Node{scalar("workers"), workers}},
		}}
		entry.HeadComment = `Worker processes: "iii dev" installs and starts each one and restarts
it when a watched file changes.`
		modules.Content = append(modules.Content, entry)
	}
	modules.Style, workers.Style = 0, 0 // block lists, not "workers: [{...}]"
	workers.Content = append(workers.Content, w.node())
	return encodeConfig(file, keep, &doc)
}

// encodeConfig writes doc after the kept text (comments of a file that
// had no document).
func encodeConfig(file string, keep []byte, doc *yaml.Node) ([]byte, error) {
	out := bytes.NewBuffer(keep)
	enc := yaml.NewEncoder(out)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out.Bytes(), nil
}

// checkConfig reads src as iii dev and iii start do (interpolation, strict
// keys, each module's own config decoding), so a worker is only added to a
// config the engine would run.
func checkConfig(file string, src []byte, getenv func(string) (string, bool)) error {
	cfg, err := config.Parse(file, src, getenv)
	if err != nil {
		return err
	}
	for i := range cfg.Modules {
		e := &cfg.Modules[i]
		info, ok := module.Lookup(e.ID)
		if !ok {
			continue // not built into this binary; iii dev says so
		}
		if err := e.Decode(info.New()); err != nil {
			return err
		}
	}
	return nil
}

// varRefText matches the ${...} references config interpolation replaces.
var varRefText = regexp.MustCompile(`\$\{[^}]*\}`)

// holdVarRefs replaces each ${...} in src with a placeholder that is a
// plain YAML scalar, and returns the references in order.
func holdVarRefs(src []byte) ([]byte, [][]byte) {
	var refs [][]byte
	out := varRefText.ReplaceAllFunc(src, func(ref []byte) []byte {
		refs = append(refs, ref)
		return fmt.Appendf(nil, "iii-var-ref-%d-x", len(refs)-1)
	})
	return out, refs
}

var varRefHeld = regexp.MustCompile(`iii-var-ref-(\d+)-x`)

// restoreVarRefs puts back the references holdVarRefs took out.
func restoreVarRefs(text []byte, refs [][]byte) []byte {
	return varRefHeld.ReplaceAllFunc(text, func(h []byte) []byte {
		i, err := strconv.Atoi(string(varRefHeld.FindSubmatch(h)[1]))
		if err != nil || i >= len(refs) {
			return h
		}
		return refs[i]
	})
}

// isExec reports whether a modules entry is the ExecModule.
func isExec(m *yaml.Node) bool {
	for _, key := range []string{"class", "name"} {
		if v := mapValue(m, key); v != nil && v.Kind == yaml.ScalarNode {
			if id, ok := config.ModuleID(v.Value); ok && id == config.ModuleExec {
				return true
			}
		}
	}
	return false
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// mapValue is the value of key in mapping m, nil when absent.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// quoted is a double-quoted string: globs such as **/*.go must not read as
// YAML aliases, and "1" must stay a string.
func quoted(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

func flowList(items []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range items {
		n.Content = append(n.Content, quoted(s))
	}
	return n
}

// node is the worker's entry in block style, with the lists and the env
// map in flow style.
func (w execWorker) node() *yaml.Node {
	env := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
	keys := make([]string, 0, len(w.Env))
	for k := range w.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env.Content = append(env.Content, scalar(k), quoted(w.Env[k]))
	}
	return &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		scalar("name"), scalar(w.Name),
		scalar("dir"), scalar(w.Dir),
		scalar("install"), flowList(w.Install),
		scalar("run"), scalar(w.Run),
		scalar("watch"), flowList(w.Watch),
		scalar("env"), env,
	}}
}

package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine/internal/wildcard"

	"gopkg.in/yaml.v3"
)

// iii's own config format (iii v0.22):
//
//	workers:                     # or modules:, same entries
//	  - name: iii-http           # a built-in worker, or an external one
//	    config: {port: 3111}
//
// Parse reads it natively: every built-in worker name with every key of
// v0.22.1. Each worker is mapped onto our modules and engine settings; a key
// we read but do not implement becomes one Warning (logged at startup) that
// says what we do instead. The two formats never mix in one file.

// Format names which format a config file is written in.
const (
	FormatOwn = ""    // engine:, redis:, modules: with class:
	FormatIII = "iii" // workers: (or modules: with name:) as iii v0.22 has it
)

// iii's worker names.
const (
	iiiWorkerManager   = "iii-worker-manager"
	iiiEngineFunctions = "iii-engine-functions"
	iiiHTTP            = "iii-http"
	iiiStream          = "iii-stream"
	iiiState           = "iii-state"
	iiiPubSub          = "iii-pubsub"
	iiiQueue           = "iii-queue"
	iiiCron            = "iii-cron"
	iiiObservability   = "iii-observability"
	iiiTelemetry       = "iii-telemetry"
	iiiConfiguration   = "configuration"
	iiiHTTPFunctions   = "iii-http-functions"
	iiiExec            = "iii-exec"
	iiiBridge          = "iii-bridge"
)

// iiiDeprecated maps iii's deprecated short worker names to their current
// ones; a file may not list both spellings.
var iiiDeprecated = map[string]string{
	"http":   iiiHTTP,
	"cron":   iiiCron,
	"queue":  iiiQueue,
	"state":  iiiState,
	"pubsub": iiiPubSub,
}

// iiiBuiltins are the built-in worker names of iii v0.22.1 (current
// spellings).
var iiiBuiltins = []string{
	iiiWorkerManager, iiiEngineFunctions, iiiHTTP, iiiStream, iiiState, iiiPubSub, iiiQueue,
	iiiCron, iiiObservability, iiiTelemetry, iiiConfiguration, iiiHTTPFunctions, iiiExec, iiiBridge,
}

// iiiName returns the current spelling of a built-in worker name.
func iiiName(name string) (string, bool) {
	if n, ok := iiiDeprecated[name]; ok {
		return n, true
	}
	return name, slices.Contains(iiiBuiltins, name)
}

// Warning is a setting of an iii-format file that is read but not
// implemented, or implemented differently: what the file says and what the
// engine does instead. Parse collects them; LogWarnings logs each once.
type Warning struct {
	File string
	Line int
	Key  string // dotted path such as "workers[2].config.sampling"
	Msg  string
}

func (w Warning) String() string {
	return (&Error{File: w.File, Line: w.Line, Key: w.Key, Reason: w.Msg}).Error()
}

// LogWarnings logs every warning of the file once, at warn level.
func (c *Config) LogWarnings(log *slog.Logger) {
	for _, w := range c.Warnings {
		log.Warn("config: "+w.Msg, "file", w.File, "line", w.Line, "key", w.Key)
	}
}

// Listener is one iii-worker-manager entry: a worker WebSocket listener with
// its own access rules. The first one is also Engine.Host and Engine.Port.
type Listener struct {
	Line int // line of the entry
	Host string
	// HostSet is whether the file names the host; when it does not, Host is
	// our default, 127.0.0.1 (iii's default is 0.0.0.0).
	HostSet bool
	Port    int
	// MiddlewareFunctionID is called before every invocation arriving on
	// this listener; empty: none.
	MiddlewareFunctionID string
	// RBAC is nil when the entry has no rbac block.
	RBAC *RBAC
	// HandshakeTimeout is how long a connection may take to finish its
	// handshake (iii's default 10 s).
	HandshakeTimeout time.Duration
}

// DefaultHandshakeTimeout is iii's handshake_timeout_ms default.
const DefaultHandshakeTimeout = 10 * time.Second

// RBAC is a listener's access control (iii's rbac block).
type RBAC struct {
	AuthFunctionID                      string
	ExposeFunctions                     []FunctionFilter
	OnFunctionRegistrationFunctionID    string
	OnTriggerRegistrationFunctionID     string
	OnTriggerTypeRegistrationFunctionID string
}

// FunctionFilter is one expose_functions entry: either a function-id
// pattern (Match, from match("pattern") or {match: pattern}) or metadata
// conditions that must all hold, in one namespace.
type FunctionFilter struct {
	Match    string                     // wildcard pattern; empty for a metadata filter
	Metadata map[string]MetadataMatcher // nil for a match filter
	// Namespace is the one namespace the rule exposes functions in; ""
	// (the key omitted) is the default namespace, as in iii.
	Namespace string
}

// MetadataMatcher is one metadata condition: a wildcard pattern over a
// string value (from "match(\"pat\")"), or an exact JSON value.
type MetadataMatcher struct {
	Pattern   string
	IsPattern bool
	Value     any // the exact value (decoded YAML: string, bool, int, float64, nil, maps, lists)
}

// Matches reports whether a function with this id and metadata passes the
// filter.
func (f FunctionFilter) Matches(functionID string, metadata map[string]any) bool {
	if f.Metadata == nil {
		return wildcard.Match(f.Match, functionID)
	}
	if metadata == nil {
		return false
	}
	for k, m := range f.Metadata {
		v, ok := metadata[k]
		if !ok {
			return false
		}
		if m.IsPattern {
			s, ok := v.(string)
			if !ok || !wildcard.Match(m.Pattern, s) {
				return false
			}
			continue
		}
		if !jsonEqual(m.Value, v) {
			return false
		}
	}
	return true
}

// jsonEqual compares a YAML-decoded value with a JSON-decoded one: numbers
// compare by value whatever their Go type.
func jsonEqual(a, b any) bool {
	if fa, ok := number(a); ok {
		fb, ok := number(b)
		return ok && fa == fb
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for k, x := range av {
			if y, ok := bv[k]; !ok || !jsonEqual(x, y) {
				return false
			}
		}
		return true
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if !jsonEqual(av[i], bv[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// HTTPFunctions is the iii-http-functions worker's config: which URLs
// HTTP-invoked functions may call.
type HTTPFunctions struct {
	Line            int
	URLAllowlist    []string // default ["*"]
	BlockPrivateIPs bool     // default true
	RequireHTTPS    bool     // default true
}

// isIIIFormat tells the formats apart by the document's top-level keys:
// workers: is iii's; modules: whose entries all use name: (and no engine: or
// redis: beside it) is iii's unless a name is one only we accept. Mixing is
// reported by the parser of the format chosen.
func isIIIFormat(root *yaml.Node) bool {
	if root.Kind != yaml.MappingNode {
		return false
	}
	var modules *yaml.Node
	ours := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "workers", graceKey:
			return true
		case "engine", "redis":
			ours = true
		case "modules":
			modules = resolve(root.Content[i+1])
		}
	}
	if ours {
		return false
	}
	if modules == nil || modules.Kind != yaml.SequenceNode || len(modules.Content) == 0 {
		return false
	}
	for _, item := range modules.Content {
		item = resolve(item)
		if item.Kind != yaml.MappingNode {
			return false
		}
		name, hasName := "", false
		for i := 0; i+1 < len(item.Content); i += 2 {
			switch item.Content[i].Value {
			case "class":
				return false
			case "name":
				name, hasName = item.Content[i+1].Value, true
			}
		}
		if !hasName {
			return false
		}
		if _, ours := ModuleID(name); ours {
			if _, theirs := iiiName(name); !theirs {
				return false // a spelling only our format knows (exec, RestApiModule, ...)
			}
		}
	}
	return true
}

// iiiParser parses an iii-format document into a Config.
type iiiParser struct {
	d      decoder
	c      *Config
	stores []storeUse
	exec   []*yaml.Node   // the workers: items of the exec module
	execAt int            // index+1 of the exec module in c.Modules; 0: none
	seen   map[string]int // current worker name -> line, for repeats
	names  map[string]int // names as written -> line, for the deprecated check
}

// storeUse is what one adapter block asks of the store.
type storeUse struct {
	key  string // the adapter's path
	line int
	kind string // "redis", StoreMemory or StoreManaged
	url  string // redis
	dir  string // managed
}

func (p *iiiParser) warn(n *yaml.Node, key, format string, args ...any) {
	p.c.Warnings = append(p.c.Warnings, Warning{File: p.d.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (p *iiiParser) invalid(n *yaml.Node, key, format string, args ...any) error {
	return p.d.errorf(n, key, ErrConfigInvalid, format, args...)
}

func (p *iiiParser) unknown(k *yaml.Node, key string, known []string) error {
	return p.d.errorf(k, key, ErrConfigUnknownKey, "unknown key (known: %s)", strings.Join(known, ", "))
}

// graceKey is iii's top-level registration_namespace_grace_ms: how long
// iii holds a new connection's registrations while it waits for the
// engine::workers::register that names the connection's namespace.
const graceKey = "registration_namespace_grace_ms"

// grace checks registration_namespace_grace_ms (a number of milliseconds)
// and warns that this engine needs no grace period.
func (p *iiiParser) grace(k, v *yaml.Node) error {
	var ms int64
	if err := p.d.decode(v, graceKey, elemOf(&ms)); err != nil {
		return err
	}
	if ms < 0 {
		return p.invalid(v, graceKey, "want a number of milliseconds >= 0, got %d", ms)
	}
	p.warn(k, graceKey, "%s ignored: this engine holds no registrations back; a worker's registrations "+
		"apply at once and move into its namespace when engine::workers::register names it", graceKey)
	return nil
}

// parseIII fills c from an iii-format document root.
func parseIII(file string, root *yaml.Node, c *Config) error {
	p := &iiiParser{d: decoder{file: file}, c: c, seen: map[string]int{}, names: map[string]int{}}
	c.Format = FormatIII
	var lists [][2]*yaml.Node // key node, value node
	err := p.d.pairs(root, "", func(key string, k, v *yaml.Node) error {
		switch key {
		case "workers", "modules":
			lists = append(lists, [2]*yaml.Node{k, v})
			return nil
		case graceKey:
			return p.grace(k, v)
		case "engine", "redis":
			return p.d.errorf(k, key, ErrConfigMixedFormat,
				"%s: belongs to our own format, but this file is in iii's format (workers:, or modules: with name:); the two do not mix: %s",
				key, map[string]string{
					"engine": "set the worker listener with an iii-worker-manager entry (host, port)",
					"redis":  "name the store in the workers' adapter blocks ({name: redis, config: {redis_url: ...}})",
				}[key])
		}
		return p.unknown(k, key, []string{"workers", "modules", graceKey})
	})
	if err != nil {
		return err
	}
	for _, l := range lists {
		if err := p.entries(l[0].Value, l[1]); err != nil {
			return err
		}
	}
	if _, ok := c.Module(ModuleObservability); !ok {
		// iii-observability is always on in iii.
		c.Modules = append(c.Modules, Module{ID: ModuleObservability, file: file, path: "observability.config"})
	}
	if p.execAt > 0 {
		m := &c.Modules[p.execAt-1]
		m.Config = *mapping(m.Line, "workers", seq(m.Line, p.exec...))
	}
	p.resolveStore()
	if len(c.Listeners) > 0 {
		c.Engine.Host, c.Engine.Port = c.Listeners[0].Host, c.Listeners[0].Port
	}
	return nil
}

func (p *iiiParser) deprecatedPairs() error {
	for old, cur := range iiiDeprecated {
		lo, ok1 := p.names[old]
		lc, ok2 := p.names[cur]
		if ok1 && ok2 {
			return &Error{File: p.d.file, Line: max(lo, lc), Key: "workers",
				Reason: fmt.Sprintf("%q (line %d) is the deprecated name of %q (line %d) and both are listed; remove %q", old, lo, cur, lc, old),
				Kind:   ErrConfigDuplicateEntry}
		}
	}
	return nil
}

// entries parses one workers: or modules: list.
func (p *iiiParser) entries(list string, n *yaml.Node) error {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return p.d.typeError(n, list, "a list")
	}
	for i, item := range n.Content {
		item = resolve(item)
		path := fmt.Sprintf("%s[%d]", list, i)
		if item.Kind != yaml.MappingNode {
			if isNull(item) {
				return p.invalid(item, path, "empty entry: want {name: ..., config: ...}")
			}
			return p.d.typeError(item, path, "a mapping {name: ..., config: ...}")
		}
		var name, image, cfg *yaml.Node
		err := p.d.pairs(item, path, func(key string, k, v *yaml.Node) error {
			switch key {
			case "name":
				name = resolve(v)
			case "image":
				image = resolve(v)
			case "config":
				cfg = resolve(v)
			case "class":
				return p.d.errorf(k, path+".class", ErrConfigMixedFormat,
					"class: entries belong to our own format, but this file is in iii's format; the two do not mix (write name: %s-style worker names, or use class: in every entry without workers:)", iiiHTTP)
			default:
				p.warn(k, path+"."+key, "unknown entry key %q ignored (iii ignores it too)", key)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if name == nil {
			return p.invalid(item, path, "missing name")
		}
		if name.Kind != yaml.ScalarNode || name.ShortTag() != "!!str" || name.Value == "" {
			return p.d.typeError(name, path+".name", "a worker name")
		}
		if image != nil && !isNull(image) && (image.Kind != yaml.ScalarNode || image.ShortTag() != "!!str") {
			return p.d.typeError(image, path+".image", "a string")
		}
		if cfg != nil && isNull(cfg) {
			cfg = nil
		}
		if cfg != nil && cfg.Kind != yaml.MappingNode {
			return p.d.typeError(cfg, path+".config", "a mapping")
		}
		if err := p.worker(path, item, name, image, cfg); err != nil {
			return err
		}
	}
	return nil
}

func (p *iiiParser) worker(path string, item, nameNode, image, cfg *yaml.Node) error {
	written := nameNode.Value
	name, builtin := iiiName(written)
	if !builtin {
		if image != nil && !isNull(image) {
			p.warn(nameNode, path+".name", "worker %q runs from OCI image %s in iii; this engine does not run images: start it yourself and point it at the engine (III_URL)", written, image.Value)
		} else {
			p.warn(nameNode, path+".name", "%q is not a built-in worker; iii would run it as an external worker binary, this engine does not manage it: start it yourself and point it at the engine (III_URL)", written)
		}
		return nil
	}
	if image != nil && !isNull(image) {
		return p.invalid(image, path+".image", "%q is a built-in worker and takes no image (remove image, or use a different name)", written)
	}
	if _, ok := p.names[written]; !ok {
		p.names[written] = nameNode.Line
	}
	if err := p.deprecatedPairs(); err != nil {
		return err
	}
	if first, dup := p.seen[name]; dup && name != iiiWorkerManager && name != iiiExec {
		return &Error{File: p.d.file, Line: nameNode.Line, Key: path + ".name",
			Reason: fmt.Sprintf("%s is already listed on line %d; several instances of one worker are not supported (only %s and %s may repeat)", written, first, iiiWorkerManager, iiiExec),
			Kind:   ErrConfigDuplicateEntry}
	}
	p.seen[name] = nameNode.Line
	cpath := path + ".config"
	if cfg == nil {
		cfg = &yaml.Node{Kind: yaml.MappingNode, Line: item.Line}
	}
	w := &iiiWorker{p: p, name: written, path: cpath, line: item.Line, cfg: cfg}
	switch name {
	case iiiWorkerManager:
		return p.workerManager(w)
	case iiiHTTP:
		return w.module(ModuleHTTP, iiiKeys{
			"port": pass, "host": pass, "default_timeout": pass, "concurrency_request_limit": pass,
			"cors": pass, "middleware": pass,
		})
	case iiiStream:
		return w.module(ModuleStream, iiiKeys{
			"port": pass, "host": pass, "auth_function": pass,
			"adapter": w.adapter(map[string][]string{
				"kv":     {"store_method", "file_path", "save_interval_ms", "channel_size"},
				"redis":  {"redis_url"},
				"bridge": {"bridge_url"},
			}, "kv"),
		})
	case iiiState:
		return w.module(ModuleState, iiiKeys{
			"triggers_enabled": pass, "max_value_bytes": pass,
			"save_interval_ms": w.warnKey(yaml.ScalarNode, "the store persists on its own schedule (the managed redis-server's, or redis's)"),
			"adapter": w.adapter(map[string][]string{
				"kv":     {"store_method", "file_path", "save_interval_ms"},
				"redis":  {"redis_url"},
				"bridge": {"bridge_url"},
			}, "kv"),
		})
	case iiiPubSub:
		return w.module(ModulePubSub, iiiKeys{
			"adapter": w.adapter(map[string][]string{"local": {}, "redis": {"redis_url"}}, "local"),
		})
	case iiiCron:
		return w.module(ModuleCron, iiiKeys{
			"adapter": w.adapter(map[string][]string{
				"kv":    {"lock_ttl_ms", "lock_index", "store_method", "file_path", "save_interval_ms"},
				"redis": {"redis_url"},
			}, "kv"),
		})
	case iiiQueue:
		return w.module(ModuleQueue, iiiKeys{
			"queue_configs": w.queueConfigs,
			"adapter": w.adapter(map[string][]string{
				"builtin":  {"store_method", "file_path", "save_interval_ms"},
				"redis":    {"redis_url"},
				"bridge":   {"bridge_url"},
				"rabbitmq": {"amqp_url", "max_attempts", "prefetch_count", "queue_mode", "priority_field"},
			}, "builtin"),
		})
	case iiiObservability:
		return w.module(ModuleObservability, observabilityKeys(w))
	case iiiExec:
		return p.execWorker(w)
	case iiiHTTPFunctions:
		return p.httpFunctions(w)
	case iiiBridge:
		return w.module("bridge", iiiKeys{"url": pass, "expose": pass, "forward": pass})
	case iiiEngineFunctions:
		return w.ignoreAll("", nil)
	case iiiTelemetry:
		return w.ignoreAll("this engine sends no usage telemetry", map[string]yaml.Kind{
			"enabled": yaml.ScalarNode, "sdk_api_key": yaml.ScalarNode, "posthog_api_key": yaml.ScalarNode,
			"posthog_host": yaml.ScalarNode, "heartbeat_interval_secs": yaml.ScalarNode,
		})
	case iiiConfiguration:
		// The configuration::* functions are always on; their entries live
		// in memory (configuration.go).
		return w.ignoreAll("this engine keeps configuration entries in memory (no fs adapter, no TTL cleanup)", map[string]yaml.Kind{
			"adapter": yaml.MappingNode, "ttl_seconds": yaml.ScalarNode,
		})
	}
	return fmt.Errorf("config: iii worker %s has no mapping", name) // unreachable: every built-in is above
}

// iiiWorker is one built-in worker entry being mapped.
type iiiWorker struct {
	p    *iiiParser
	name string // as written
	path string // of its config
	line int
	cfg  *yaml.Node
	out  []*yaml.Node // the module config's key/value nodes

	defStore   string // store kind of the default adapter; "" without one
	sawAdapter bool
}

// iiiKey handles one key of a worker's config.
type iiiKey func(w *iiiWorker, k, v *yaml.Node) error

type iiiKeys map[string]iiiKey

// pass hands the key to our module unchanged (same name, same meaning).
func pass(w *iiiWorker, k, v *yaml.Node) error {
	w.out = append(w.out, k, v)
	return nil
}

func (ks iiiKeys) names() []string {
	var out []string
	for k := range ks {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// walk checks the config's keys against ks (iii's deny_unknown_fields).
func (w *iiiWorker) walk(n *yaml.Node, path string, ks iiiKeys) error {
	return w.p.d.pairs(n, path, func(key string, k, v *yaml.Node) error {
		h, ok := ks[key]
		if !ok {
			return w.p.unknown(k, join(path, key), ks.names())
		}
		if isNull(resolve(v)) {
			return nil
		}
		return h(w, k, resolve(v))
	})
}

// module maps the worker onto one of our modules.
func (w *iiiWorker) module(id string, ks iiiKeys) error {
	if err := w.walk(w.cfg, w.path, ks); err != nil {
		return err
	}
	if w.defStore != "" && !w.sawAdapter {
		w.p.stores = append(w.p.stores, storeUse{key: join(w.path, "adapter"), line: w.line, kind: w.defStore})
	}
	m := Module{ID: id, Class: w.name, Line: w.line, file: w.p.d.file, path: w.path}
	if len(w.out) > 0 {
		m.Config = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: w.cfg.Line, Column: w.cfg.Column, Content: w.out}
	}
	w.p.c.Modules = append(w.p.c.Modules, m)
	return nil
}

// warnKey accepts a key of the given YAML kind and warns that it is not
// implemented.
func (w *iiiWorker) warnKey(kind yaml.Kind, instead string) iiiKey {
	return func(w *iiiWorker, k, v *yaml.Node) error {
		if v.Kind != kind {
			return w.p.d.typeError(v, join(w.path, k.Value), kindName(kind))
		}
		w.p.warn(k, join(w.path, k.Value), "%s: %s is not implemented: %s", w.name, k.Value, instead)
		return nil
	}
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a scalar"
}

// ignoreAll accepts the given keys (of the given kinds) and warns once for
// the worker when any is set.
func (w *iiiWorker) ignoreAll(instead string, keys map[string]yaml.Kind) error {
	var set []string
	var first *yaml.Node
	err := w.p.d.pairs(w.cfg, w.path, func(key string, k, v *yaml.Node) error {
		kind, ok := keys[key]
		if !ok {
			var known []string
			for k := range keys {
				known = append(known, k)
			}
			sort.Strings(known)
			if len(known) == 0 {
				return w.p.d.errorf(k, join(w.path, key), ErrConfigUnknownKey, "unknown key (%s takes no config)", w.name)
			}
			return w.p.unknown(k, join(w.path, key), known)
		}
		if v = resolve(v); !isNull(v) && v.Kind != kind {
			return w.p.d.typeError(v, join(w.path, key), kindName(kind))
		}
		if first == nil {
			first = k
		}
		set = append(set, key)
		return nil
	})
	if err != nil || len(set) == 0 {
		return err
	}
	if len(set) == 1 && set[0] == "enabled" && w.name == iiiTelemetry {
		return nil // enabled: whatever it says, nothing is sent
	}
	w.p.warn(first, w.path, "%s: %s; %s ignored", w.name, instead, strings.Join(set, ", "))
	return nil
}

// adapter handles an adapter: {name, config} block. kinds maps each adapter
// name iii accepts to its config keys; def is the adapter used when the
// block is absent.
func (w *iiiWorker) adapter(kinds map[string][]string, def string) iiiKey {
	// Without a block the default adapter is a use of the store too; module
	// records it after the walk.
	w.defStore = defaultStore(def)
	return func(w *iiiWorker, k, v *yaml.Node) error {
		path := join(w.path, "adapter")
		w.sawAdapter = true
		if v.Kind != yaml.MappingNode {
			return w.p.d.typeError(v, path, "a mapping {name: ..., config: ...}")
		}
		var name, cfg *yaml.Node
		err := w.p.d.pairs(v, path, func(key string, k, v *yaml.Node) error {
			switch key {
			case "name":
				name = resolve(v)
			case "config":
				cfg = resolve(v)
			case "class":
				return w.p.d.errorf(k, path+".class", ErrConfigMixedFormat, "adapter class: is the pre-0.11 form; iii v0.22 names adapters with name: (kv, redis, ...)")
			default:
				return w.p.unknown(k, join(path, key), []string{"name", "config"})
			}
			return nil
		})
		if err != nil {
			return err
		}
		if name == nil {
			return w.p.invalid(v, path, "missing name (one of %s)", strings.Join(sortedKeys(kinds), ", "))
		}
		if name.Kind != yaml.ScalarNode {
			return w.p.d.typeError(name, path+".name", "an adapter name")
		}
		keys, ok := kinds[name.Value]
		if !ok {
			return w.p.invalid(name, path+".name", "unknown adapter %q for %s (known: %s)", name.Value, w.name, strings.Join(sortedKeys(kinds), ", "))
		}
		vals := map[string]*yaml.Node{}
		if cfg != nil && !isNull(cfg) {
			if cfg.Kind != yaml.MappingNode {
				return w.p.d.typeError(cfg, path+".config", "a mapping")
			}
			err := w.p.d.pairs(cfg, path+".config", func(key string, k, v *yaml.Node) error {
				if !slices.Contains(keys, key) {
					if len(keys) == 0 {
						return w.p.d.errorf(k, path+".config."+key, ErrConfigUnknownKey, "unknown key (adapter %s takes no config)", name.Value)
					}
					return w.p.unknown(k, path+".config."+key, keys)
				}
				v = resolve(v)
				if !isNull(v) && v.Kind != yaml.ScalarNode {
					return w.p.d.typeError(v, path+".config."+key, "a scalar")
				}
				vals[key] = v
				return nil
			})
			if err != nil {
				return err
			}
		}
		return w.adapterUse(path, name, vals)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func defaultStore(adapter string) string {
	if adapter == "local" {
		return ""
	}
	return StoreMemory // kv and builtin default to in_memory
}

func (w *iiiWorker) adapterUse(path string, name *yaml.Node, vals map[string]*yaml.Node) error {
	p := w.p
	str := func(key string) (string, *yaml.Node) {
		if v := vals[key]; v != nil && !isNull(v) {
			return v.Value, v
		}
		return "", nil
	}
	use := storeUse{key: path, line: name.Line}
	switch name.Value {
	case "bridge":
		if w.name != iiiState && w.name != iiiStream {
			return p.invalid(name, path+".name", "the bridge adapter (keeping %s's data in a remote iii engine) is supported by this engine only for %s and %s; use another adapter", w.name, iiiState, iiiStream)
		}
		u, n := str("bridge_url")
		if n == nil {
			u = "ws://localhost:49134" // iii's default
			n = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: u, Line: name.Line, Column: name.Column}
		} else if err := checkWebSocketURL(u); err != nil {
			return p.invalid(n, path+".config.bridge_url", "%v", err)
		}
		// The module calls that engine's functions; its own store is not used.
		w.out = append(w.out, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "bridge_url", Line: n.Line, Column: n.Column},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: u, Line: n.Line, Column: n.Column})
		return nil
	case "local":
		return nil
	case "redis":
		u, n := str("redis_url")
		if n == nil {
			u = "redis://localhost:6379" // iii's default
		} else if err := checkRedisURL(u); err != nil {
			return p.invalid(n, path+".config.redis_url", "%v", err)
		}
		use.kind, use.url = "redis", u
	case "rabbitmq":
		p.warn(name, path+".name", "%s: the rabbitmq adapter is not implemented: queues are kept in the engine's store (durable redis streams) instead", w.name)
		use.kind = StoreMemory
	case "kv", "builtin":
		method, n := str("store_method")
		switch method {
		case "", "in_memory":
			use.kind = StoreMemory
		case "file_based":
			fp, _ := str("file_path")
			if fp == "" {
				fp = "kv_store_data.db" // iii's default
			}
			use.kind, use.dir = StoreManaged, filepath.Dir(fp)
		default:
			return p.invalid(n, path+".config.store_method", "unknown store_method %q (known: in_memory, file_based)", method)
		}
		for _, key := range []string{"save_interval_ms", "channel_size", "lock_index"} {
			if _, n := str(key); n != nil {
				p.warn(n, path+".config."+key, "%s: adapter key %s is not implemented: the engine's store handles it on its own", w.name, key)
			}
		}
		if _, n := str("lock_ttl_ms"); n != nil {
			if n.ShortTag() != "!!int" {
				return p.d.typeError(n, path+".config.lock_ttl_ms", "an integer")
			}
			w.out = append(w.out, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "lock_ttl_ms", Line: n.Line, Column: n.Column}, n)
		}
	}
	p.stores = append(p.stores, use)
	return nil
}

// resolveStore settles the one store all modules share. A redis adapter
// anywhere wins (the first URL in the file); otherwise a file_based kv
// makes the managed store, in the directory of the first file_path;
// otherwise in_memory kv makes the memory store. Every adapter that asked
// for something else gets a warning naming what it gets.
func (p *iiiParser) resolveStore() {
	var chosen *storeUse
	for _, kind := range []string{"redis", StoreManaged, StoreMemory} {
		for i := range p.stores {
			if p.stores[i].kind == kind {
				chosen = &p.stores[i]
				break
			}
		}
		if chosen != nil {
			break
		}
	}
	if chosen == nil {
		return
	}
	describe := func(u storeUse) string {
		switch u.kind {
		case "redis":
			return "redis at " + redactURL(u.url)
		case StoreManaged:
			return "the managed store (a redis-server persisting under " + u.dir + ")"
		}
		return "the in-memory store (lost on exit)"
	}
	switch chosen.kind {
	case "redis":
		p.c.Redis.URL = chosen.url
	case StoreManaged:
		p.c.Redis.Store, p.c.Redis.DataDir = StoreManaged, chosen.dir
	default:
		p.c.Redis.Store = StoreMemory
	}
	for _, u := range p.stores {
		if u.kind == "" || (u.kind == chosen.kind && u.url == chosen.url && u.dir == chosen.dir) {
			continue
		}
		p.c.Warnings = append(p.c.Warnings, Warning{File: p.d.file, Line: u.line, Key: u.key,
			Msg: fmt.Sprintf("this engine keeps all workers' data in one store: this adapter asks for %s, but %s is used, as %s (line %d) asks",
				describe(u), describe(*chosen), chosen.key, chosen.line)})
	}
}

func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

func checkWebSocketURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("want a ws:// or wss:// URL of an engine's worker port, got %q", raw)
	}
	return nil
}

func checkRedisURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
		return fmt.Errorf("want a redis://, rediss:// or unix:// URL")
	}
	return nil
}

// queueConfigs keeps iii's per-queue keys our queue module implements and
// warns about the others.
func (w *iiiWorker) queueConfigs(_ *iiiWorker, k, v *yaml.Node) error {
	path := join(w.path, "queue_configs")
	if v.Kind != yaml.MappingNode {
		return w.p.d.typeError(v, path, "a mapping of queue name to settings")
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: v.Line, Column: v.Column}
	queueKeys := iiiKeys{
		"max_retries": pass, "concurrency": pass, "type": pass, "message_group_field": pass,
		"backoff_ms": pass, "poll_interval_ms": pass,
		"max_priority":   w.warnKey(yaml.ScalarNode, "messages are delivered in arrival order"),
		"priority_field": w.warnKey(yaml.ScalarNode, "messages are delivered in arrival order"),
	}
	err := w.p.d.pairs(v, path, func(name string, qk, qv *yaml.Node) error {
		qv = resolve(qv)
		qpath := join(path, name)
		if isNull(qv) {
			out.Content = append(out.Content, qk, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: qv.Line})
			return nil
		}
		if qv.Kind != yaml.MappingNode {
			return w.p.d.typeError(qv, qpath, "a mapping")
		}
		sub := &iiiWorker{p: w.p, name: w.name, path: qpath, line: w.line}
		if err := sub.walk(qv, qpath, queueKeys); err != nil {
			return err
		}
		out.Content = append(out.Content, qk, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: qv.Line, Column: qv.Column, Content: sub.out})
		return nil
	})
	if err != nil {
		return err
	}
	w.out = append(w.out, k, out)
	return nil
}

func observabilityKeys(w *iiiWorker) iiiKeys {
	ks := iiiKeys{}
	for _, k := range []string{"enabled", "service_name", "service_version", "service_namespace", "exporter",
		"endpoint", "sampling_ratio", "memory_max_spans", "metrics_enabled", "metrics_max_count",
		"logs_enabled", "logs_max_count", "logs_batch_size", "logs_flush_interval_ms"} {
		ks[k] = pass
	}
	ks["sampling"] = w.warnKey(yaml.MappingNode, "traces are sampled by sampling_ratio alone (no rules, no rate limit)")
	ks["live_spans"] = w.warnKey(yaml.ScalarNode, "spans are stored when they end")
	ks["metrics_retention_seconds"] = w.warnKey(yaml.ScalarNode, "worker metrics are kept up to metrics_max_count points")
	ks["logs_retention_seconds"] = w.warnKey(yaml.ScalarNode, "logs are kept up to logs_max_count records")
	ks["alerts"] = w.warnKey(yaml.SequenceNode, "no metric alerts are evaluated; use Prometheus (/metrics on 127.0.0.1:9464) and its alerting")
	ks["level"] = w.warnKey(yaml.ScalarNode, "the engine's log level comes from the command line (--log-level)")
	ks["format"] = w.warnKey(yaml.ScalarNode, "the engine's log format is fixed by the command")
	ks["collapse_spans"] = w.warnKey(yaml.SequenceNode, "every span is kept as it is")
	ks["metrics_exporter"] = func(w *iiiWorker, k, v *yaml.Node) error {
		if v.Kind != yaml.ScalarNode || (v.Value != "memory" && v.Value != "otlp") {
			return w.p.invalid(v, join(w.path, k.Value), "want memory or otlp, got %s", describe(v))
		}
		if v.Value == "otlp" {
			w.p.warn(k, join(w.path, k.Value), "%s: metrics_exporter otlp is not implemented: metrics are kept in memory and served to Prometheus on /metrics", w.name)
		}
		return nil
	}
	ks["logs_exporter"] = func(w *iiiWorker, k, v *yaml.Node) error {
		if v.Kind != yaml.ScalarNode || (v.Value != "memory" && v.Value != "otlp" && v.Value != "both") {
			return w.p.invalid(v, join(w.path, k.Value), "want memory, otlp or both, got %s", describe(v))
		}
		exporter := "memory" // iii's default
		for i := 0; i+1 < len(w.cfg.Content); i += 2 {
			if w.cfg.Content[i].Value == "exporter" {
				exporter = resolve(w.cfg.Content[i+1]).Value
			}
		}
		if v.Value != exporter {
			w.p.warn(k, join(w.path, k.Value), "%s: a logs_exporter other than exporter is not implemented: logs are exported as exporter (%s) says, with the spans", w.name, exporter)
		}
		return nil
	}
	ks["logs_sampling_ratio"] = func(w *iiiWorker, k, v *yaml.Node) error {
		var f float64
		if v.Kind != yaml.ScalarNode || v.Decode(&f) != nil || (v.ShortTag() != "!!float" && v.ShortTag() != "!!int") {
			return w.p.d.typeError(v, join(w.path, k.Value), "a number")
		}
		if f != 1 {
			w.p.warn(k, join(w.path, k.Value), "%s: logs_sampling_ratio is not implemented: every log record is kept", w.name)
		}
		return nil
	}
	ks["logs_console_output"] = func(w *iiiWorker, k, v *yaml.Node) error {
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
			return w.p.d.typeError(v, join(w.path, k.Value), "a boolean")
		}
		w.p.warn(k, join(w.path, k.Value), "%s: logs_console_output is not implemented: worker logs are shown by iii dev's workbench and engine::logs::list, not echoed by iii start", w.name)
		return nil
	}
	return ks
}

// workerManager parses an iii-worker-manager entry into a Listener.
func (p *iiiParser) workerManager(w *iiiWorker) error {
	l := Listener{Line: w.line, Host: DefaultHost, Port: DefaultPort, HandshakeTimeout: DefaultHandshakeTimeout}
	ks := iiiKeys{
		"host": func(w *iiiWorker, k, v *yaml.Node) error {
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
				return p.d.typeError(v, join(w.path, "host"), "a string")
			}
			if err := checkHost(v.Value); err != nil {
				return p.invalid(v, join(w.path, "host"), "%v", err)
			}
			l.Host, l.HostSet = v.Value, true
			return nil
		},
		"port": func(w *iiiWorker, k, v *yaml.Node) error {
			var port int
			if err := p.d.decode(v, join(w.path, "port"), elemOf(&port)); err != nil {
				return err
			}
			if port < 0 || port > 65535 {
				return p.invalid(v, join(w.path, "port"), "%d is out of range 0-65535", port)
			}
			l.Port = port
			return nil
		},
		"middleware_function_id": func(w *iiiWorker, k, v *yaml.Node) error {
			return p.d.decode(v, join(w.path, k.Value), elemOf(&l.MiddlewareFunctionID))
		},
		"handshake_timeout_ms": func(w *iiiWorker, k, v *yaml.Node) error {
			var ms uint64
			if err := p.d.decode(v, join(w.path, k.Value), elemOf(&ms)); err != nil {
				return err
			}
			if ms == 0 || ms > uint64(time.Duration(1<<63-1)/time.Millisecond) {
				return p.invalid(v, join(w.path, k.Value), "%d must be a positive number of milliseconds", ms)
			}
			l.HandshakeTimeout = time.Duration(ms) * time.Millisecond
			return nil
		},
		"rbac": func(w *iiiWorker, k, v *yaml.Node) error {
			r, err := p.rbac(join(w.path, "rbac"), v)
			l.RBAC = r
			return err
		},
	}
	if err := w.walk(w.cfg, w.path, ks); err != nil {
		return err
	}
	for _, other := range p.c.Listeners {
		if other.Port == l.Port && l.Port != 0 && (other.Host == l.Host || other.Host == "0.0.0.0" || l.Host == "0.0.0.0") {
			return p.invalid(w.cfg, w.path, "listener %s:%d is the same port as the %s entry on line %d", l.Host, l.Port, iiiWorkerManager, other.Line)
		}
	}
	p.c.Listeners = append(p.c.Listeners, l)
	return nil
}

// checkHost accepts a host name or IP address without scheme or port.
func checkHost(h string) error {
	switch {
	case h == "":
		return fmt.Errorf("must not be empty")
	case strings.ContainsAny(h, "/ \t[]") || (strings.Contains(h, ":") && net.ParseIP(h) == nil):
		return fmt.Errorf("%q is not a host name or IP address (no scheme, no port)", h)
	}
	return nil
}

func (p *iiiParser) rbac(path string, n *yaml.Node) (*RBAC, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.d.typeError(n, path, "a mapping")
	}
	r := &RBAC{}
	strs := map[string]*string{
		"auth_function_id":                         &r.AuthFunctionID,
		"on_function_registration_function_id":     &r.OnFunctionRegistrationFunctionID,
		"on_trigger_registration_function_id":      &r.OnTriggerRegistrationFunctionID,
		"on_trigger_type_registration_function_id": &r.OnTriggerTypeRegistrationFunctionID,
	}
	err := p.d.pairs(n, path, func(key string, k, v *yaml.Node) error {
		if s, ok := strs[key]; ok {
			return p.d.decode(v, join(path, key), elemOf(s))
		}
		if key != "expose_functions" {
			// iii's rbac block ignores unknown keys; say so.
			p.warn(k, join(path, key), "unknown rbac key %q ignored (iii ignores it too)", key)
			return nil
		}
		v = resolve(v)
		if isNull(v) {
			return nil
		}
		if v.Kind != yaml.SequenceNode {
			return p.d.typeError(v, join(path, key), "a list")
		}
		for i, item := range v.Content {
			f, err := p.filter(fmt.Sprintf("%s.%s[%d]", path, key, i), resolve(item))
			if err != nil {
				return err
			}
			r.ExposeFunctions = append(r.ExposeFunctions, f)
		}
		return nil
	})
	return r, err
}

// matchPattern unwraps match("pat") or match('pat').
func matchPattern(s string) (string, bool) {
	t := strings.TrimSpace(s)
	if (strings.HasPrefix(t, `match("`) && strings.HasSuffix(t, `")`)) ||
		(strings.HasPrefix(t, `match('`) && strings.HasSuffix(t, `')`)) {
		if len(t) >= 9 {
			return t[7 : len(t)-2], true
		}
	}
	return "", false
}

func (p *iiiParser) filter(path string, n *yaml.Node) (FunctionFilter, error) {
	const want = `match("pattern"), {match: pattern} or {metadata: {...}}, each map with an optional namespace`
	switch n.Kind {
	case yaml.ScalarNode:
		pat, ok := matchPattern(n.Value)
		if !ok || n.ShortTag() != "!!str" {
			return FunctionFilter{}, p.invalid(n, path, "want %s, got %s", want, describe(n))
		}
		return FunctionFilter{Match: pat}, nil
	case yaml.MappingNode:
		var (
			f        FunctionFilter
			hasMatch bool
		)
		err := p.d.pairs(n, path, func(key string, k, v *yaml.Node) error {
			v = resolve(v)
			switch key {
			case "match":
				if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" || strings.TrimSpace(v.Value) == "" {
					return p.invalid(v, join(path, key), "want a function id pattern such as \"orders::*\", got %s", describe(v))
				}
				f.Match, hasMatch = v.Value, true
				if pat, ok := matchPattern(v.Value); ok {
					f.Match = pat // match("...") spelled inside the map form
				}
				return nil
			case "namespace":
				if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" || strings.TrimSpace(v.Value) == "" {
					return p.invalid(v, join(path, key), "want a namespace name (omit the key for the default namespace), got %s", describe(v))
				}
				f.Namespace = strings.TrimSpace(v.Value)
				return nil
			case "metadata":
			default:
				// A typo (namesapce) would silently scope the rule to the
				// default namespace: refuse it, as iii does.
				return p.invalid(k, join(path, key), "unknown expose_functions filter key %q; want match, metadata or namespace", key)
			}
			if v.Kind != yaml.MappingNode {
				return p.d.typeError(v, join(path, key), "a mapping of metadata key to value")
			}
			if f.Metadata == nil {
				f.Metadata = map[string]MetadataMatcher{}
			}
			return p.d.pairs(v, join(path, key), func(mk string, _, mv *yaml.Node) error {
				var val any
				if err := mv.Decode(&val); err != nil {
					return p.invalid(mv, join(path, "metadata."+mk), "%v", err)
				}
				if s, ok := val.(string); ok {
					if pat, ok := matchPattern(s); ok {
						f.Metadata[mk] = MetadataMatcher{Pattern: pat, IsPattern: true}
						return nil
					}
				}
				f.Metadata[mk] = MetadataMatcher{Value: val}
				return nil
			})
		})
		if err != nil {
			return f, err
		}
		switch {
		case hasMatch && f.Metadata != nil:
			return f, p.invalid(n, path, "a filter has either a match or a metadata key, not both")
		case !hasMatch && len(f.Metadata) == 0:
			return f, p.invalid(n, path, "want a match: pattern or a metadata: mapping with filter conditions")
		}
		return f, nil
	}
	return FunctionFilter{}, p.d.typeError(n, path, want)
}

// execWorker turns an iii-exec entry into one process of our exec module:
// every command but the last is an install step, the last is the process.
func (p *iiiParser) execWorker(w *iiiWorker) error {
	var cmds, watch *yaml.Node
	ks := iiiKeys{
		"exec":  func(_ *iiiWorker, _, v *yaml.Node) error { cmds = v; return nil },
		"watch": func(_ *iiiWorker, _, v *yaml.Node) error { watch = v; return nil },
	}
	if err := w.walk(w.cfg, w.path, ks); err != nil {
		return err
	}
	if cmds == nil {
		return p.invalid(w.cfg, join(w.path, "exec"), "missing exec: the list of commands to run")
	}
	for key, n := range map[string]*yaml.Node{"exec": cmds, "watch": watch} {
		if n == nil {
			continue
		}
		var list []string
		if err := p.d.decode(n, join(w.path, key), elemOf(&list)); err != nil {
			return err
		}
		if key == "exec" && len(list) == 0 {
			return p.invalid(n, join(w.path, key), "must list at least one command")
		}
	}
	if p.execAt == 0 {
		p.c.Modules = append(p.c.Modules, Module{ID: ModuleExec, Class: w.name, Line: w.line, file: p.d.file, path: "exec.config"})
		p.execAt = len(p.c.Modules)
	}
	name := "exec"
	if n := len(p.exec); n > 0 {
		name = "exec-" + strconv.Itoa(n+1)
	}
	last := cmds.Content[len(cmds.Content)-1]
	entry := mapping(w.line,
		"name", scalar(w.line, name),
		"dir", scalar(w.line, "."),
		"install", seq(cmds.Line, cmds.Content[:len(cmds.Content)-1]...),
		"run", last)
	if watch != nil {
		entry.Content = append(entry.Content, scalar(watch.Line, "watch"), watch)
	}
	p.exec = append(p.exec, entry)
	return nil
}

func (p *iiiParser) httpFunctions(w *iiiWorker) error {
	hf := &HTTPFunctions{Line: w.line, URLAllowlist: []string{"*"}, BlockPrivateIPs: true, RequireHTTPS: true}
	ks := iiiKeys{"security": func(w *iiiWorker, k, v *yaml.Node) error {
		var s struct {
			URLAllowlist    *[]string `yaml:"url_allowlist"`
			BlockPrivateIPs *bool     `yaml:"block_private_ips"`
			RequireHTTPS    *bool     `yaml:"require_https"`
		}
		if err := p.d.decode(v, join(w.path, "security"), elemOf(&s)); err != nil {
			return err
		}
		if s.URLAllowlist != nil {
			hf.URLAllowlist = *s.URLAllowlist
		}
		if s.BlockPrivateIPs != nil {
			hf.BlockPrivateIPs = *s.BlockPrivateIPs
		}
		if s.RequireHTTPS != nil {
			hf.RequireHTTPS = *s.RequireHTTPS
		}
		return nil
	}}
	if err := w.walk(w.cfg, w.path, ks); err != nil {
		return err
	}
	p.c.HTTPFunctions = hf
	return nil
}

// Node builders for the module configs the mapping synthesises; lines point
// back into the file so module errors name the right line.

func scalar(line int, v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Line: line}
}

func seq(line int, items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: line, Content: items}
}

// mapping builds a mapping from alternating keys (strings) and values
// (nodes).
func mapping(line int, kv ...any) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
	for i := 0; i+1 < len(kv); i += 2 {
		n.Content = append(n.Content, scalar(line, kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return n
}

// IsIIIDocument reports whether a parsed config file's top-level node is
// in iii's format (see Parse), for tools that edit config files.
func IsIIIDocument(root *yaml.Node) bool { return isIIIFormat(resolve(root)) }

// Package config loads the engine's config.yaml.
//
// The file has three top-level keys, all optional:
//
//	engine:
//	  host: 127.0.0.1               # worker WebSocket host
//	  port: 49134                   # worker WebSocket port (0: any free port)
//	  auth_token: ${III_TOKEN:}     # shared worker token; empty = no auth
//	  invocation_timeout_ms: 300000 # engine-side leak guard per call
//	  max_frame_bytes: 67108864     # read limit per message (at most 268435456)
//	  shared_functions: false       # let 0.25+ workers share a function id in a namespace
//	redis:
//	  url: ""                       # empty = embedded store
//	  store: managed                # without url: memory or managed (default: by command)
//	  data_dir: .iii/data           # managed store files, relative to this file
//	modules:                        # which modules run, each with its own config
//	  - class: RestApiModule        # or name:, any spelling ModuleID accepts
//	    config: {port: 3111}
//
// ${VAR} and ${VAR:default} are replaced in the raw text before parsing.
// Decoding is strict: an unknown key, a value of the wrong type or an invalid
// value fails with an *Error naming file, line and key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults.
const (
	DefaultPath              = "config.yaml"
	DefaultHost              = "127.0.0.1"
	DefaultPort              = 49134
	DefaultInvocationTimeout = 5 * time.Minute
	DefaultMaxFrameBytes     = 64 << 20
	MaxFrameBytesLimit       = 256 << 20
)

// EnvToken is the environment variable that sets (and overrides) the worker
// auth token; see Config.ApplyEnv.
const EnvToken = "III_TOKEN"

// Errors. Every error from Parse and Load is an *Error that unwraps to one of
// these; match with errors.Is.
var (
	ErrConfigSyntax         = errors.New("config: invalid YAML")
	ErrConfigUnknownKey     = errors.New("config: unknown key")
	ErrConfigType           = errors.New("config: wrong type")
	ErrConfigInvalid        = errors.New("config: invalid value")
	ErrConfigUnsetVariable  = errors.New("config: unset environment variable")
	ErrConfigUnknownModule  = errors.New("config: unknown module class")
	ErrConfigDuplicateEntry = errors.New("config: module listed twice")
	ErrConfigMixedFormat    = errors.New("config: our format and iii's mixed in one file")
)

// Error locates a problem in a config file.
type Error struct {
	File   string
	Line   int    // 1-based; 0 when not known
	Key    string // dotted path such as "engine.port" or "modules[1].class"; may be empty
	Reason string
	Kind   error // one of the ErrConfig* sentinels
}

// Error formats as "file:line: key: reason".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns the error's kind.
func (e *Error) Unwrap() error { return e.Kind }

// Secret is a string that never appears in logs or formatted output.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Config is a loaded config.yaml, or the defaults.
type Config struct {
	// File is the config file used; empty when the config is Default().
	File    string
	Engine  Engine
	Redis   Redis
	Modules []Module

	// Format is FormatOwn or FormatIII (see iii.go); the fields below are
	// filled from iii-format files only.
	Format string
	// Listeners are the iii-worker-manager entries, in file order; the
	// first is also Engine.Host and Engine.Port.
	Listeners []Listener
	// HTTPFunctions is the iii-http-functions entry; nil without one.
	HTTPFunctions *HTTPFunctions
	// Warnings are the settings read but not implemented as written; log
	// them once at startup with LogWarnings.
	Warnings []Warning
	// Cluster is nil unless config.yaml has a cluster: section.
	Cluster *Cluster
}

// Engine holds the worker-facing listener settings.
type Engine struct {
	Host              string
	Port              int // 0 picks a free port
	AuthToken         Secret
	InvocationTimeout time.Duration
	MaxFrameBytes     int64
	// SharedFunctions: several live workers may serve one function id in a
	// namespace, also workers of the 0.25+ SDKs (otherwise refused with
	// FUNCTION_NAMESPACE_CONFLICT).
	SharedFunctions bool
}

// Addr is the host:port to listen on.
func (e Engine) Addr() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// Redis selects the store behind the queue, pub/sub, state and stream
// modules.
type Redis struct {
	// URL is redis://, rediss:// or unix://; empty runs an embedded store.
	URL string
	// Store chooses the embedded store when URL is empty: StoreMemory (an
	// in-process store, lost on exit) or StoreManaged (a redis-server the
	// engine starts and owns, persisting under DataDir). Empty lets the
	// command decide: iii dev uses memory, iii start the managed store.
	Store string
	// DataDir is where the managed store keeps its files. A relative path
	// is relative to the config file's folder; empty means .iii/data there
	// (in the working directory without a file).
	DataDir string
}

// Embedded store kinds for Redis.Store.
const (
	StoreMemory  = "memory"
	StoreManaged = "managed"
)

// Module is one entry of "modules:" (or a default module).
type Module struct {
	ID    string // canonical module ID, e.g. "http"; see ModuleID
	Class string // as written in the file; empty for a default module
	Line  int    // line of the entry; 0 for a default module
	// Config is the entry's "config:" mapping, kept undecoded for the module
	// to decode with Decode. Its Kind is 0 when the entry has no config.
	Config yaml.Node

	file string
	path string
}

// File is the config file the entry came from; empty for a default module.
func (m *Module) File() string { return m.file }

// Decode strictly decodes the module's config into v (a pointer, usually to
// a struct holding the defaults): unknown keys and wrong types fail with an
// *Error at the offending line. Without a config it leaves v as it is.
func (m *Module) Decode(v any) error {
	if m.Config.Kind == 0 {
		return nil
	}
	rv := elemOf(v)
	if !rv.IsValid() {
		return fmt.Errorf("config: module %s: Decode needs a non-nil pointer, got %T", m.ID, v)
	}
	d := decoder{file: m.file}
	return d.decode(&m.Config, m.path, rv)
}

// FromFile reports whether the config was read from a file. Without one
// every default module runs; with one exactly the listed modules do.
func (c *Config) FromFile() bool { return c.File != "" }

// Module returns the entry with the given canonical ID.
func (c *Config) Module(id string) (*Module, bool) {
	for i := range c.Modules {
		if c.Modules[i].ID == id {
			return &c.Modules[i], true
		}
	}
	return nil, false
}

// ApplyEnv applies environment overrides: a non-empty III_TOKEN sets the
// auth token, whatever the file says.
func (c *Config) ApplyEnv(getenv func(string) (string, bool)) {
	if tok, ok := getenv(EnvToken); ok && tok != "" {
		c.Engine.AuthToken = Secret(tok)
	}
}

// Default is the configuration used when there is no config file: defaults
// everywhere and every module except exec.
func Default() *Config {
	c := &Config{Engine: defaultEngine()}
	for _, id := range DefaultModules {
		c.Modules = append(c.Modules, Module{ID: id, path: id + ".config"})
	}
	return c
}

func defaultEngine() Engine {
	return Engine{
		Host:              DefaultHost,
		Port:              DefaultPort,
		InvocationTimeout: DefaultInvocationTimeout,
		MaxFrameBytes:     DefaultMaxFrameBytes,
	}
}

// Load reads and parses the config file at path, interpolating from the
// process environment. A missing file gives an error that matches
// fs.ErrNotExist; callers decide whether that means Default().
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data, os.LookupEnv)
}

// The file's shape as written; at[T] keeps each value's line for validation.
type rawFile struct {
	Engine  rawEngine  `yaml:"engine"`
	Redis   rawRedis   `yaml:"redis"`
	Modules yaml.Node  `yaml:"modules"`
	Cluster rawCluster `yaml:"cluster"`
}

type rawEngine struct {
	Host                at[string] `yaml:"host"`
	Port                at[int]    `yaml:"port"`
	AuthToken           at[string] `yaml:"auth_token"`
	InvocationTimeoutMS at[int64]  `yaml:"invocation_timeout_ms"`
	MaxFrameBytes       at[int64]  `yaml:"max_frame_bytes"`
	SharedFunctions     at[bool]   `yaml:"shared_functions"`
}

type rawRedis struct {
	URL     at[string] `yaml:"url"`
	Store   at[string] `yaml:"store"`
	DataDir at[string] `yaml:"data_dir"`
}

type rawModule struct {
	Class  at[string] `yaml:"class"`
	Name   at[string] `yaml:"name"`
	Config yaml.Node  `yaml:"config"`
}

// yamlLine pulls the line out of yaml.v3 syntax errors ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses a config file's contents. name is used in errors and recorded
// as Config.File; getenv resolves ${VAR} references (os.LookupEnv in Load).
func Parse(name string, data []byte, getenv func(string) (string, bool)) (*Config, error) {
	text, err := interpolate(name, data, getenv)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(text))
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// An empty file: defaults and no modules.
	case err != nil:
		return nil, syntaxError(name, err)
	default:
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			if err != nil {
				return nil, syntaxError(name, err)
			}
			return nil, &Error{File: name, Line: extra.Line, Reason: "more than one YAML document", Kind: ErrConfigSyntax}
		}
	}

	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && isIIIFormat(resolve(doc.Content[0])) {
		c := &Config{File: name, Engine: defaultEngine()}
		if err := parseIII(name, resolve(doc.Content[0]), c); err != nil {
			return nil, err
		}
		return c, nil
	}
	var raw rawFile
	d := decoder{file: name}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		if err := d.decode(doc.Content[0], "", elemOf(&raw)); err != nil {
			return nil, err
		}
	}
	c := &Config{File: name, Engine: defaultEngine()}
	if err := c.setEngine(name, &raw.Engine); err != nil {
		return nil, err
	}
	if err := c.setRedis(name, &raw.Redis); err != nil {
		return nil, err
	}
	if err := c.setModules(&d, &raw.Modules); err != nil {
		return nil, err
	}
	if err := c.setCluster(name, &raw.Cluster); err != nil {
		return nil, err
	}
	return c, nil
}

func syntaxError(file string, err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Reason: m[2], Kind: ErrConfigSyntax}
	}
	return &Error{File: file, Reason: strings.TrimPrefix(err.Error(), "yaml: "), Kind: ErrConfigSyntax}
}

func invalid(file string, line int, key, format string, args ...any) error {
	return &Error{File: file, Line: line, Key: key, Reason: fmt.Sprintf(format, args...), Kind: ErrConfigInvalid}
}

func (c *Config) setEngine(file string, r *rawEngine) error {
	e := &c.Engine
	if r.Host.Line > 0 {
		h := r.Host.V
		switch {
		case h == "":
			return invalid(file, r.Host.Line, "engine.host", "must not be empty")
		case strings.ContainsAny(h, "/ \t[]") || (strings.Contains(h, ":") && net.ParseIP(h) == nil):
			return invalid(file, r.Host.Line, "engine.host", "%q is not a host name or IP address (no scheme, no port)", h)
		}
		e.Host = h
	}
	if r.Port.Line > 0 {
		if r.Port.V < 0 || r.Port.V > 65535 {
			return invalid(file, r.Port.Line, "engine.port", "%d is out of range 0-65535", r.Port.V)
		}
		e.Port = r.Port.V
	}
	e.AuthToken = Secret(r.AuthToken.V)
	if r.InvocationTimeoutMS.Line > 0 {
		ms := r.InvocationTimeoutMS.V
		if ms <= 0 || ms > int64(time.Duration(1<<63-1)/time.Millisecond) {
			return invalid(file, r.InvocationTimeoutMS.Line, "engine.invocation_timeout_ms", "%d must be a positive number of milliseconds", ms)
		}
		e.InvocationTimeout = time.Duration(ms) * time.Millisecond
	}
	if r.MaxFrameBytes.Line > 0 {
		if r.MaxFrameBytes.V <= 0 {
			return invalid(file, r.MaxFrameBytes.Line, "engine.max_frame_bytes", "%d must be positive", r.MaxFrameBytes.V)
		}
		if r.MaxFrameBytes.V > MaxFrameBytesLimit {
			return invalid(file, r.MaxFrameBytes.Line, "engine.max_frame_bytes",
				"%d is over %d (256 MiB): each worker socket may hold a message of this size in memory", r.MaxFrameBytes.V, MaxFrameBytesLimit)
		}
		e.MaxFrameBytes = r.MaxFrameBytes.V
	}
	e.SharedFunctions = r.SharedFunctions.V
	return nil
}

func (c *Config) setRedis(file string, r *rawRedis) error {
	if r.URL.V != "" {
		u, err := url.Parse(r.URL.V)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			// The URL may hold a password: do not echo it.
			return invalid(file, r.URL.Line, "redis.url", "want a redis://, rediss:// or unix:// URL")
		}
		c.Redis.URL = r.URL.V
	}
	if r.Store.Line > 0 {
		switch s := r.Store.V; {
		case s != StoreMemory && s != StoreManaged:
			return invalid(file, r.Store.Line, "redis.store", "%q is not a store: want %s or %s", s, StoreMemory, StoreManaged)
		case c.Redis.URL != "":
			return invalid(file, r.Store.Line, "redis.store", "set redis.url or redis.store, not both (store picks the embedded store used without a URL)")
		}
		c.Redis.Store = r.Store.V
	}
	if r.DataDir.Line > 0 {
		switch {
		case r.DataDir.V == "":
			return invalid(file, r.DataDir.Line, "redis.data_dir", "must not be empty")
		case c.Redis.URL != "":
			return invalid(file, r.DataDir.Line, "redis.data_dir", "is for the managed store; redis.url is set")
		case c.Redis.Store == StoreMemory:
			return invalid(file, r.DataDir.Line, "redis.data_dir", "is for the managed store; redis.store is %s", StoreMemory)
		}
		c.Redis.DataDir = r.DataDir.V
	}
	return nil
}

func (c *Config) setModules(d *decoder, n *yaml.Node) error {
	n = resolve(n)
	if n.Kind == 0 || isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return d.typeError(n, "modules", "a list")
	}
	seen := make(map[string]int, len(n.Content))
	classAt := 0 // line of the first class: entry
	for _, item := range n.Content {
		if item = resolve(item); item.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(item.Content); j += 2 {
				if item.Content[j].Value == "class" && classAt == 0 {
					classAt = item.Content[j].Line
				}
			}
		}
	}
	for i, item := range n.Content {
		item = resolve(item)
		path := fmt.Sprintf("modules[%d]", i)
		if isNull(item) {
			return d.errorf(item, path, ErrConfigInvalid, "empty entry: want {class: ..., config: ...}")
		}
		var r rawModule
		if err := d.decode(item, path, elemOf(&r)); err != nil {
			return err
		}
		class := r.Class
		key := path + ".class"
		switch {
		case r.Class.Line > 0 && r.Name.Line > 0:
			return d.errorf(item, path, ErrConfigInvalid, "set class or name, not both")
		case r.Name.Line > 0 && classAt > 0:
			return &Error{File: d.file, Line: r.Name.Line, Key: path + ".name",
				Reason: fmt.Sprintf("name: entries (iii's format) next to class: entries (our format, line %d); the two do not mix: write class: here", classAt),
				Kind:   ErrConfigMixedFormat}
		case r.Name.Line > 0:
			class, key = r.Name, path+".name"
		case r.Class.Line == 0:
			return d.errorf(item, path, ErrConfigInvalid, "missing class (or name)")
		}
		id, ok := ModuleID(class.V)
		if !ok {
			return &Error{File: d.file, Line: class.Line, Key: key,
				Reason: fmt.Sprintf("unknown module class %q (known: %s)", class.V, strings.Join(ModuleIDs(), ", ")),
				Kind:   ErrConfigUnknownModule}
		}
		if first, dup := seen[id]; dup {
			return &Error{File: d.file, Line: class.Line, Key: key,
				Reason: fmt.Sprintf("module %s is already listed on line %d", id, first),
				Kind:   ErrConfigDuplicateEntry}
		}
		seen[id] = class.Line
		cfg := *resolve(&r.Config)
		if cfg.Kind != 0 && !isNull(&cfg) && cfg.Kind != yaml.MappingNode {
			return d.typeError(&cfg, path+".config", "a mapping")
		}
		if isNull(&cfg) {
			cfg = yaml.Node{}
		}
		c.Modules = append(c.Modules, Module{
			ID: id, Class: class.V, Line: item.Line, Config: cfg,
			file: d.file, path: path + ".config",
		})
	}
	return nil
}

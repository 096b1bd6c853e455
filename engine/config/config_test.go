package config

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// env returns a getenv over a fixed map.
func env(kv ...string) func(string) (string, bool) {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// summary is what a good-file test compares: the decoded values without the
// yaml.Node internals.
type summary struct {
	Engine  Engine
	Redis   Redis
	Modules []string // "id<-class@line cfg=<kind>"
}

func summarize(c *Config) summary {
	s := summary{Engine: c.Engine, Redis: c.Redis}
	for _, m := range c.Modules {
		kind := "none"
		if m.Config.Kind != 0 {
			kind = "map"
		}
		s.Modules = append(s.Modules, m.ID+"<-"+m.Class+"@"+strconv.Itoa(m.Line)+" cfg="+kind)
	}
	return s
}

func engineWith(f func(e *Engine)) Engine {
	e := defaultEngine()
	f(&e)
	return e
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  func(string) (string, bool)
		want summary
	}{
		{
			name: "brief example with token set",
			file: `engine:
  host: 127.0.0.1          # worker WebSocket host
  port: 49134
  auth_token: ${III_TOKEN:}
  invocation_timeout_ms: 300000
  max_frame_bytes: 67108864
redis:
  url: ""
modules:
  - class: RestApiModule
    config: {port: 3111}
`,
			env: env("III_TOKEN", "s3cret"),
			want: summary{
				Engine:  engineWith(func(e *Engine) { e.AuthToken = "s3cret" }),
				Modules: []string{"http<-RestApiModule@10 cfg=map"},
			},
		},
		{
			name: "empty file: defaults, no modules",
			file: "",
			env:  env(),
			want: summary{Engine: defaultEngine()},
		},
		{
			name: "comments only",
			file: "# nothing here\n",
			env:  env(),
			want: summary{Engine: defaultEngine()},
		},
		{
			name: "unset token with empty default is no token",
			file: "engine:\n  auth_token: ${III_TOKEN:}\n",
			env:  env(),
			want: summary{Engine: defaultEngine()},
		},
		{
			name: "defaults and values from the environment",
			file: "engine:\n  host: ${HOST:0.0.0.0}\n  port: ${PORT}\n  invocation_timeout_ms: ${T:1500}\n",
			env:  env("PORT", "4000"),
			want: summary{Engine: engineWith(func(e *Engine) {
				e.Host, e.Port, e.InvocationTimeout = "0.0.0.0", 4000, 1500*time.Millisecond
			})},
		},
		{
			name: "no :- form: the default is -x",
			file: "engine:\n  auth_token: ${NOPE:-x}\n",
			env:  env(),
			want: summary{Engine: engineWith(func(e *Engine) { e.AuthToken = "-x" })},
		},
		{
			name: "variables in comments are interpolated too",
			file: "# token ${A}\nengine: {port: 0}\n",
			env:  env("A", "here"),
			want: summary{Engine: engineWith(func(e *Engine) { e.Port = 0 })},
		},
		{
			name: "null sections keep defaults",
			file: "engine:\nredis:\nmodules:\n",
			env:  env(),
			want: summary{Engine: defaultEngine()},
		},
		{
			name: "null values keep defaults",
			file: "engine:\n  port: ${PORT:}\n  host: ~\n",
			env:  env(),
			want: summary{Engine: defaultEngine()},
		},
		{
			name: "redis url and IPv6 host",
			file: "engine: {host: '::1', max_frame_bytes: 1024}\nredis: {url: 'redis://localhost:6379/0'}\n",
			env:  env(),
			want: summary{
				Engine: engineWith(func(e *Engine) { e.Host, e.MaxFrameBytes = "::1", 1024 }),
				Redis:  Redis{URL: "redis://localhost:6379/0"},
			},
		},
		{
			name: "redis url and IPv6 host and shared functions",
			file: "engine: {host: '::1', max_frame_bytes: 1024, shared_functions: true}\nredis: {url: 'redis://localhost:6379/0'}\n",
			env:  env(),
			want: summary{
				Engine: engineWith(func(e *Engine) { e.Host, e.MaxFrameBytes, e.SharedFunctions = "::1", 1024, true }),
				Redis:  Redis{URL: "redis://localhost:6379/0"},
			},
		},
		{
			name: "managed store with a data dir",
			file: "redis:\n  store: managed\n  data_dir: /var/lib/iii\n",
			env:  env(),
			want: summary{Engine: defaultEngine(), Redis: Redis{Store: StoreManaged, DataDir: "/var/lib/iii"}},
		},
		{
			name: "memory store",
			file: "redis: {store: memory}\n",
			env:  env(),
			want: summary{Engine: defaultEngine(), Redis: Redis{Store: StoreMemory}},
		},
		{
			name: "data dir alone leaves the store to the command",
			file: "redis: {data_dir: data}\n",
			env:  env(),
			want: summary{Engine: defaultEngine(), Redis: Redis{DataDir: "data"}},
		},
		{
			name: "every spelling of every module",
			file: `modules:
  - class: modules::api::RestApiModule
  - class: iii-queue
  - class: PubSubModule
    config: ~
  - class: modules::cron::CronModule
  - class: iii-stream
  - class: StateModule
    config: {adapter: {name: kv}}
  - class: modules::observability::OtelModule
  - class: exec
    config:
      exec: [go run .]
`,
			env: env(),
			want: summary{
				Engine: defaultEngine(),
				Modules: []string{
					"http<-modules::api::RestApiModule@2 cfg=none",
					"queue<-iii-queue@3 cfg=none",
					"pubsub<-PubSubModule@4 cfg=none",
					"cron<-modules::cron::CronModule@6 cfg=none",
					"stream<-iii-stream@7 cfg=none",
					"state<-StateModule@8 cfg=map",
					"observability<-modules::observability::OtelModule@10 cfg=none",
					"exec<-exec@11 cfg=map",
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("good.yaml", []byte(tt.file), tt.env)
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.file, err)
			}
			if !c.FromFile() || c.File != "good.yaml" {
				t.Errorf("Parse(%q): File = %q, FromFile = %v; want good.yaml, true", tt.file, c.File, c.FromFile())
			}
			if got := summarize(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q):\n got %+v\nwant %+v", tt.file, got, tt.want)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name string
		file string
		kind error
		want string
	}{
		{"unknown top-level key", "engine: {}\nengin:\n  port: 1\n", ErrConfigUnknownKey,
			"bad.yaml:2: engin: unknown key (known: engine, redis, modules, cluster)"},
		{"unknown engine key", "engine:\n  prot: 1\n", ErrConfigUnknownKey,
			"bad.yaml:2: engine.prot: unknown key (known: host, port, auth_token, invocation_timeout_ms, max_frame_bytes, shared_functions)"},
		{"port is a string", "engine:\n  port: abc\n", ErrConfigType,
			`bad.yaml:2: engine.port: want an integer, got string "abc"`},
		{"port is quoted", "engine:\n  port: '80'\n", ErrConfigType,
			`bad.yaml:2: engine.port: want an integer, got string "80"`},
		{"port is a float", "engine:\n  port: 80.5\n", ErrConfigType,
			"bad.yaml:2: engine.port: want an integer, got number 80.5"},
		{"port is a list", "engine:\n  port: [1]\n", ErrConfigType,
			"bad.yaml:2: engine.port: want an integer, got a list"},
		{"port too large", "engine:\n  host: localhost\n  port: 70000\n", ErrConfigInvalid,
			"bad.yaml:3: engine.port: 70000 is out of range 0-65535"},
		{"port negative", "engine: {port: -1}\n", ErrConfigInvalid,
			"bad.yaml:1: engine.port: -1 is out of range 0-65535"},
		{"integer overflow", "engine:\n  max_frame_bytes: 99999999999999999999999\n", ErrConfigType,
			"bad.yaml:2: engine.max_frame_bytes: want an integer, got number 99999999999999999999999"},
		{"negative timeout", "engine:\n  invocation_timeout_ms: -5\n", ErrConfigInvalid,
			"bad.yaml:2: engine.invocation_timeout_ms: -5 must be a positive number of milliseconds"},
		{"zero timeout", "engine:\n  invocation_timeout_ms: 0\n", ErrConfigInvalid,
			"bad.yaml:2: engine.invocation_timeout_ms: 0 must be a positive number of milliseconds"},
		{"zero frame limit", "\n\nengine:\n  max_frame_bytes: 0\n", ErrConfigInvalid,
			"bad.yaml:4: engine.max_frame_bytes: 0 must be positive"},
		{"frame limit over 256 MiB", "engine:\n  max_frame_bytes: 268435457\n", ErrConfigInvalid,
			"bad.yaml:2: engine.max_frame_bytes: 268435457 is over 268435456 (256 MiB): each worker socket may hold a message of this size in memory"},
		{"empty host", "engine:\n  host: ''\n", ErrConfigInvalid,
			"bad.yaml:2: engine.host: must not be empty"},
		{"host with port", "engine:\n  host: 127.0.0.1:80\n", ErrConfigInvalid,
			`bad.yaml:2: engine.host: "127.0.0.1:80" is not a host name or IP address (no scheme, no port)`},
		{"engine is a scalar", "engine: 5\n", ErrConfigType,
			"bad.yaml:1: engine: want a mapping, got integer 5"},
		{"top level is a list", "- engine\n", ErrConfigType,
			"bad.yaml:1: want a mapping, got a list"},
		{"unset variable", "engine:\n  host: 127.0.0.1\n  auth_token: ${SECRET}\n", ErrConfigUnsetVariable,
			"bad.yaml:3: environment variable SECRET is not set (use ${SECRET:default} for a default)"},
		{"bad redis url", "redis:\n  url: http://user:pw@x\n", ErrConfigInvalid,
			"bad.yaml:2: redis.url: want a redis://, rediss:// or unix:// URL"},
		{"unknown store", "redis:\n  store: disk\n", ErrConfigInvalid,
			`bad.yaml:2: redis.store: "disk" is not a store: want memory or managed`},
		{"store and url", "redis:\n  url: redis://x:6379\n  store: managed\n", ErrConfigInvalid,
			"bad.yaml:3: redis.store: set redis.url or redis.store, not both (store picks the embedded store used without a URL)"},
		{"store is a list", "redis:\n  store: [managed]\n", ErrConfigType,
			"bad.yaml:2: redis.store: want a string, got a list"},
		{"empty data dir", "redis:\n  data_dir: ''\n", ErrConfigInvalid,
			"bad.yaml:2: redis.data_dir: must not be empty"},
		{"data dir and url", "redis:\n  url: redis://x:6379\n  data_dir: d\n", ErrConfigInvalid,
			"bad.yaml:3: redis.data_dir: is for the managed store; redis.url is set"},
		{"data dir with memory", "redis: {store: memory, data_dir: d}\n", ErrConfigInvalid,
			"bad.yaml:1: redis.data_dir: is for the managed store; redis.store is memory"},
		{"unknown redis key", "redis:\n  dir: d\n", ErrConfigUnknownKey,
			"bad.yaml:2: redis.dir: unknown key (known: url, store, data_dir)"},
		{"duplicate key", "engine:\n  port: 1\n  port: 2\n", ErrConfigInvalid,
			"bad.yaml:3: engine.port: duplicate key (first on line 2)"},
		{"yaml syntax", "engine:\n  port: [1\n", ErrConfigSyntax,
			"bad.yaml:1: did not find expected ',' or ']'"},
		{"tab indentation", "engine:\n\tport: 1\n", ErrConfigSyntax,
			"bad.yaml:2: found character that cannot start any token"},
		{"two documents", "engine: {}\n---\nredis: {}\n", ErrConfigSyntax,
			"bad.yaml:2: more than one YAML document"},
		{"modules is a mapping", "modules:\n  http: {}\n", ErrConfigType,
			"bad.yaml:2: modules: want a list, got a mapping"},
		{"unknown class", "modules:\n  - class: RestApiModule\n  - class: FooModule\n", ErrConfigUnknownModule,
			`bad.yaml:3: modules[1].class: unknown module class "FooModule" (known: cron, exec, http, observability, pubsub, queue, state, stream)`},
		{"unknown class, iii name", "modules:\n  - class: iii-worker-manager\n", ErrConfigUnknownModule,
			`bad.yaml:2: modules[0].class: unknown module class "iii-worker-manager" (known: cron, exec, http, observability, pubsub, queue, state, stream)`},
		{"name next to class", "modules:\n  - class: RestApiModule\n  - name: iii-cron\n", ErrConfigMixedFormat,
			"bad.yaml:3: modules[1].name: name: entries (iii's format) next to class: entries (our format, line 2); the two do not mix: write class: here"},
		{"class and name", "modules:\n  - class: CronModule\n    name: iii-cron\n", ErrConfigInvalid,
			"bad.yaml:2: modules[0]: set class or name, not both"},
		{"missing class", "modules:\n  - config: {port: 1}\n", ErrConfigInvalid,
			"bad.yaml:2: modules[0]: missing class (or name)"},
		{"empty entry", "modules:\n  -\n", ErrConfigInvalid,
			"bad.yaml:2: modules[0]: empty entry: want {class: ..., config: ...}"},
		{"unknown entry key", "modules:\n  - class: iii-http\n    image: ghcr.io/x\n", ErrConfigUnknownKey,
			"bad.yaml:3: modules[0].image: unknown key (known: class, name, config)"},
		{"class is a mapping", "modules:\n  - class: {a: 1}\n", ErrConfigType,
			"bad.yaml:2: modules[0].class: want a string, got a mapping"},
		{"config is a list", "modules:\n  - class: ExecModule\n    config: [npm start]\n", ErrConfigType,
			"bad.yaml:3: modules[0].config: want a mapping, got a list"},
		{"module twice", "modules:\n  - class: RestApiModule\n  - class: iii-http\n", ErrConfigDuplicateEntry,
			"bad.yaml:3: modules[1].class: module http is already listed on line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("bad.yaml", []byte(tt.file), env())
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error %q", tt.file, summarize(c), tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse(%q) error:\n got %q\nwant %q", tt.file, err.Error(), tt.want)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("Parse(%q) error %q is not %v", tt.file, err, tt.kind)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "bad.yaml" {
				t.Errorf("Parse(%q) error %#v is not an *Error for bad.yaml", tt.file, err)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.FromFile() {
		t.Errorf("Default().FromFile() = true, want false")
	}
	if got, want := c.Engine, defaultEngine(); got != want {
		t.Errorf("Default().Engine = %+v, want %+v", got, want)
	}
	if got, want := c.Engine.Addr(), "127.0.0.1:49134"; got != want {
		t.Errorf("Default().Engine.Addr() = %q, want %q", got, want)
	}
	var ids []string
	for _, m := range c.Modules {
		ids = append(ids, m.ID)
	}
	want := []string{"http", "queue", "pubsub", "cron", "stream", "state", "observability"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("Default() modules = %v, want %v (all but exec)", ids, want)
	}
	if _, ok := c.Module(ModuleExec); ok {
		t.Errorf("Default() runs exec; want it off without a file")
	}
}

func TestModuleID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"RestApiModule", "http"}, {"modules::api::RestApiModule", "http"}, {"iii-http", "http"}, {"http", "http"},
		{"QueueModule", "queue"}, {"modules::queue::QueueModule", "queue"}, {"iii-queue", "queue"},
		{"PubSubModule", "pubsub"}, {"modules::pubsub::PubSubModule", "pubsub"}, {"iii-pubsub", "pubsub"},
		{"CronModule", "cron"}, {"modules::cron::CronModule", "cron"}, {"iii-cron", "cron"},
		{"StreamModule", "stream"}, {"modules::stream::StreamModule", "stream"}, {"iii-stream", "stream"},
		{"StateModule", "state"}, {"modules::state::StateModule", "state"}, {"iii-state", "state"},
		{"OtelModule", "observability"}, {"modules::observability::OtelModule", "observability"}, {"iii-observability", "observability"},
		{"ExecModule", "exec"}, {"modules::shell::ExecModule", "exec"}, {"iii-exec", "exec"},
		{"restapimodule", ""}, {"modules::worker::WorkerModule", ""}, {"", ""},
	}
	for _, tt := range tests {
		got, ok := ModuleID(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("ModuleID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.want != "")
		}
	}
}

type httpConfig struct {
	Port    int               `yaml:"port"`
	Host    string            `yaml:"host"`
	CORS    *corsConfig       `yaml:"cors"`
	Headers map[string]string `yaml:"headers"`
	Extra   map[string]any    `yaml:"extra"`
}

type corsConfig struct {
	AllowedOrigins []string `yaml:"allowed_origins"`
}

func TestModuleDecode(t *testing.T) {
	const file = `modules:
  - class: RestApiModule
    config:
      port: 3111
      cors:
        allowed_origins: [a, b]
      headers: {x: y}
      extra: {n: 1, l: [true]}
  - class: StateModule
  - class: CronModule
    config:
      port: 1
      cors: {allowed_origin: [a]}
  - class: StreamModule
    config:
      headers: {x: [1]}
`
	c, err := Parse("mods.yaml", []byte(file), env())
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	decode := func(id string) (httpConfig, error) {
		m, ok := c.Module(id)
		if !ok {
			t.Fatalf("module %s missing", id)
		}
		v := httpConfig{Port: 9999, Host: "127.0.0.1"}
		return v, m.Decode(&v)
	}

	got, err := decode("http")
	want := httpConfig{Port: 3111, Host: "127.0.0.1", CORS: &corsConfig{AllowedOrigins: []string{"a", "b"}},
		Headers: map[string]string{"x": "y"}, Extra: map[string]any{"n": 1, "l": []any{true}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("http Decode = %+v, %v; want %+v, nil", got, err, want)
	}

	got, err = decode("state")
	if want := (httpConfig{Port: 9999, Host: "127.0.0.1"}); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("state (no config) Decode = %+v, %v; want defaults kept", got, err)
	}

	_, err = decode("cron")
	if want := "mods.yaml:13: modules[2].config.cors.allowed_origin: unknown key (known: allowed_origins)"; err == nil || err.Error() != want || !errors.Is(err, ErrConfigUnknownKey) {
		t.Errorf("cron Decode error = %v; want %q", err, want)
	}

	_, err = decode("stream")
	if want := "mods.yaml:16: modules[3].config.headers.x: want a string, got a list"; err == nil || err.Error() != want || !errors.Is(err, ErrConfigType) {
		t.Errorf("stream Decode error = %v; want %q", err, want)
	}

	var v httpConfig
	m := Default().Modules[0]
	if err := m.Decode(&v); err != nil {
		t.Errorf("default module Decode = %v, want nil", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "config.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want fs.ErrNotExist", err)
	}

	path := filepath.Join(dir, "iii.yaml")
	if err := os.WriteFile(path, []byte("engine:\n  port: ${III_CONFIG_TEST_PORT}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("III_CONFIG_TEST_PORT", "5555")
	c, err := Load(path)
	if err != nil || c.Engine.Port != 5555 || c.File != path {
		t.Errorf("Load(%s) = %+v, %v; want port 5555 from the environment", path, c, err)
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		file, env string
		set       bool
		want      Secret
	}{
		{"abc", "", false, "abc"},
		{"abc", "", true, "abc"},
		{"abc", "xyz", true, "xyz"},
		{"", "xyz", true, "xyz"},
	}
	for _, tt := range tests {
		c := Default()
		c.Engine.AuthToken = Secret(tt.file)
		c.ApplyEnv(func(k string) (string, bool) {
			if k == EnvToken && tt.set {
				return tt.env, true
			}
			return "", false
		})
		if c.Engine.AuthToken != tt.want {
			t.Errorf("file token %q, III_TOKEN %q (set %v): token = %q, want %q", tt.file, tt.env, tt.set, c.Engine.AuthToken, tt.want)
		}
	}
}

func TestSecretRedacted(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("cfg", "token", Secret("hunter2"), "engine", Engine{AuthToken: "hunter2"})
	if strings.Contains(buf.String(), "hunter2") {
		t.Errorf("log line %q leaks the secret", buf.String())
	}
}

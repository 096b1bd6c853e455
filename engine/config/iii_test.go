package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// iiiSummary is what an iii-format test compares.
type iiiSummary struct {
	Addr      string
	Redis     Redis
	Modules   []string // "id<-name@line <config as JSON>"
	Listeners []string // "host:port set=<HostSet> mw=<id> hs=<timeout> rbac=<...>"
	Warnings  []string // "line key"
	HTTPFn    string
}

func iiiSummarize(t *testing.T, c *Config) iiiSummary {
	t.Helper()
	s := iiiSummary{Addr: c.Engine.Addr(), Redis: c.Redis}
	for _, m := range c.Modules {
		var v any
		if err := m.Config.Decode(&v); err != nil {
			t.Fatalf("module %s config does not decode: %v", m.ID, err)
		}
		b, _ := json.Marshal(v)
		s.Modules = append(s.Modules, m.ID+"<-"+m.Class+"@"+strconv.Itoa(m.Line)+" "+string(b))
	}
	for _, l := range c.Listeners {
		r := "none"
		if l.RBAC != nil {
			b, _ := json.Marshal(l.RBAC)
			r = string(b)
		}
		s.Listeners = append(s.Listeners, l.Host+":"+strconv.Itoa(l.Port)+" set="+strconv.FormatBool(l.HostSet)+
			" mw="+l.MiddlewareFunctionID+" hs="+l.HandshakeTimeout.String()+" rbac="+r)
	}
	for _, w := range c.Warnings {
		s.Warnings = append(s.Warnings, strconv.Itoa(w.Line)+" "+w.Key)
	}
	if hf := c.HTTPFunctions; hf != nil {
		b, _ := json.Marshal(hf)
		s.HTTPFn = string(b)
	}
	return s
}

const obsDefault = "observability<-@0 null"

func TestParseIIIGood(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  func(string) (string, bool)
		want iiiSummary
	}{
		{
			// The shape of iii v0.22.1's shipped engine/config.yaml.
			name: "iii's shipped config",
			file: `workers:
  - name: iii-stream
    config:
      port: ${STREAM_PORT:3112}
      host: 127.0.0.1
      adapter:
        name: redis
        config:
          redis_url: redis://localhost:6379
  - name: iii-state
    config:
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/state_store.db
  - name: iii-observability
    config:
      enabled: ${OTEL_ENABLED:true}
      service_name: ${OTEL_SERVICE_NAME:iii}
      service_version: ${SERVICE_VERSION:__III_ENGINE_VERSION__}
      exporter: ${OTEL_EXPORTER_TYPE:memory}
      endpoint: ${OTEL_EXPORTER_OTLP_ENDPOINT:http://localhost:4317}
      sampling_ratio: 1.0
      memory_max_spans: ${OTEL_MEMORY_MAX_SPANS:10000}
      metrics_enabled: true
      metrics_exporter: ${OTEL_METRICS_EXPORTER:memory}
      metrics_retention_seconds: 3600
      metrics_max_count: 10000
      logs_enabled: ${OTEL_LOGS_ENABLED:true}
      logs_exporter: ${OTEL_LOGS_EXPORTER:memory}
      logs_max_count: ${OTEL_LOGS_MAX_COUNT:1000}
      logs_batch_size: 100
      logs_flush_interval_ms: 5000
      logs_sampling_ratio: 1.0
      logs_console_output: true
  - name: iii-pubsub
    config:
      adapter:
        name: local
  - name: iii-cron
    config:
      adapter:
        name: kv
  - name: configuration
    config:
      adapter: {name: fs, config: {directory: ./config}}
      ttl_seconds: 0
  - name: iii-http
    config:
      port: 3111
      host: 127.0.0.1
      default_timeout: 30000
      concurrency_request_limit: 1024
      cors:
        allowed_origins: ['*']
        allowed_methods: [GET, POST]
`,
			env: env("STREAM_PORT", "4112"),
			want: iiiSummary{
				Addr:  "127.0.0.1:49134",
				Redis: Redis{URL: "redis://localhost:6379"},
				Modules: []string{
					`stream<-iii-stream@2 {"host":"127.0.0.1","port":4112}`,
					`state<-iii-state@10 null`,
					`observability<-iii-observability@17 {"enabled":true,"endpoint":"http://localhost:4317","exporter":"memory","logs_batch_size":100,"logs_enabled":true,"logs_flush_interval_ms":5000,"logs_max_count":1000,"memory_max_spans":10000,"metrics_enabled":true,"metrics_max_count":10000,"sampling_ratio":1,"service_name":"iii","service_version":"0.22.1"}`,
					`pubsub<-iii-pubsub@37 null`,
					`cron<-iii-cron@41 null`,
					`http<-iii-http@49 {"concurrency_request_limit":1024,"cors":{"allowed_methods":["GET","POST"],"allowed_origins":["*"]},"default_timeout":30000,"host":"127.0.0.1","port":3111}`,
				},
				Warnings: []string{
					"28 workers[2].config.metrics_retention_seconds",
					"36 workers[2].config.logs_console_output",
					"47 workers[5].config",
					"13 workers[1].config.adapter",
					"44 workers[4].config.adapter",
				},
			},
		},
		{
			// iii's SDK bridge fixture (sdk/fixtures/config-bridge.yaml):
			// state and stream kept in another engine; the other
			// workers' data stays in the in-memory store.
			name: "bridge adapters",
			file: `workers:
  - name: iii-worker-manager
    config:
      port: 49197
  - name: iii-stream
    config:
      port: 3114
      adapter:
        name: bridge
        config:
          bridge_url: ws://localhost:49198
  - name: iii-state
    config:
      adapter: {name: bridge}
  - name: iii-pubsub
    config:
      adapter:
        name: local
  - name: iii-bridge
    config:
      url: ws://localhost:49198
      expose: [{local_function: a::b}]
      forward:
        - {local_function: r::get, remote_function: state::get, timeout_ms: 5000}
`,
			env: env(),
			want: iiiSummary{
				Addr: "127.0.0.1:49197",
				Modules: []string{
					`stream<-iii-stream@5 {"bridge_url":"ws://localhost:49198","port":3114}`,
					`state<-iii-state@12 {"bridge_url":"ws://localhost:49134"}`,
					`pubsub<-iii-pubsub@15 null`,
					`bridge<-iii-bridge@19 {"expose":[{"local_function":"a::b"}],"forward":[{"local_function":"r::get","remote_function":"state::get","timeout_ms":5000}],"url":"ws://localhost:49198"}`,
					obsDefault,
				},
				Listeners: []string{"127.0.0.1:49197 set=false mw= hs=10s rbac=none"},
			},
		},
		{
			// The shape of iii's SDK test fixture: two listeners, RBAC,
			// http functions, file-based kv.
			name: "sdk fixture with rbac listeners",
			file: `workers:
  - name: iii-worker-manager
    config:
      port: 49199
  - name: iii-worker-manager
    config:
      host: 0.0.0.0
      port: 49135
      middleware_function_id: test::mw
      handshake_timeout_ms: 2500
      rbac:
        auth_function_id: test::auth
        on_function_registration_function_id: test::on-fn
        on_trigger_registration_function_id: test::on-trig
        on_trigger_type_registration_function_id: test::on-tt
        expose_functions:
          - match("test::public::*")
          - match('engine::functions::list')
          - metadata:
              public: true
              team: match("core-*")
  - name: iii-stream
    config:
      port: 3112
      host: 0.0.0.0
      adapter:
        name: kv
        config: {store_method: file_based, file_path: ./data/stream_store}
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: file_based, file_path: ./data/state_store.db}}
  - name: iii-http-functions
    config:
      security:
        url_allowlist: [localhost, 127.0.0.1]
        block_private_ips: false
`,
			env: env(),
			want: iiiSummary{
				Addr:  "127.0.0.1:49199",
				Redis: Redis{Store: StoreManaged, DataDir: "data"},
				Modules: []string{
					`stream<-iii-stream@22 {"host":"0.0.0.0","port":3112}`,
					`state<-iii-state@29 null`,
					obsDefault,
				},
				Listeners: []string{
					"127.0.0.1:49199 set=false mw= hs=10s rbac=none",
					`0.0.0.0:49135 set=true mw=test::mw hs=2.5s rbac={"AuthFunctionID":"test::auth","ExposeFunctions":[{"Match":"test::public::*","Metadata":null,"Namespace":""},{"Match":"engine::functions::list","Metadata":null,"Namespace":""},{"Match":"","Metadata":{"public":{"Pattern":"","IsPattern":false,"Value":true},"team":{"Pattern":"core-*","IsPattern":true,"Value":null}},"Namespace":""}],"OnFunctionRegistrationFunctionID":"test::on-fn","OnTriggerRegistrationFunctionID":"test::on-trig","OnTriggerTypeRegistrationFunctionID":"test::on-tt"}`,
				},
				HTTPFn: `{"Line":32,"URLAllowlist":["localhost","127.0.0.1"],"BlockPrivateIPs":false,"RequireHTTPS":true}`,
			},
		},
		{
			// iii's config.prod.yaml shape: a worker without config, and
			// the deprecated short names under modules:.
			name: "modules list, deprecated names, no config",
			file: `modules:
  - name: http
    config: {host: 0.0.0.0, port: 3111}
  - name: cron
  - name: iii-observability
    config: {level: info, format: json}
`,
			env: env(),
			want: iiiSummary{
				Addr:  "127.0.0.1:49134",
				Redis: Redis{Store: StoreMemory},
				Modules: []string{
					`http<-http@2 {"host":"0.0.0.0","port":3111}`,
					`cron<-cron@4 null`,
					`observability<-iii-observability@5 null`,
				},
				Warnings: []string{"6 modules[2].config.level", "6 modules[2].config.format"},
			},
		},
		{
			name: "exec entries, queue configs, external workers, cron lock ttl",
			file: `workers:
  - name: iii-exec
    config:
      watch: ["src/**/*.ts"]
      exec: ["npm install", "npx tsx src/index.ts"]
  - name: iii-exec
    config: {exec: [python worker.py]}
  - name: iii-queue
    config:
      adapter: {name: builtin, config: {store_method: in_memory}}
      queue_configs:
        orders: {type: fifo, message_group_field: customer, concurrency: 2, max_retries: 5, backoff_ms: 200, poll_interval_ms: 50}
        mail: {max_priority: 9, priority_field: prio}
  - name: iii-cron
    config:
      adapter: {name: kv, config: {lock_ttl_ms: 5000, lock_index: cron_locks}}
  - name: my-image-worker
    image: ghcr.io/acme/worker:1
  - name: iii-sandbox
    config: {auto_install: true}
  - name: iii-engine-functions
  - name: iii-telemetry
    config: {enabled: false}
`,
			env: env(),
			want: iiiSummary{
				Addr:  "127.0.0.1:49134",
				Redis: Redis{Store: StoreMemory},
				Modules: []string{
					`exec<-iii-exec@2 {"workers":[{"dir":".","install":["npm install"],"name":"exec","run":"npx tsx src/index.ts","watch":["src/**/*.ts"]},{"dir":".","install":[],"name":"exec-2","run":"python worker.py"}]}`,
					`queue<-iii-queue@8 {"queue_configs":{"mail":{},"orders":{"backoff_ms":200,"concurrency":2,"max_retries":5,"message_group_field":"customer","poll_interval_ms":50,"type":"fifo"}}}`,
					`cron<-iii-cron@14 {"lock_ttl_ms":5000}`,
					obsDefault,
				},
				Warnings: []string{
					"13 workers[2].config.queue_configs.mail.max_priority",
					"13 workers[2].config.queue_configs.mail.priority_field",
					"16 workers[3].config.adapter.config.lock_index",
					"17 workers[4].name",
					"19 workers[5].name",
				},
			},
		},
		{
			name: "different redis urls: the first wins, the other is warned",
			file: `workers:
  - name: iii-stream
    config: {adapter: {name: redis, config: {redis_url: "redis://a:6379/1"}}}
  - name: iii-pubsub
    config: {adapter: {name: redis, config: {redis_url: "redis://b:6379"}}}
  - name: iii-state
    config: {adapter: {name: redis}}
`,
			env: env(),
			want: iiiSummary{
				Addr:  "127.0.0.1:49134",
				Redis: Redis{URL: "redis://a:6379/1"},
				Modules: []string{
					`stream<-iii-stream@2 null`, `pubsub<-iii-pubsub@4 null`, `state<-iii-state@6 null`, obsDefault,
				},
				Warnings: []string{"5 workers[1].config.adapter", "7 workers[2].config.adapter"},
			},
		},
		{
			name: "empty workers list",
			file: "workers: []\n",
			env:  env(),
			want: iiiSummary{Addr: "127.0.0.1:49134", Modules: []string{obsDefault}},
		},
		{
			// iii's docs (configuration, upgrading from 0.22): the grace
			// before a connection's registrations go to the default
			// namespace. This engine holds none back: warned, alone too.
			name: "registration namespace grace",
			file: "registration_namespace_grace_ms: 10000\n",
			env:  env(),
			want: iiiSummary{Addr: "127.0.0.1:49134", Modules: []string{obsDefault},
				Warnings: []string{"1 registration_namespace_grace_ms"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("iii.yaml", []byte(tt.file), tt.env)
			if err != nil {
				t.Fatalf("Parse error: %v", err)
			}
			if c.Format != FormatIII {
				t.Errorf("Format = %q, want %q", c.Format, FormatIII)
			}
			got := iiiSummarize(t, c)
			if !reflect.DeepEqual(got, tt.want) {
				gb, _ := json.MarshalIndent(got, "", "  ")
				wb, _ := json.MarshalIndent(tt.want, "", "  ")
				t.Errorf("Parse mapping:\n got %s\nwant %s", gb, wb)
			}
			seen := map[string]bool{}
			for _, w := range c.Warnings {
				if seen[w.String()] {
					t.Errorf("warning twice: %s", w)
				}
				seen[w.String()] = true
			}
		})
	}
}

func TestParseIIIWarningText(t *testing.T) {
	file := `workers:
  - name: iii-observability
    config: {alerts: [{name: x, metric: m, threshold: 1}], metrics_exporter: otlp}
  - name: iii-state
    config: {adapter: {name: kv, config: {store_method: in_memory}}}
  - name: iii-stream
    config: {adapter: {name: kv, config: {store_method: file_based, file_path: /var/iii/stream}}}
`
	c, err := Parse("w.yaml", []byte(file), env())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c.LogWarnings(slog.New(slog.NewTextHandler(&buf, nil)))
	want := []string{
		`level=WARN msg="config: iii-observability: alerts is not implemented: no metric alerts are evaluated; use Prometheus (/metrics on 127.0.0.1:9464) and its alerting" file=w.yaml line=3 key=workers[0].config.alerts`,
		`level=WARN msg="config: iii-observability: metrics_exporter otlp is not implemented: metrics are kept in memory and served to Prometheus on /metrics" file=w.yaml line=3 key=workers[0].config.metrics_exporter`,
		`level=WARN msg="config: this engine keeps all workers' data in one store: this adapter asks for the in-memory store (lost on exit), but the managed store (a redis-server persisting under /var/iii) is used, as workers[2].config.adapter (line 7) asks" file=w.yaml line=5 key=workers[1].config.adapter`,
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		_, rest, _ := strings.Cut(line, " ") // drop time=
		got = append(got, rest)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("logged warnings:\n got %q\nwant %q", got, want)
	}
	if c.Redis.Store != StoreManaged || c.Redis.DataDir != "/var/iii" {
		t.Errorf("Redis = %+v, want the managed store under /var/iii", c.Redis)
	}
}

func TestParseIIIBad(t *testing.T) {
	tests := []struct {
		name string
		file string
		kind error
		want string
	}{
		{"workers with engine", "workers: []\nengine:\n  port: 1\n", ErrConfigMixedFormat,
			"bad.yaml:2: engine: engine: belongs to our own format, but this file is in iii's format (workers:, or modules: with name:); the two do not mix: set the worker listener with an iii-worker-manager entry (host, port)"},
		{"workers with redis", "redis: {url: 'redis://x'}\nworkers: []\n", ErrConfigMixedFormat,
			"bad.yaml:1: redis: redis: belongs to our own format, but this file is in iii's format (workers:, or modules: with name:); the two do not mix: name the store in the workers' adapter blocks ({name: redis, config: {redis_url: ...}})"},
		{"workers with class modules", "workers:\n  - name: iii-http\nmodules:\n  - class: CronModule\n", ErrConfigMixedFormat,
			"bad.yaml:4: modules[0].class: class: entries belong to our own format, but this file is in iii's format; the two do not mix (write name: iii-http-style worker names, or use class: in every entry without workers:)"},
		{"unknown top-level key", "workers: []\nworker: []\n", ErrConfigUnknownKey,
			"bad.yaml:2: worker: unknown key (known: workers, modules, registration_namespace_grace_ms)"},
		{"negative grace", "registration_namespace_grace_ms: -5\nworkers: []\n", ErrConfigInvalid,
			"bad.yaml:1: registration_namespace_grace_ms: want a number of milliseconds >= 0, got -5"},
		{"our-only http key", "workers:\n  - name: iii-http\n    config:\n      body_limit: 10\n", ErrConfigUnknownKey,
			"bad.yaml:4: workers[0].config.body_limit: unknown key (known: concurrency_request_limit, cors, default_timeout, host, middleware, port)"},
		{"typo in stream", "workers:\n  - name: iii-stream\n    config: {prot: 3112}\n", ErrConfigUnknownKey,
			"bad.yaml:3: workers[0].config.prot: unknown key (known: adapter, auth_function, host, port)"},
		{"unknown kv key", "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n        config: {store: in_memory}\n", ErrConfigUnknownKey,
			"bad.yaml:6: workers[0].config.adapter.config.store: unknown key (known: store_method, file_path, save_interval_ms)"},
		{"local adapter with config", "workers:\n  - name: iii-pubsub\n    config: {adapter: {name: local, config: {x: 1}}}\n", ErrConfigUnknownKey,
			"bad.yaml:3: workers[0].config.adapter.config.x: unknown key (adapter local takes no config)"},
		{"bridge adapter for queues", "workers:\n  - name: iii-queue\n    config:\n      adapter:\n        name: bridge\n        config: {bridge_url: 'ws://x:49133'}\n", ErrConfigInvalid,
			"bad.yaml:5: workers[0].config.adapter.name: the bridge adapter (keeping iii-queue's data in a remote iii engine) is supported by this engine only for iii-state and iii-stream; use another adapter"},
		{"bridge_url not a websocket", "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: bridge\n        config: {bridge_url: 'http://x:49133'}\n", ErrConfigInvalid,
			`bad.yaml:6: workers[0].config.adapter.config.bridge_url: want a ws:// or wss:// URL of an engine's worker port, got "http://x:49133"`},
		{"iii-bridge typo", "workers:\n  - name: iii-bridge\n    config: {urls: 'ws://x'}\n", ErrConfigUnknownKey,
			"bad.yaml:3: workers[0].config.urls: unknown key (known: expose, forward, url)"},
		{"unknown adapter", "workers:\n  - name: iii-cron\n    config: {adapter: {name: etcd}}\n", ErrConfigInvalid,
			`bad.yaml:3: workers[0].config.adapter.name: unknown adapter "etcd" for iii-cron (known: kv, redis)`},
		{"adapter class", "workers:\n  - name: iii-cron\n    config: {adapter: {class: modules::cron::KvCronAdapter}}\n", ErrConfigMixedFormat,
			"bad.yaml:3: workers[0].config.adapter.class: adapter class: is the pre-0.11 form; iii v0.22 names adapters with name: (kv, redis, ...)"},
		{"bad store_method", "workers:\n  - name: iii-state\n    config: {adapter: {name: kv, config: {store_method: disk}}}\n", ErrConfigInvalid,
			`bad.yaml:3: workers[0].config.adapter.config.store_method: unknown store_method "disk" (known: in_memory, file_based)`},
		{"bad redis url", "workers:\n  - name: iii-state\n    config: {adapter: {name: redis, config: {redis_url: 'http://u:pw@x'}}}\n", ErrConfigInvalid,
			"bad.yaml:3: workers[0].config.adapter.config.redis_url: want a redis://, rediss:// or unix:// URL"},
		{"deprecated and current name", "workers:\n  - name: iii-http\n  - name: http\n", ErrConfigDuplicateEntry,
			`bad.yaml:3: workers: "http" (line 3) is the deprecated name of "iii-http" (line 2) and both are listed; remove "http"`},
		{"two http workers", "workers:\n  - name: iii-http\n  - name: iii-http\n    config: {port: 3112}\n", ErrConfigDuplicateEntry,
			"bad.yaml:3: workers[1].name: iii-http is already listed on line 2; several instances of one worker are not supported (only iii-worker-manager and iii-exec may repeat)"},
		{"image on a built-in", "workers:\n  - name: iii-state\n    image: ghcr.io/x/state\n", ErrConfigInvalid,
			`bad.yaml:3: workers[0].image: "iii-state" is a built-in worker and takes no image (remove image, or use a different name)`},
		{"missing name", "workers:\n  - config: {port: 1}\n", ErrConfigInvalid,
			"bad.yaml:2: workers[0]: missing name"},
		{"exec without commands", "workers:\n  - name: iii-exec\n    config: {watch: ['*.go']}\n", ErrConfigInvalid,
			"bad.yaml:3: workers[0].config.exec: missing exec: the list of commands to run"},
		{"exec not a list", "workers:\n  - name: iii-exec\n    config: {exec: npm start}\n", ErrConfigType,
			`bad.yaml:3: workers[0].config.exec: want a list, got string "npm start"`},
		{"bad expose filter", "workers:\n  - name: iii-worker-manager\n    config:\n      rbac:\n        expose_functions: ['test::*']\n", ErrConfigInvalid,
			`bad.yaml:5: workers[0].config.rbac.expose_functions[0]: want match("pattern"), {match: pattern} or {metadata: {...}}, each map with an optional namespace, got string "test::*"`},
		{"expose filter key typo", "workers:\n  - name: iii-worker-manager\n    config:\n      rbac:\n        expose_functions:\n          - {match: 'o::*', namesapce: orders}\n", ErrConfigInvalid,
			`bad.yaml:6: workers[0].config.rbac.expose_functions[0].namesapce: unknown expose_functions filter key "namesapce"; want match, metadata or namespace`},
		{"expose filter with match and metadata", "workers:\n  - name: iii-worker-manager\n    config:\n      rbac:\n        expose_functions:\n          - {match: 'o::*', metadata: {public: true}}\n", ErrConfigInvalid,
			`bad.yaml:6: workers[0].config.rbac.expose_functions[0]: a filter has either a match or a metadata key, not both`},
		{"expose filter with only a namespace", "workers:\n  - name: iii-worker-manager\n    config:\n      rbac:\n        expose_functions:\n          - {namespace: orders}\n", ErrConfigInvalid,
			`bad.yaml:6: workers[0].config.rbac.expose_functions[0]: want a match: pattern or a metadata: mapping with filter conditions`},
		{"expose filter with a blank namespace", "workers:\n  - name: iii-worker-manager\n    config:\n      rbac:\n        expose_functions:\n          - {match: 'o::*', namespace: ' '}\n", ErrConfigInvalid,
			`bad.yaml:6: workers[0].config.rbac.expose_functions[0].namespace: want a namespace name (omit the key for the default namespace), got string " "`},
		{"listener port", "workers:\n  - name: iii-worker-manager\n    config: {port: 70000}\n", ErrConfigInvalid,
			"bad.yaml:3: workers[0].config.port: 70000 is out of range 0-65535"},
		{"listener twice on a port", "workers:\n  - name: iii-worker-manager\n  - name: iii-worker-manager\n    config: {port: 49134}\n", ErrConfigInvalid,
			"bad.yaml:4: workers[1].config: listener 127.0.0.1:49134 is the same port as the iii-worker-manager entry on line 2"},
		{"listener host with scheme", "workers:\n  - name: iii-worker-manager\n    config: {host: 'ws://0.0.0.0'}\n", ErrConfigInvalid,
			`bad.yaml:3: workers[0].config.host: "ws://0.0.0.0" is not a host name or IP address (no scheme, no port)`},
		{"observability enum", "workers:\n  - name: iii-observability\n    config: {metrics_exporter: prometheus}\n", ErrConfigInvalid,
			`bad.yaml:3: workers[0].config.metrics_exporter: want memory or otlp, got string "prometheus"`},
		{"queue config typo", "workers:\n  - name: iii-queue\n    config:\n      queue_configs:\n        q: {retries: 1}\n", ErrConfigUnknownKey,
			"bad.yaml:5: workers[0].config.queue_configs.q.retries: unknown key (known: backoff_ms, concurrency, max_priority, max_retries, message_group_field, poll_interval_ms, priority_field, type)"},
		{"engine functions take no config", "workers:\n  - name: iii-engine-functions\n    config: {x: 1}\n", ErrConfigUnknownKey,
			"bad.yaml:3: workers[0].config.x: unknown key (iii-engine-functions takes no config)"},
		{"unset variable", "workers:\n  - name: iii-http\n    config: {port: ${PORT}}\n", ErrConfigUnsetVariable,
			"bad.yaml:3: environment variable PORT is not set (use ${PORT:default} for a default)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tt.file), env())
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want %q", tt.file, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse(%q) error:\n got %q\nwant %q", tt.file, err.Error(), tt.want)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %v", err, tt.kind)
			}
		})
	}
}

// A module decoding its share of an iii worker's config reports the line
// and the iii path.
func TestParseIIIModuleDecodeError(t *testing.T) {
	c, err := Parse("m.yaml", []byte("workers:\n  - name: iii-http\n    config:\n      port: high\n"), env())
	if err != nil {
		t.Fatal(err)
	}
	m, ok := c.Module(ModuleHTTP)
	if !ok {
		t.Fatal("no http module")
	}
	var v struct {
		Port int `yaml:"port"`
	}
	err = m.Decode(&v)
	if want := `m.yaml:4: workers[0].config.port: want an integer, got string "high"`; err == nil || err.Error() != want {
		t.Errorf("Decode error = %v, want %q", err, want)
	}
}

func TestFormatDetection(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"workers: []\n", FormatIII},
		{"modules:\n  - name: iii-http\n", FormatIII},
		{"modules:\n  - name: my-external-worker\n", FormatIII},
		{"modules:\n  - class: RestApiModule\n", FormatOwn},
		// A spelling only our format knows keeps the file ours.
		{"modules:\n  - name: exec\n    config: {exec: [go run .]}\n", FormatOwn},
		// engine: beside name: entries is our format, as it always was.
		{"engine: {port: 0}\nmodules:\n  - name: iii-http\n", FormatOwn},
		{"", FormatOwn},
	}
	for _, tt := range tests {
		c, err := Parse("f.yaml", []byte(tt.file), env())
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.file, err)
			continue
		}
		if c.Format != tt.want {
			t.Errorf("Parse(%q).Format = %q, want %q", tt.file, c.Format, tt.want)
		}
	}
}

func TestFunctionFilterMatches(t *testing.T) {
	c, err := Parse("r.yaml", []byte(`workers:
  - name: iii-worker-manager
    config:
      rbac:
        expose_functions:
          - match("api::*::get")
          - metadata: {public: true, tier: match("gold*"), level: 2}
`), env())
	if err != nil {
		t.Fatal(err)
	}
	fs := c.Listeners[0].RBAC.ExposeFunctions
	tests := []struct {
		id   string
		meta map[string]any
		want []bool
	}{
		{"api::users::get", nil, []bool{true, false}},
		{"api::users::set", nil, []bool{false, false}},
		{"xapi::users::get", nil, []bool{false, false}},
		{"f", map[string]any{"public": true, "tier": "golden", "level": float64(2)}, []bool{false, true}},
		{"f", map[string]any{"public": true, "tier": "silver", "level": float64(2)}, []bool{false, false}},
		{"f", map[string]any{"public": "true", "tier": "gold", "level": float64(2)}, []bool{false, false}},
		{"f", map[string]any{"public": true, "tier": "gold"}, []bool{false, false}},
	}
	for _, tt := range tests {
		for i, f := range fs {
			if got := f.Matches(tt.id, tt.meta); got != tt.want[i] {
				t.Errorf("filter %d Matches(%q, %v) = %v, want %v", i, tt.id, tt.meta, got, tt.want[i])
			}
		}
	}
}

func TestExposeFunctionsNamespaces(t *testing.T) {
	c, err := Parse("r.yaml", []byte(`workers:
  - name: iii-worker-manager
    config:
      rbac:
        expose_functions:
          - match("pub::*")
          - match: "orders::*"
            namespace: orders
          - match: match('x::*')
          - metadata: {public: true}
            namespace: analytics
`), env())
	if err != nil {
		t.Fatal(err)
	}
	got := c.Listeners[0].RBAC.ExposeFunctions
	want := []struct {
		match, ns string
		meta      bool
	}{{"pub::*", "", false}, {"orders::*", "orders", false}, {"x::*", "", false}, {"", "analytics", true}}
	if len(got) != len(want) {
		t.Fatalf("%d filters, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if g := got[i]; g.Match != w.match || g.Namespace != w.ns || (g.Metadata != nil) != w.meta {
			t.Errorf("filter %d = %+v, want match %q namespace %q metadata %v", i, g, w.match, w.ns, w.meta)
		}
	}
}

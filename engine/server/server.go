// Package server assembles a ready iii engine behind one Start/Stop pair:
// the worker listener, the Redis store (an external Redis, a managed
// redis-server or the in-memory store), cluster membership and the modules
// of config.yaml. devserver (for `iii start` and `iii dev`) and the engine's
// tests (through enginetest) share it.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/cluster"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/store"
)

// KeyPrefix namespaces every Redis key the modules write.
const KeyPrefix = "iii:"

// Options configures a server.
type Options struct {
	// Config is the loaded config.yaml (or config.Default()). Nil runs the
	// bare core, no modules, on a free 127.0.0.1 port: what most tests want.
	Config *config.Config
	Logger *slog.Logger
	// RedisServer is the redis-server binary for the managed store; empty
	// looks it up on PATH.
	RedisServer string
	// Listener is the RBAC and middleware of the worker listener on
	// engine.host:engine.port (the first iii-worker-manager entry); the zero
	// value grants every worker full rights.
	Listener engine.ListenerOptions
	// Listeners are more worker listeners (further iii-worker-manager
	// entries), each on its own address with its own RBAC.
	Listeners []Listener
	// EventBuffer, when above 0, subscribes to the engine's events (with
	// this buffer) before any module starts, so that what a worker process
	// prints the moment it is spawned is not published to no one.
	// TakeEvents hands the subscription over.
	EventBuffer int
}

// Listener is one more worker listener.
type Listener struct {
	Addr string // host:port; port 0 picks a free one
	engine.ListenerOptions
}

// ListenError is returned when the worker listener on engine.host:port
// cannot be opened (the port is taken, say).
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string { return fmt.Sprintf("server: listen on %s: %v", e.Addr, e.Err) }
func (e *ListenError) Unwrap() error { return e.Err }

// ModuleError is returned when the modules fail to load; Entries are the
// module entries Start ran, in config order, so a caller can tell which
// listener a taken port belongs to.
type ModuleError struct {
	Entries []config.Module
	Err     error
}

func (e *ModuleError) Error() string { return e.Err.Error() }
func (e *ModuleError) Unwrap() error { return e.Err }

// Server is a running engine with its modules.
type Server struct {
	eng     *engine.Engine
	store   *store.Store
	modules *module.Set
	cluster *cluster.Cluster // nil unless config.yaml has cluster:
	addr    string
	extra   []string // addresses of Options.Listeners, in order
	redis   string   // RedisMode
	log     *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
	err    error
	once   sync.Once
	stopMu sync.Mutex

	early atomic.Pointer[event.Subscription] // Options.EventBuffer's, until taken
}

// Start checks the config, opens the store, builds the engine, loads the
// modules and serves workers. Everything acquired is released again when
// a step fails.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	cfg := opts.Config
	if cfg == nil {
		cfg = &config.Config{Engine: config.Engine{Host: config.DefaultHost}}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Engine.Port < 0 || cfg.Engine.Port > 65535 {
		return nil, fmt.Errorf("server: engine.port %d out of range 0-65535", cfg.Engine.Port)
	}
	cfg.LogWarnings(log)
	if err := fromListeners(cfg, &opts); err != nil {
		return nil, err
	}
	entries := cfg.Modules
	if !cfg.FromFile() {
		// The default set names every built-in module; run those this
		// binary has.
		entries = nil
		for _, m := range cfg.Modules {
			if _, ok := module.Lookup(m.ID); ok {
				entries = append(entries, m)
			} else {
				log.Debug("default module not built in; skipped", "module", m.ID)
			}
		}
	}
	if cfg.HTTPFunctions != nil {
		if _, ok := cfg.Module("httpfunctions"); !ok {
			hf, err := httpFunctionsEntry(cfg)
			if err != nil {
				return nil, fmt.Errorf("server: iii-http-functions: %w", err)
			}
			entries = append(entries[:len(entries):len(entries)], hf)
		}
	}

	if cfg.FromFile() && len(entries) == 0 {
		log.Warn("the config lists no modules: only the worker socket runs (no HTTP, cron, queue, state, stream or exec); add a modules: list", "file", cfg.File)
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Engine.Addr())
	if err != nil {
		return nil, &ListenError{Addr: cfg.Engine.Addr(), Err: err}
	}
	s := &Server{addr: ln.Addr().String(), log: log, done: make(chan struct{})}
	var extra []net.Listener
	defer func() {
		if err != nil {
			ln.Close()
			for _, l := range extra {
				l.Close()
			}
			s.release(context.WithoutCancel(ctx))
		}
	}()
	for _, l := range opts.Listeners {
		xl, lerr := lc.Listen(ctx, "tcp", l.Addr)
		if lerr != nil {
			return nil, fmt.Errorf("server: listen on %s (worker listener %q): %w", l.Addr, l.Name, lerr)
		}
		extra = append(extra, xl)
		s.extra = append(s.extra, xl.Addr().String())
	}

	s.eng, err = engine.New(engine.Options{Logger: log, AuthToken: string(cfg.Engine.AuthToken),
		InvocationTimeout: cfg.Engine.InvocationTimeout, MaxFrameBytes: cfg.Engine.MaxFrameBytes,
		SharedFunctions: cfg.Engine.SharedFunctions,
		Listener:        opts.Listener})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if opts.EventBuffer > 0 {
		s.early.Store(s.eng.Events().Subscribe(opts.EventBuffer))
	}
	host := module.Host{Engine: s.eng, KeyPrefix: KeyPrefix, Logger: log,
		WorkerURL: "ws://" + dialable(ln.Addr()), AuthToken: cfg.Engine.AuthToken}
	if cfg.FromFile() {
		host.ConfigDir = filepath.Dir(cfg.File)
	}
	if len(entries) > 0 {
		so, err := storeOptions(cfg, opts.RedisServer, log)
		if err != nil {
			return nil, err
		}
		if s.store, err = store.Open(ctx, so); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		host.Redis, host.RedisEmbedded = s.store.Client, s.store.Embedded
		s.redis = redisMode(s.store.Kind, s.store.DataDir, cfg.Redis.URL)
	}
	if cfg.Cluster != nil {
		s.cluster, err = cluster.New(cluster.Options{Config: *cfg.Cluster, RedisURL: cfg.Redis.URL, Engine: s.eng,
			AuthToken: string(cfg.Engine.AuthToken), Host: cfg.Engine.Host, WorkerURL: host.WorkerURL,
			KeyPrefix: KeyPrefix, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		if err = s.cluster.Start(ctx); err != nil {
			s.cluster.Stop(ctx)
			s.cluster = nil
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	if s.modules, err = module.Load(ctx, entries, host); err != nil {
		return nil, &ModuleError{Entries: entries, Err: err}
	}

	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	var listeners sync.WaitGroup
	lerrs := make([]error, len(extra))
	for i, xl := range extra {
		lo := opts.Listeners[i].ListenerOptions
		if lo.Name == "" {
			lo.Name = xl.Addr().String()
		}
		listeners.Add(1)
		// Exits when Stop cancels serveCtx or the engine shuts down.
		go func() {
			defer listeners.Done()
			lerrs[i] = s.eng.ServeListener(serveCtx, xl, lo)
		}()
	}
	// Exits when Stop cancels serveCtx and the engine has shut down.
	go func() {
		defer close(s.done)
		err := s.eng.Serve(serveCtx, ln)
		listeners.Wait()
		s.err = errors.Join(append([]error{err}, lerrs...)...)
	}()
	log.Info("engine ready", "url", s.URL(), "modules", s.modules.IDs(), "auth", cfg.Engine.AuthToken != "")
	return s, nil
}

// fromListeners maps the iii-worker-manager entries onto opts: the first
// is the engine's own listener (engine.host:port), the others are served
// beside it. Listeners given in opts explicitly are kept.
func fromListeners(cfg *config.Config, opts *Options) error {
	for i, l := range cfg.Listeners {
		lo, err := listenerOptions(l)
		if err != nil {
			return fmt.Errorf("server: %s:%d: iii-worker-manager: %w", cfg.File, l.Line, err)
		}
		if i == 0 {
			if opts.Listener.RBAC == nil && opts.Listener.MiddlewareFunctionID == "" {
				opts.Listener = lo
			}
			continue
		}
		opts.Listeners = append(opts.Listeners, Listener{Addr: net.JoinHostPort(l.Host, strconv.Itoa(l.Port)), ListenerOptions: lo})
	}
	return nil
}

// listenerOptions is the engine's form of one iii-worker-manager entry.
func listenerOptions(l config.Listener) (engine.ListenerOptions, error) {
	lo := engine.ListenerOptions{Name: net.JoinHostPort(l.Host, strconv.Itoa(l.Port)),
		MiddlewareFunctionID: l.MiddlewareFunctionID, HandshakeTimeout: l.HandshakeTimeout}
	if l.RBAC == nil {
		return lo, nil
	}
	lo.RBAC = &engine.RBAC{
		AuthFunctionID:                      l.RBAC.AuthFunctionID,
		OnFunctionRegistrationFunctionID:    l.RBAC.OnFunctionRegistrationFunctionID,
		OnTriggerRegistrationFunctionID:     l.RBAC.OnTriggerRegistrationFunctionID,
		OnTriggerTypeRegistrationFunctionID: l.RBAC.OnTriggerTypeRegistrationFunctionID,
	}
	for _, f := range l.RBAC.ExposeFunctions {
		ef := engine.FunctionFilter{Match: f.Match, Namespace: f.Namespace}
		if f.Metadata != nil {
			ef.Metadata = make(map[string]engine.MetadataMatch, len(f.Metadata))
			for k, m := range f.Metadata {
				v, err := jsonValue(m.Value)
				if err != nil {
					return lo, fmt.Errorf("expose_functions metadata %q: %w", k, err)
				}
				ef.Metadata[k] = engine.MetadataMatch{Pattern: m.Pattern, IsPattern: m.IsPattern, Value: v}
			}
		}
		lo.RBAC.ExposeFunctions = append(lo.RBAC.ExposeFunctions, ef)
	}
	return lo, nil
}

// jsonValue is a YAML-decoded value as encoding/json would decode it, so
// it compares equal to function metadata.
func jsonValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}

// httpFunctionsEntry is the module entry of an iii-http-functions worker.
func httpFunctionsEntry(cfg *config.Config) (config.Module, error) {
	hf := cfg.HTTPFunctions
	m := config.Module{ID: "httpfunctions", Class: "iii-http-functions", Line: hf.Line}
	err := m.Config.Encode(map[string]any{"security": map[string]any{
		"url_allowlist": hf.URLAllowlist, "block_private_ips": hf.BlockPrivateIPs, "require_https": hf.RequireHTTPS}})
	return m, err
}

// dialable is addr with an unspecified IP (0.0.0.0, ::) replaced by the
// loopback address of the same family, so local workers can dial it.
func dialable(addr net.Addr) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return addr.String()
	}
	ip := net.IPv4(127, 0, 0, 1)
	if ta.IP.To4() == nil {
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(ta.Port))
}

// release stops what Start acquired before serving began.
func (s *Server) release(ctx context.Context) {
	if s.modules != nil {
		s.modules.Stop(ctx)
	}
	if s.eng != nil {
		s.eng.Shutdown(ctx)
	}
	if s.cluster != nil {
		s.cluster.Stop(ctx)
	}
	if s.store != nil {
		s.store.Close()
	}
}

// Cluster is the engine's cluster membership, nil without cluster: in
// config.yaml.
func (s *Server) Cluster() *cluster.Cluster { return s.cluster }

// Engine is the running engine.
func (s *Server) Engine() *engine.Engine { return s.eng }

// Modules is the set of started modules.
func (s *Server) Modules() *module.Set { return s.modules }

// Addr is the worker socket's host:port.
func (s *Server) Addr() string { return s.addr }

// ListenerAddrs are the host:port of Options.Listeners, in order.
func (s *Server) ListenerAddrs() []string { return append([]string(nil), s.extra...) }

// URL is the worker WebSocket URL (what III_URL should be).
func (s *Server) URL() string { return "ws://" + s.addr }

// RedisMode describes the store for people: "memory, lost on exit",
// "managed <data dir>", "external <url without password>", or "" when no
// module needed one.
func (s *Server) RedisMode() string { return s.redis }

func redisMode(kind store.Kind, dataDir, rawURL string) string {
	switch kind {
	case store.KindMemory:
		return "memory, lost on exit"
	case store.KindManaged:
		return "managed " + dataDir
	}
	if u, err := url.Parse(rawURL); err == nil {
		return "external " + u.Redacted()
	}
	return "external"
}

// DefaultDataDir is the managed store's data directory, relative to the
// config file's folder (the working directory without a file).
const DefaultDataDir = ".iii/data"

// storeOptions picks the store: the URL when set, else cfg.Redis.Store,
// where empty means memory (iii start sets managed before it gets here).
func storeOptions(cfg *config.Config, redisServer string, log *slog.Logger) (store.Options, error) {
	o := store.Options{URL: cfg.Redis.URL, Kind: store.KindMemory, RedisServer: redisServer, Logger: log}
	if o.URL != "" {
		return o, nil
	}
	switch cfg.Redis.Store {
	case config.StoreMemory, "":
		return o, nil
	case config.StoreManaged:
		o.Kind = store.KindManaged
	default:
		return o, fmt.Errorf("server: redis.store %q: want %s or %s", cfg.Redis.Store, config.StoreMemory, config.StoreManaged)
	}
	dir := cfg.Redis.DataDir
	if dir == "" {
		dir = filepath.FromSlash(DefaultDataDir)
	}
	if !filepath.IsAbs(dir) {
		base := "."
		if cfg.FromFile() {
			base = filepath.Dir(cfg.File)
		}
		abs, err := filepath.Abs(filepath.Join(base, dir))
		if err != nil {
			return o, fmt.Errorf("server: redis.data_dir: %w", err)
		}
		dir = abs
	}
	o.DataDir = dir
	return o, nil
}

// TakeEvents returns the subscription Options.EventBuffer opened before
// the modules started, holding every event since; the caller closes it.
// Nil without EventBuffer, and on every call after the first.
func (s *Server) TakeEvents() *event.Subscription {
	return s.early.Swap(nil)
}

// Stop stops the modules (their listeners finish what is in flight while
// the engine still routes), then the engine, then closes the store. It is
// safe to call more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	var errs []error
	s.once.Do(func() {
		if s.cluster != nil {
			s.cluster.Withdraw(ctx) // peers stop forwarding here first
		}
		errs = append(errs, s.modules.Stop(ctx))
		s.cancel()
		if sub := s.TakeEvents(); sub != nil {
			sub.Close()
		}
	})
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("server: stop: %w", ctx.Err())
	}
	if s.err != nil && !errors.Is(s.err, context.Canceled) {
		errs = append(errs, s.err)
	}
	if s.cluster != nil {
		errs = append(errs, s.cluster.Stop(ctx))
		s.cluster = nil
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, err)
		}
		s.store = nil
	}
	return errors.Join(errs...)
}

// Package enginetest starts engines for tests, on loopback sockets, stopped
// at the test's cleanup:
//
//   - New: the bare engine core (engine.Options), served on a free port;
//   - Start: a whole engine (store, cluster, modules) from the text of a
//     config.yaml, its log kept in memory and shown when the test fails;
//   - Dial: a raw protocol worker that speaks frame by frame;
//   - Context: the test's context with a deadline.
//
// It imports no module: a test loads the modules its config names by
// importing them (module packages' own tests have theirs already).
package enginetest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/server"
	"github.com/iii-workbench/iii/engine/testctx"
)

// Timeout is the deadline of Context and of stopping an engine at cleanup.
const Timeout = testctx.Timeout

// Context is the test's context, cancelled after Timeout or when the test
// ends (testctx.New).
func Context(t testing.TB) context.Context {
	t.Helper()
	return testctx.New(t)
}

// ContextWithin is Context with deadline d (testctx.Within).
func ContextWithin(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	return testctx.Within(t, d)
}

// Engine is a bare engine served on a loopback socket.
type Engine struct {
	*engine.Engine
	URL  string // ws://127.0.0.1:port
	Logs *Logs  // the engine's log at debug level, unless opts.Logger was set
}

// Option changes how New and Serve serve the engine.
type Option func(*serveOptions)

type serveOptions struct {
	wrap func(net.Listener) net.Listener
}

// WithListener wraps the loopback listener, e.g. to set socket options on
// accepted connections.
func WithListener(wrap func(net.Listener) net.Listener) Option {
	return func(o *serveOptions) { o.wrap = wrap }
}

// New builds an engine from opts, serves it on a free loopback port and
// shuts it down at cleanup, failing the test if that fails. Without
// opts.Logger the engine logs into Engine.Logs, printed if the test fails.
func New(t testing.TB, opts engine.Options, o ...Option) *Engine {
	t.Helper()
	te := &Engine{}
	if opts.Logger == nil {
		te.Logs = &Logs{}
		opts.Logger = te.Logs.Logger()
		t.Cleanup(func() { te.Logs.dumpIfFailed(t) })
	}
	eng, err := engine.New(opts)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	te.Engine = eng
	// Cleanups run last-registered first: the shutdown closes the worker
	// sockets before Serve's cleanup closes the listener.
	te.URL = Serve(t, eng, o...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := eng.Shutdown(ctx); err != nil {
			t.Errorf("engine shutdown: %v", err)
		}
	})
	return te
}

// Serve serves eng, which the test owns and shuts down, on a free loopback
// port closed at cleanup, and returns its worker URL.
func Serve(t testing.TB, eng *engine.Engine, o ...Option) string {
	t.Helper()
	var so serveOptions
	for _, f := range o {
		f(&so)
	}
	srv := httptest.NewUnstartedServer(eng.Handler())
	if so.wrap != nil {
		srv.Listener = so.wrap(srv.Listener)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// Server is a whole engine started from a config.
type Server struct {
	*server.Server
	Logs *Logs // the engine's log, at debug level
}

// Start parses yaml as config.yaml (interpolating from the environment)
// and starts it as StartConfig does.
func Start(t testing.TB, ctx context.Context, yaml string) *Server {
	t.Helper()
	cfg, err := config.Parse("config.yaml", []byte(yaml), os.LookupEnv)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", yaml, err)
	}
	return StartConfig(t, ctx, cfg)
}

// StartModule starts an engine with one module: class (as config.yaml
// names it) with config, a YAML flow map ("" for none), on the Redis at
// redisURL ("" for the in-memory store).
func StartModule(t testing.TB, ctx context.Context, redisURL, class, config string) *Server {
	t.Helper()
	return Start(t, ctx, ModuleConfig(redisURL, class, config))
}

// ModuleConfig is the config.yaml of StartModule: a free loopback port,
// the Redis at redisURL, one module.
func ModuleConfig(redisURL, class, config string) string {
	yaml := "engine: {host: 127.0.0.1, port: 0}\n"
	if redisURL != "" {
		yaml += fmt.Sprintf("redis: {url: %q}\n", redisURL)
	}
	yaml += "modules:\n  - class: " + class + "\n"
	if config != "" {
		yaml += "    config: " + config + "\n"
	}
	return yaml
}

// StartConfig starts a whole engine from cfg, logging at debug level into
// Server.Logs, and stops it when the test ends, printing the log if the
// test failed. Stopping it earlier with Stop is fine.
func StartConfig(t testing.TB, ctx context.Context, cfg *config.Config) *Server {
	t.Helper()
	logs := &Logs{}
	srv, err := server.Start(ctx, server.Options{Config: cfg, Logger: logs.Logger()})
	if err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := srv.Stop(sctx); err != nil {
			t.Errorf("server stop: %v", err)
		}
		logs.dumpIfFailed(t)
	})
	return &Server{Server: srv, Logs: logs}
}

// Logs collects log output from several goroutines.
type Logs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger is a text logger at debug level writing into l.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *Logs) dumpIfFailed(t testing.TB) {
	if t.Failed() {
		t.Logf("engine log:\n%s", l.String())
	}
}

// WaitFor polls cond until it holds, failing the test after Timeout.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TryStart parses yaml as config.yaml (interpolating from the
// environment), starts an engine from it and stops it again, and returns
// the first error: for tests of what a config is refused for.
func TryStart(ctx context.Context, yaml string) error {
	cfg, err := config.Parse("config.yaml", []byte(yaml), os.LookupEnv)
	if err != nil {
		return err
	}
	srv, err := server.Start(ctx, server.Options{Config: cfg})
	if err != nil {
		return err
	}
	return srv.Stop(ctx)
}

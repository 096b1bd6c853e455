// Package httpapi is the HTTP API module (RestApiModule, iii-http): it
// serves the "http" trigger type on its own listener (127.0.0.1:3111 by
// default) and turns each matching request into a call of the bound
// function, and the function's result into the HTTP response (spec §3.3).
//
// A trigger binds a function to a route:
//
//	{"type": "http", "function_id": "users::get",
//	 "config": {"api_path": "users/:id", "http_method": "GET",
//	            "auth": {"type": "bearer", "token_key": "USERS_API_TOKEN"}}}
//
// api_path takes ":name" (or "{name}") parameter segments, with or without
// a leading "/"; http_method is one of GET POST PUT DELETE PATCH HEAD
// OPTIONS (default GET, any case). Two routes with the same method and
// shape (parameter names ignored) conflict: the later one is refused with
// trigger_registration_failed. A literal segment wins over a parameter
// ("users/me" before "users/:id"); HEAD falls back to the GET route.
//
// Per-route auth compares a header with a secret read from the engine's
// environment when the trigger is registered (an unset variable refuses the
// registration): {type: bearer, token_key: ENV} wants "Authorization:
// Bearer <$ENV>", {type: api_key, header: X-Key, value_key: ENV} wants
// "X-Key: <$ENV>". condition_function_id and middleware_function_ids work
// as in iii, and so does the module's middleware list.
//
// Errors are JSON envelopes {"error":{"code","message","error_id"}}
// (error_id, on 5xx only, is also logged): 404 NOT_FOUND for no route,
// 401 UNAUTHORIZED, 413 PAYLOAD_TOO_LARGE (decided from Content-Length
// before any of the body is read, or when a chunked body passes the limit),
// 500 with the function's own error code, 503 function_not_found when the
// route's function is not registered (the worker may come back: retry),
// 504 TIMEOUT after default_timeout (iii sends 504 with an empty body).
// A request refused for its route, auth or size never reaches a function.
//
// config.yaml (every key optional; defaults shown, cors and middleware are
// examples):
//
//	modules:
//	  - class: RestApiModule             # or iii-http, modules::api::RestApiModule
//	    config:
//	      host: 127.0.0.1
//	      port: 3111                     # 0: any free port (see Addr)
//	      default_timeout: 30000         # ms from request headers to the answer → 504
//	      body_limit: 1048576            # bytes of a JSON body → 413
//	      stream_body_limit: 1073741824  # bytes of any other body → 413 (or the stream cut)
//	      concurrency_request_limit: 1024
//	      cors: {allowed_origins: ["https://app.example.com"], allowed_methods: [GET, POST]}
//	      middleware: [{function_id: auth::check, phase: preHandler, priority: 0}]
//
// Without cors, CORS is permissive (any origin, method and header).
//
// Responses follow iii: a result with status_code, headers or body is a
// response object. Unlike iii, any other result (a plain object, an array, a
// string...) is sent as the JSON body of a 200 rather than dropped for {};
// see mapResponse.
//
// Streaming (spec §3.3): every request object carries two channel refs,
// request_body (read) and response (write), served on the engine's worker
// port (see package engine/channel). A JSON body is read whole (up to
// body_limit), parsed into body and also offered on request_body; any
// other body (raw, multipart, large uploads) is not read by the engine:
// body is null and the bytes go, as they arrive, to whoever opens
// request_body, up to stream_body_limit (a larger body ends the stream
// with 1009 and, if nothing was answered yet, the client gets 413). A body
// cut off by the client ends the function's stream early with a 1011
// close. A function may answer through response instead of returning: text
// items {"type":"set_status","status_code":N} and {"type":"set_headers",
// "headers":{...}} first, then binary items written to the client as they
// come (each flushed, so server-sent events arrive one by one); its Close
// ends the response, a writer that vanishes mid-body cuts it. If the
// function returns a value before the first body item, the value answers
// and the channel is closed (1001). If it returns nothing, the engine
// waits for the stream: until default_timeout (504) once the response
// channel is open, or one second for it to open (the SDKs open it after
// the handler may have returned), then {} as before. Nothing is allocated
// per request beyond the two table entries until the function opens a
// channel: each open end costs one goroutine for its socket.
package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/module"
)

// Worker is the in-process worker name the module registers as.
const Worker = "iii-http"

// TriggerType is the trigger type the module provides.
const TriggerType = "http"

// Defaults.
const (
	DefaultHost                    = "127.0.0.1"
	DefaultPort                    = 3111
	DefaultTimeoutMS               = 30000
	DefaultBodyLimit               = 1 << 20
	DefaultStreamBodyLimit         = 1 << 30
	DefaultConcurrencyRequestLimit = 1024
	readHeaderTimeout              = 10 * time.Second
	idleTimeout                    = 2 * time.Minute
)

func init() {
	module.Register(module.Info{ID: "http", New: func() module.Module { return New() }})
}

// Middleware is one entry of the module's middleware list: a function
// called before every route's handler, in priority order (lowest first).
type Middleware struct {
	FunctionID string `yaml:"function_id"`
	// Phase must be "preHandler" (the only phase iii has); empty means it.
	Phase    string `yaml:"phase"`
	Priority int64  `yaml:"priority"`
}

// Module is the HTTP API module. Its exported fields are its config.yaml
// block.
type Module struct {
	Host string `yaml:"host"`
	// Port 0 takes any free port; see Addr.
	Port int `yaml:"port"`
	// DefaultTimeout (ms) bounds each request from its headers to the
	// function's answer; past it the client gets 504.
	DefaultTimeout int `yaml:"default_timeout"`
	// BodyLimit is the largest JSON request body accepted, in bytes (a
	// JSON body is read whole and parsed into the request's body).
	BodyLimit int64 `yaml:"body_limit"`
	// StreamBodyLimit is the largest other body (raw, multipart...), in
	// bytes; such a body is not read by the engine but streamed to the
	// function through its request_body channel. iii has no such limit.
	StreamBodyLimit int64 `yaml:"stream_body_limit"`
	// ConcurrencyRequestLimit is how many requests are handled at once;
	// more wait for a slot (within their timeout).
	ConcurrencyRequestLimit int          `yaml:"concurrency_request_limit"`
	CORS                    *CORS        `yaml:"cors"`
	Middleware              []Middleware `yaml:"middleware"`

	getenv     func(string) (string, bool)
	routes     *table
	cors       *corsPolicy
	middleware []string // function ids, sorted by priority
	timeout    time.Duration
	sem        chan struct{}

	eng *engine.Engine
	log *slog.Logger

	// life owns the Serve goroutine and runs Stop once. Requests get a
	// context of their own (cancel), not life's: Stop lets them finish
	// until its deadline and cancels them only then.
	life module.Lifecycle

	mu     sync.Mutex // guards the fields below
	srv    *http.Server
	addr   string
	cancel context.CancelFunc // ends every request's context
}

// New returns a module holding the default config.
func New() *Module {
	return &Module{
		Host:                    DefaultHost,
		Port:                    DefaultPort,
		DefaultTimeout:          DefaultTimeoutMS,
		BodyLimit:               DefaultBodyLimit,
		StreamBodyLimit:         DefaultStreamBodyLimit,
		ConcurrencyRequestLimit: DefaultConcurrencyRequestLimit,
		getenv:                  os.LookupEnv,
		routes:                  newTable(),
	}
}

var (
	_ module.Module    = (*Module)(nil)
	_ module.Validator = (*Module)(nil)
)

// ID implements module.Module.
func (m *Module) ID() string { return "http" }

// Validate checks the config and prepares what the handler needs.
func (m *Module) Validate() error {
	if m.Port < 0 || m.Port > 65535 {
		return fmt.Errorf("port %d is out of range 0-65535", m.Port)
	}
	if m.DefaultTimeout <= 0 {
		return fmt.Errorf("default_timeout must be a positive number of milliseconds, got %d", m.DefaultTimeout)
	}
	if m.BodyLimit <= 0 {
		return fmt.Errorf("body_limit must be a positive number of bytes, got %d", m.BodyLimit)
	}
	if m.StreamBodyLimit == 0 {
		m.StreamBodyLimit = DefaultStreamBodyLimit
	}
	if m.StreamBodyLimit < 0 {
		return fmt.Errorf("stream_body_limit must be a positive number of bytes, got %d", m.StreamBodyLimit)
	}
	if m.ConcurrencyRequestLimit < 1 {
		return fmt.Errorf("concurrency_request_limit must be at least 1, got %d", m.ConcurrencyRequestLimit)
	}
	cors, err := newCORSPolicy(m.CORS)
	if err != nil {
		return err
	}
	mws := slices.Clone(m.Middleware)
	for i, mw := range mws {
		if mw.FunctionID == "" {
			return fmt.Errorf("middleware[%d].function_id is required", i)
		}
		if mw.Phase != "" && mw.Phase != "preHandler" {
			return fmt.Errorf("middleware[%d].phase %q: only preHandler is supported", i, mw.Phase)
		}
	}
	slices.SortStableFunc(mws, func(a, b Middleware) int { return cmp.Compare(a.Priority, b.Priority) })
	m.middleware = m.middleware[:0]
	for _, mw := range mws {
		m.middleware = append(m.middleware, mw.FunctionID)
	}
	m.cors = cors
	m.timeout = time.Duration(m.DefaultTimeout) * time.Millisecond
	m.sem = make(chan struct{}, m.ConcurrencyRequestLimit)
	return nil
}

// Start listens, registers the http trigger type and serves requests.
func (m *Module) Start(ctx context.Context, h *module.Host) error {
	if m.sem == nil { // Start without Validate (tests building a Module by hand)
		if err := m.Validate(); err != nil {
			return err
		}
	}
	m.eng = h.Engine
	m.log = h.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.getenv == nil {
		m.getenv = os.LookupEnv
	}
	if m.routes == nil {
		m.routes = newTable()
	}
	addr := net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", addr, err)
	}
	if err := m.eng.RegisterTriggerType(Worker, engine.TriggerType{
		ID:                   TriggerType,
		Description:          "HTTP route: calls the function for each matching request",
		TriggerRequestFormat: triggerRequestFormat,
		Provider:             provider{m},
	}); err != nil {
		ln.Close()
		return fmt.Errorf("http: %w", err)
	}
	m.life.Begin(ctx, m.eng)
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv := &http.Server{
		Handler:           m,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	m.mu.Lock()
	m.srv, m.addr, m.cancel = srv, ln.Addr().String(), cancel
	m.mu.Unlock()
	// Exits when Stop shuts the server down.
	m.life.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("http api stopped serving", "addr", ln.Addr().String(), "err", err)
		}
	})
	m.log.InfoContext(ctx, "http api listening", "addr", m.addr, "url", "http://"+m.addr,
		"default_timeout_ms", m.DefaultTimeout, "body_limit", m.BodyLimit)
	return nil
}

// Addr is the bound host:port ("" before Start).
func (m *Module) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addr
}

// Stop stops accepting requests and waits for those in flight within ctx;
// past ctx's deadline their contexts are cancelled and their connections
// closed. It may be called more than once.
func (m *Module) Stop(ctx context.Context) error {
	m.mu.Lock()
	srv, cancel, addr := m.srv, m.cancel, m.addr
	m.mu.Unlock()
	if srv == nil || m.life.Stopping() {
		return nil
	}
	err := m.life.Stop(ctx, func() error {
		err := srv.Shutdown(ctx)
		cancel()
		if err != nil {
			srv.Close()
			return fmt.Errorf("http: shutdown %s: %w", addr, err)
		}
		return nil
	})
	m.log.InfoContext(ctx, "http api stopped", "addr", addr, "routes", m.routes.len())
	return err
}

// provider implements engine.TriggerProvider for the http trigger type.
type provider struct{ m *Module }

// RegisterTrigger adds (or, for a known id, replaces) a route.
func (p provider) RegisterTrigger(ctx context.Context, t engine.Trigger) error {
	rt, err := parseRoute(t.ID, t.FunctionID, t.Namespace(), t.Config, t.Metadata, p.m.getenv)
	if err != nil {
		return err
	}
	if err := p.m.routes.add(rt); err != nil {
		return err
	}
	p.m.log.InfoContext(ctx, "http route added", "route", rt.String(), "function_id", rt.functionID,
		"trigger_id", rt.triggerID, "auth", rt.auth != nil)
	return nil
}

// UnregisterTrigger removes a route.
func (p provider) UnregisterTrigger(ctx context.Context, t engine.Trigger) error {
	if p.m.routes.remove(t.ID) {
		p.m.log.InfoContext(ctx, "http route removed", "trigger_id", t.ID, "function_id", t.FunctionID)
	}
	return nil
}

var triggerRequestFormat = []byte(`{"type":"object","required":["api_path"],"properties":{` +
	`"api_path":{"type":"string","description":"route pattern, :name segments are path parameters"},` +
	`"http_method":{"type":"string","enum":["GET","POST","PUT","DELETE","PATCH","HEAD","OPTIONS"],"default":"GET"},` +
	`"auth":{"type":"object","description":"{type: bearer, token_key: ENV} or {type: api_key, header, value_key: ENV}"},` +
	`"condition_function_id":{"type":"string"},` +
	`"middleware_function_ids":{"type":"array","items":{"type":"string"}}}}`)

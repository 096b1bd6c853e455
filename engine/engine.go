// Package engine is the iii function-routing core: it accepts worker
// WebSockets, keeps the worker registry, the function table and the trigger
// bindings, routes every invocation and publishes each state change on an
// event bus. Built-in modules plug in through the same function and trigger
// type tables that remote workers use.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine/channel"
	"github.com/iii-workbench/iii/engine/cork"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/internal/waitgroup"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxFrameBytes       = MaxMessageBytes
	DefaultInvocationTimeout   = 5 * time.Minute
	DefaultOutboundQueueBytes  = 4 << 20
	DefaultSlowConsumerTimeout = 30 * time.Second
	DefaultWriteTimeout        = 10 * time.Second
	DefaultHandshakeTimeout    = 10 * time.Second
)

// Error codes the engine produces; the codes live in engine/protocol.
const (
	CodeFunctionNotFound   = protocol.CodeFunctionNotFound
	CodeInvocationStopped  = protocol.CodeInvocationStopped
	CodeTimeout            = protocol.CodeTimeout
	CodeShutdown           = protocol.CodeShutdown
	CodeChannelSendFailed  = protocol.CodeChannelSendFailed
	CodeEnqueueError       = protocol.CodeEnqueueError
	CodeInvalidArguments   = protocol.CodeInvalidArguments
	CodeNotFound           = protocol.CodeNotFound
	CodeDeserialization    = protocol.CodeDeserialization
	CodeTriggerRegFailed   = protocol.CodeTriggerRegistrationFailed
	CodeUnregisterFailed   = protocol.CodeUnregisterFailed
	CodeInvocationError    = protocol.CodeInvocationError
	CodeFunctionNotAllowed = protocol.CodeFunctionNotAllowed
)

// ErrEngineClosed is returned by calls made after Shutdown began.
var ErrEngineClosed = errors.New("engine: closed")

// TelemetrySink receives the binary OTLP/MTRC/LOGS frames workers send.
// kind is the 4-byte prefix, payload the OTLP JSON after it. Telemetry must
// not block: the sink is called from the worker's read loop.
type TelemetrySink interface {
	Telemetry(workerID, kind string, payload []byte)
}

// Options configures an Engine. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// AuthToken, when set, is required as "Authorization: Bearer <token>" on
	// every WebSocket upgrade ("/" and "/otel"); others get 401.
	AuthToken string
	// InvocationTimeout bounds every routed call (leak guard); code "timeout".
	InvocationTimeout time.Duration
	// MaxFrameBytes is the read limit per message (64 MiB, at most
	// MaxFrameBytesLimit), whether it comes as one frame or fragments. A
	// larger message is read to its end and discarded: a call in it is
	// answered, a result in it completes its call, with payload_too_large;
	// the socket stays open (only a message over four times the limit
	// closes it with 1009).
	MaxFrameBytes int64
	// OutboundQueueBytes is the high-water mark of each worker's outbound
	// queue (4 MiB): at or above it, producers of calls to that worker
	// wait — the sending worker's reader pauses, in-process callers block
	// with their context — until the queue drains to half of it. Answers
	// and control frames are never held back; nothing is dropped.
	OutboundQueueBytes int
	// SlowConsumerTimeout (30 s) is how long a worker's writer may stay
	// unable to write anything before the worker is closed as a slow
	// consumer; every call pending on it then ends with
	// invocation_stopped.
	SlowConsumerTimeout time.Duration
	// PingInterval is how long a worker socket may stay silent before the
	// engine pings it; a ping unanswered within PingTimeout closes the
	// socket (a half-open TCP connection to a vanished host). Zero means
	// 30 s and 10 s; a negative interval turns keepalive off.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// SharedFunctions lets several live workers serve one function id in
	// a namespace (calls go to the least busy), also for workers of the
	// 0.25+ SDKs, which are otherwise refused a function id another live
	// worker serves (FUNCTION_NAMESPACE_CONFLICT). Workers of the 0.22
	// SDKs always share. See namespace.go.
	SharedFunctions bool
	// TelemetrySink receives worker telemetry frames; nil counts and drops.
	TelemetrySink TelemetrySink
	// Listener configures the worker listener of Handler and Serve (its
	// RBAC and middleware); the zero value grants every worker full
	// rights. More listeners are served with ServeListener.
	Listener ListenerOptions
}

// DefaultRBACCallTimeout bounds each call of a listener's auth function and
// registration hooks when ListenerOptions.CallTimeout is zero.
const DefaultRBACCallTimeout = 10 * time.Second

// ListenerOptions configures one worker listener: an iii-worker-manager
// entry of iii's config (spec §1.5, §5.3). The engine's bearer token
// (Options.AuthToken) applies on every listener, before its RBAC.
type ListenerOptions struct {
	// Name labels the listener in logs, e.g. "127.0.0.1:49135".
	Name string
	// MiddlewareFunctionID, when set, receives every invocation a worker of
	// this listener makes of a function outside engine::, as
	// {function_id, payload, action, context}; its answer is the caller's.
	MiddlewareFunctionID string
	// RBAC restricts what the listener's workers may call and register;
	// nil grants full rights.
	RBAC *RBAC
	// CallTimeout bounds each call of the auth function and of the
	// registration hooks (zero: DefaultRBACCallTimeout). An auth function
	// that does not answer in time refuses the connection with AUTH_ERROR.
	CallTimeout time.Duration
	// HandshakeTimeout bounds reading the upgrade request on ServeListener
	// (zero: DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
}

func (o *Options) withDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.InvocationTimeout <= 0 {
		o.InvocationTimeout = DefaultInvocationTimeout
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = DefaultMaxFrameBytes
	}
	o.MaxFrameBytes = min(o.MaxFrameBytes, MaxFrameBytesLimit)
	if o.OutboundQueueBytes <= 0 {
		o.OutboundQueueBytes = DefaultOutboundQueueBytes
	}
	if o.SlowConsumerTimeout <= 0 {
		o.SlowConsumerTimeout = DefaultSlowConsumerTimeout
	}
	if o.PingInterval == 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 10 * time.Second
	}
}

// Engine routes invocations between workers and in-process functions.
//
// Lock order: Engine.tmu, then Engine.mu, then conn.mu, then outq.mu. No I/O happens under
// any of them (queueing a frame is in-memory).
type Engine struct {
	opts Options
	log  *slog.Logger
	bus  event.Bus

	// ctx is the engine's lifetime; cancelled when Shutdown begins.
	ctx    context.Context
	cancel context.CancelFunc

	// tmu serialises trigger changes with their delivery to providers and
	// their events, so providers and subscribers see them in order. It is
	// taken before mu and held while providers are called (never mu).
	tmu sync.Mutex

	mu        sync.RWMutex
	closing   bool
	conns     map[string]*conn // worker id -> live connection
	functions map[string]*function
	ttypes    map[string]*triggerType
	triggers  map[string]*binding     // binding id -> binding (what providers serve)
	claims    map[string]*claim       // trigger id a registrant chose -> its claim
	boundKeys map[bindingKey]*binding // (type, function, config) -> binding
	services  map[string]service
	locals    map[string]*localWorker // in-process "workers" by name

	ackMu   sync.Mutex
	ackWait map[string]chan *ackResult // trigger id -> waiter (engine::register_trigger)

	group   waitgroup.Group // every goroutine the engine starts; refuses once Shutdown begins
	connsWG sync.WaitGroup  // every worker socket handler

	funcsChanged chan struct{} // cap 1; coalesces functions-available firings

	featMu    sync.RWMutex
	features  []string                    // advertised in workerregistered (features.go)
	declHooks []func(c *conn, first bool) // run when a worker declares itself; set in New

	channels *channel.Manager // streaming channels; closed by Shutdown

	// refused records function registrations an RBAC rule or hook turned
	// down, so a call of such an id says why it is not found. Guarded by mu.
	refused map[string]refusal

	external atomic.Pointer[externalProvider] // HTTP-invoked functions, or nil

	obs  observers // the observer registry (observe.go)
	srcs sync.Map  // function id -> *triggerSource, the built-in sources (sources.go)

	sink          atomic.Pointer[TelemetrySink]
	fwd           atomic.Pointer[Forwarder] // nil: a single engine (forward.go)
	drops         dropCounters
	slowConsumers atomic.Uint64 // workers closed as slow consumers
	stalls        atomic.Uint64 // times a producer waited for a full queue

	breaks breakpoints // calls held for the user (breakpoints.go)
}

// New builds an engine with its built-in functions and trigger types.
func New(opts Options) (*Engine, error) {
	opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		opts:         opts,
		log:          opts.Logger.With("component", "engine"),
		ctx:          ctx,
		cancel:       cancel,
		conns:        make(map[string]*conn),
		functions:    make(map[string]*function),
		ttypes:       make(map[string]*triggerType),
		triggers:     make(map[string]*binding),
		claims:       make(map[string]*claim),
		boundKeys:    make(map[bindingKey]*binding),
		services:     make(map[string]service),
		locals:       make(map[string]*localWorker),
		ackWait:      make(map[string]chan *ackResult),
		refused:      make(map[string]refusal),
		funcsChanged: make(chan struct{}, 1),
	}
	// Messages up to 64 MiB both ways, fragmented or not (largemsg.go).
	e.Advertise(FeatureLargeMessagesV1)
	e.SetTelemetrySink(opts.TelemetrySink)
	e.channels = channel.NewManager(channel.Options{Logger: opts.Logger})
	e.obs.init()
	e.onDeclared(e.obsDeclared)
	if err := errors.Join(e.registerBuiltins(), e.registerObserveBuiltins(), e.registerConfiguration(), e.registerWatch(), e.registerBreakpoints()); err != nil {
		cancel()
		e.channels.Close(context.Background())
		return nil, fmt.Errorf("engine: built-ins: %w", err)
	}
	// Both exit when the engine's context is cancelled by Shutdown.
	if !e.group.Go(e.functionsAvailableLoop) || !e.group.Go(e.timeoutLoop) || !e.group.Go(e.stallLoop) || !e.group.Go(e.observeLoop) {
		cancel()
		e.channels.Close(context.Background())
		return nil, ErrEngineClosed
	}
	// Observers (observe.go): both dialects, and local dispatch.
	e.Advertise(protocol.FeatureObserveV1, protocol.FeatureObserveV2, protocol.FeatureLocalDispatchV1)
	return e, nil
}

// Events is the engine's event bus. Subscribers must keep up or lose events
// (counted per subscriber); they never slow the router.
func (e *Engine) Events() *event.Bus { return &e.bus }

// Logger is the engine's logger, for modules.
func (e *Engine) Logger() *slog.Logger { return e.opts.Logger }

// Channels is the engine's table of streaming channels (spec §1.4).
func (e *Engine) Channels() *channel.Manager { return e.channels }

// Handler serves the worker socket at "/", the telemetry-only socket at
// "/otel" and the channel sockets at "/ws/channels/{channel_id}", with the
// RBAC of Options.Listener.
func (e *Engine) Handler() http.Handler {
	return e.ListenerHandler(e.opts.Listener)
}

// ListenerHandler serves the worker socket at "/", the telemetry-only
// socket at "/otel" and the channel sockets for a listener with its own
// RBAC and middleware.
func (e *Engine) ListenerHandler(opts ListenerOptions) http.Handler {
	l := e.newListener(opts)
	mux := http.NewServeMux()
	mux.Handle("GET "+channel.Path+"{channel_id}", e.channels)
	mux.HandleFunc("/otel", func(w http.ResponseWriter, r *http.Request) { e.serveOTel(l, w, r) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { e.serveWorker(l, w, r) })
	return mux
}

// serveWorkers starts serving a worker listener on ln: an HTTP server
// whose sockets the writers can cork (cork.Listener, cork.ConnContext).
// The caller shuts srv down; errc then receives what Serve returned.
func (e *Engine) serveWorkers(ln net.Listener, opts ListenerOptions) (srv *http.Server, errc <-chan error) {
	hs := opts.HandshakeTimeout
	if hs <= 0 {
		hs = DefaultHandshakeTimeout
	}
	srv = &http.Server{
		Handler:           e.ListenerHandler(opts),
		ReadHeaderTimeout: hs,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		ConnContext:       cork.ConnContext,
	}
	served := make(chan error, 1)
	// Exits when the listener is closed by the caller's srv.Shutdown.
	go func() { served <- srv.Serve(cork.Listener{Listener: ln}) }()
	return srv, served
}

// ServeListener serves one more worker listener on ln until ctx is done,
// then stops accepting and returns. Unlike Serve it does not shut the
// engine down: the workers it accepted stay connected until they leave or
// the engine shuts down.
func (e *Engine) ServeListener(ctx context.Context, ln net.Listener, opts ListenerOptions) error {
	srv, errc := e.serveWorkers(ln, opts)
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		return err
	case <-ctx.Done():
	case <-e.ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
	defer cancel()
	err := srv.Shutdown(sctx) // hijacked worker sockets are the engine's
	<-errc
	return err
}

// Serve serves the engine on ln until ctx is done, then shuts down
// gracefully (bounded by DefaultWriteTimeout) and returns nil.
func (e *Engine) Serve(ctx context.Context, ln net.Listener) error {
	srv, errc := e.serveWorkers(ln, e.opts.Listener)
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		sctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
		defer cancel()
		return errors.Join(err, e.Shutdown(sctx))
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
	defer cancel()
	serr := srv.Shutdown(sctx) // stop accepting; hijacked sockets are ours
	<-errc
	return errors.Join(serr, e.Shutdown(sctx))
}

// Shutdown stops accepting workers, fails every pending call with
// engine_shutdown, closes worker sockets with 1001 and waits for the
// engine's goroutines until ctx is done.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	already := e.closing
	e.closing = true
	conns := make([]*conn, 0, len(e.conns))
	for _, c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.Unlock()
	e.group.Close()
	if !already {
		e.log.Info("engine shutting down", "workers", len(conns))
	}
	for _, c := range conns {
		c.failPending(CodeShutdown, "engine is shutting down")
	}
	for _, c := range conns {
		c.close(shutdownStatus(c), "engine shutting down")
	}
	e.cancel()
	cerr := e.channels.Close(ctx)
	if err := e.group.Wait(ctx, &e.connsWG); err != nil {
		return fmt.Errorf("engine: shutdown: %w", err)
	}
	return cerr
}

// isClosing reports whether Shutdown has begun.
func (e *Engine) isClosing() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.closing
}

// shutdownStatus is the close code a worker gets when the engine stops:
// 1001 (going away), except for Python iii-sdk workers, which stop
// reconnecting for good after a 1000/1001 close (the websockets iterator
// ends quietly; iii issue #2180). They get 1012 (service restart), which
// makes them reconnect when the engine comes back. They are recognised by
// the User-Agent of their upgrade request, or failing that by the runtime
// they report.
func shutdownStatus(c *conn) websocket.StatusCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.python || c.meta.Runtime == "python" {
		return websocket.StatusServiceRestart
	}
	return websocket.StatusGoingAway
}

// Stats are the engine's own counters, for metrics.
type Stats struct {
	Workers          int    // connected worker sockets
	Functions        int    // registered function ids
	Pending          int    // calls sent to workers and not yet answered
	TelemetryDropped uint64 // telemetry frames with no sink or no valid prefix
	SlowConsumers    uint64 // workers closed because they made no read progress
	// Stalls counts the times a producer waited for a worker's full
	// outbound queue (backpressure at work; nothing was dropped).
	Stalls uint64
	// Dropped counts frames and calls dropped, by reason (the Drop*
	// constants); every reason is present.
	Dropped map[string]uint64
}

// Dropped returns the frames and calls dropped so far, by reason (the
// Drop* constants; every reason is present). Cheaper than Stats.
func (e *Engine) Dropped() map[string]uint64 { return e.drops.snapshot() }

// Stats returns the current counters.
func (e *Engine) Stats() Stats {
	e.mu.RLock()
	st := Stats{Workers: len(e.conns), Functions: len(e.functions)}
	conns := make([]*conn, 0, len(e.conns))
	for _, c := range e.conns {
		conns = append(conns, c)
	}
	e.mu.RUnlock()
	for _, c := range conns {
		c.mu.Lock()
		st.Pending += len(c.pending)
		c.mu.Unlock()
	}
	st.Dropped = e.drops.snapshot()
	st.TelemetryDropped = st.Dropped[DropTelemetry]
	st.SlowConsumers = e.slowConsumers.Load()
	st.Stalls = e.stalls.Load()
	return st
}

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
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/internal/waitgroup"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxFrameBytes       = 16 << 20
	DefaultInvocationTimeout   = 5 * time.Minute
	DefaultOutboundQueueBytes  = 4 << 20
	DefaultSlowConsumerTimeout = 30 * time.Second
	DefaultWriteTimeout        = 10 * time.Second
	DefaultHandshakeTimeout    = 10 * time.Second
)

// Error codes the engine itself produces (beyond those of the iii spec).
const (
	CodeFunctionNotFound   = "function_not_found"
	CodeInvocationStopped  = "invocation_stopped"
	CodeTimeout            = "timeout"
	CodeShutdown           = "engine_shutdown"
	CodeChannelSendFailed  = "channel_send_failed"
	CodeEnqueueError       = "enqueue_error"
	CodeInvalidArguments   = "INVALID_ARGUMENTS"
	CodeNotFound           = "NOT_FOUND"
	CodeDeserialization    = "deserialization_error"
	CodeTriggerRegFailed   = "trigger_registration_failed"
	CodeUnregisterFailed   = "unregister_failed"
	CodeInvocationError    = "invocation_error"
	CodeFunctionNotAllowed = "function_not_allowed"
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
	// MaxFrameBytes is the read limit per frame; a larger frame closes the
	// socket with 1009.
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
	// TelemetrySink receives worker telemetry frames; nil counts and drops.
	TelemetrySink TelemetrySink
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

	wg      sync.WaitGroup // every goroutine the engine starts
	connsWG sync.WaitGroup // every worker socket handler

	funcsChanged chan struct{} // cap 1; coalesces functions-available firings

	channels *channel.Manager // streaming channels; closed by Shutdown

	sink          atomic.Pointer[TelemetrySink]
	fwd           atomic.Pointer[Forwarder] // nil: a single engine (forward.go)
	drops         dropCounters
	slowConsumers atomic.Uint64 // workers closed as slow consumers
	stalls        atomic.Uint64 // times a producer waited for a full queue
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
		funcsChanged: make(chan struct{}, 1),
	}
	e.SetTelemetrySink(opts.TelemetrySink)
	e.channels = channel.NewManager(channel.Options{Logger: opts.Logger})
	if err := e.registerBuiltins(); err != nil {
		cancel()
		e.channels.Close(context.Background())
		return nil, fmt.Errorf("engine: built-ins: %w", err)
	}
	// Both exit when the engine's context is cancelled by Shutdown.
	if !e.goSafe(e.functionsAvailableLoop) || !e.goSafe(e.timeoutLoop) || !e.goSafe(e.stallLoop) {
		cancel()
		e.channels.Close(context.Background())
		return nil, ErrEngineClosed
	}
	return e, nil
}

// Events is the engine's event bus. Subscribers must keep up or lose events
// (counted per subscriber); they never slow the router.
func (e *Engine) Events() *event.Bus { return &e.bus }

// Logger is the engine's logger, for modules.
func (e *Engine) Logger() *slog.Logger { return e.opts.Logger }

// goSafe runs fn in a goroutine the engine owns and waits for on Shutdown.
// It refuses (returns false) once Shutdown has begun.
func (e *Engine) goSafe(fn func()) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closing {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		fn()
	}()
	return true
}

// Channels is the engine's table of streaming channels (spec §1.4).
func (e *Engine) Channels() *channel.Manager { return e.channels }

// Handler serves the worker socket at "/", the telemetry-only socket at
// "/otel" and the channel sockets at "/ws/channels/{channel_id}".
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+channel.Path+"{channel_id}", e.channels)
	mux.HandleFunc("/otel", e.serveOTel)
	mux.HandleFunc("/", e.serveWorker)
	return mux
}

// Serve serves the engine on ln until ctx is done, then shuts down
// gracefully (bounded by DefaultWriteTimeout) and returns nil.
func (e *Engine) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: DefaultHandshakeTimeout,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		ConnContext:       corkContext,
	}
	errc := make(chan error, 1)
	// Exits when the listener is closed by srv.Shutdown below.
	go func() { errc <- srv.Serve(corkListener{ln}) }()
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
	done := waitgroup.Done(&e.connsWG, &e.wg)
	select {
	case <-done:
		return cerr
	case <-ctx.Done():
		return fmt.Errorf("engine: shutdown: %w", ctx.Err())
	}
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

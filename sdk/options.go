package sdk

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Defaults for the worker options.
const (
	DefaultInvocationTimeout = 30 * time.Second
	DefaultPingInterval      = 20 * time.Second
	DefaultQueueLimit        = 1024
	DefaultReadLimit         = 64 << 20
	DefaultHandshakeTimeout  = 10 * time.Second
	// DefaultURL is where a local engine listens for workers.
	DefaultURL = "ws://localhost:49134"
)

// Option configures Connect.
type Option func(*options)

type options struct {
	name              string
	description       string
	header            http.Header
	invocationTimeout time.Duration
	logger            *slog.Logger
	backoffInitial    time.Duration
	backoffMax        time.Duration
	pingInterval      time.Duration
	queueLimit        int
	readLimit         int64
	handshakeTimeout  time.Duration
	tracerProvider    trace.TracerProvider
	telemetry         *bool // nil: from the environment
}

func defaultOptions() options {
	return options{
		header:            http.Header{},
		invocationTimeout: DefaultInvocationTimeout,
		backoffInitial:    DefaultBackoffInitial,
		backoffMax:        DefaultBackoffMax,
		pingInterval:      DefaultPingInterval,
		queueLimit:        DefaultQueueLimit,
		readLimit:         DefaultReadLimit,
		handshakeTimeout:  DefaultHandshakeTimeout,
	}
}

func (o *options) check(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("sdk: engine URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("sdk: engine URL %q: scheme must be ws or wss", rawURL)
	}
	if u.Host == "" {
		return fmt.Errorf("sdk: engine URL %q: missing host", rawURL)
	}
	if o.invocationTimeout <= 0 {
		return fmt.Errorf("sdk: invocation timeout %v: must be positive", o.invocationTimeout)
	}
	if o.backoffInitial <= 0 || o.backoffMax < o.backoffInitial {
		return fmt.Errorf("sdk: reconnect backoff %v..%v: need 0 < initial <= max", o.backoffInitial, o.backoffMax)
	}
	if o.pingInterval <= 0 {
		return fmt.Errorf("sdk: ping interval %v: must be positive", o.pingInterval)
	}
	if o.queueLimit <= 0 {
		return fmt.Errorf("sdk: queue limit %d: must be positive", o.queueLimit)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// WithName sets the worker name reported to the engine. Without it the
// name is $III_WORKER_NAME, else "hostname:pid".
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithWorkerDescription sets the one-line worker description reported to
// the engine.
func WithWorkerDescription(d string) Option { return func(o *options) { o.description = d } }

// WithHeader adds an HTTP header to the WebSocket upgrade request.
func WithHeader(key, value string) Option {
	return func(o *options) { o.header.Add(key, value) }
}

// WithBearerToken sends "Authorization: Bearer <token>" on the upgrade.
func WithBearerToken(token string) Option {
	return func(o *options) { o.header.Set("Authorization", "Bearer "+token) }
}

// WithInvocationTimeout sets the default Trigger timeout (30 s).
func WithInvocationTimeout(d time.Duration) Option {
	return func(o *options) { o.invocationTimeout = d }
}

// WithLogger sets the logger; the default discards everything.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithReconnectBackoff sets the first and the largest wait between
// reconnect attempts (1 s and 30 s). Each wait doubles and is jittered by
// ±30 %.
func WithReconnectBackoff(initial, max time.Duration) Option {
	return func(o *options) { o.backoffInitial, o.backoffMax = initial, max }
}

// WithPingInterval sets how often a WebSocket ping is sent (20 s). A ping
// not answered within one interval drops the connection and reconnects.
func WithPingInterval(d time.Duration) Option { return func(o *options) { o.pingInterval = d } }

// WithQueueLimit bounds the outbound queue (1024 messages): calls made
// while the engine is unreachable wait there, and so do messages the
// socket has not taken yet. Past the limit Trigger fails with ErrQueueFull.
func WithQueueLimit(n int) Option { return func(o *options) { o.queueLimit = n } }

// WithReadLimit sets the largest frame the worker accepts (64 MiB).
func WithReadLimit(n int64) Option { return func(o *options) { o.readLimit = n } }

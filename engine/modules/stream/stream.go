// Package stream is the Stream module (canonical ID "stream"; StreamModule,
// iii-stream): live key/value streams that browser and server clients
// subscribe to over a WebSocket (spec §8), the stream::* functions that
// change them (spec §4.4), and the stream, stream:join and stream:leave
// trigger types (spec §3.2).
//
// Items live in Redis. Every change is published on a Redis pub/sub
// channel; each engine's subscriber pushes it to its own WebSocket clients,
// so a client of engine A sees a stream::set made on engine B. Stream
// triggers fire on the engine where the change was made, once per change.
//
// A client whose outbound queue fills (it does not read fast enough) is
// closed with 1008 and counted; it never slows the engine or other clients.
//
// Config (all optional):
//
//	host: 127.0.0.1            # listen address
//	port: 3112                 # 0 picks a free port (see Addr)
//	auth_function: ""          # function called before each upgrade (spec §8.1)
//	allowed_origins: []        # browser Origin host patterns; empty allows any origin
//	queue_size: 1024           # outbound messages buffered per client
//	write_timeout_ms: 10000    # bound on each write to a client
//	max_message_bytes: 65536   # largest client frame; larger closes the socket (1009)
//	handler_timeout_ms: 30000  # bound on each auth, join, leave and condition call
//	bridge_url: ws://host:49134 # keep the items in that engine instead (iii's bridge adapter)
//	adapter: ...               # accepted for iii config compatibility and ignored
//
// With bridge_url the module is a worker of the engine there, and the item
// operations (set, get, delete, update, list, list_groups, list_all) call
// the same functions of that engine; a worker's own override of a stream
// (custom.go) still comes first. Changes made through this engine reach
// its subscribers and fire its triggers as any other change.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/modules/internal/bridge"
)

// WorkerName is the in-process worker the module's functions and trigger
// types belong to.
const WorkerName = "iii-stream"

// Defaults of the module's config.
const (
	DefaultHost             = "127.0.0.1"
	DefaultPort             = 3112
	DefaultQueueSize        = 1024
	DefaultWriteTimeoutMS   = 10_000
	DefaultMaxMessageBytes  = 64 << 10
	DefaultHandlerTimeoutMS = 30_000
)

func init() {
	module.Register(module.Info{ID: config.ModuleStream, New: func() module.Module { return New() }})
}

// Module is the stream module. Its exported fields are its config.yaml
// block.
type Module struct {
	Host             string   `yaml:"host"`
	Port             int      `yaml:"port"`
	AuthFunction     string   `yaml:"auth_function"`
	AllowedOrigins   []string `yaml:"allowed_origins"`
	QueueSize        int      `yaml:"queue_size"`
	WriteTimeoutMS   int      `yaml:"write_timeout_ms"`
	MaxMessageBytes  int64    `yaml:"max_message_bytes"`
	HandlerTimeoutMS int      `yaml:"handler_timeout_ms"`
	// BridgeURL, when set, keeps the items in the engine at that address
	// (iii's bridge adapter) instead of this engine's store.
	BridgeURL string `yaml:"bridge_url"`
	// Adapter is iii's adapter block (kv, redis, ...). This module always
	// keeps streams in the engine's Redis, so it is only logged.
	Adapter any `yaml:"adapter"`

	h        *module.Host
	log      *slog.Logger
	store    *store
	remote   *bridge.Remote // with BridgeURL: where the items are
	echoes   echoes         // events published to the bridge, awaiting their echo
	bindings *bindings
	channel  string // Redis pub/sub channel of changes

	ln     net.Listener
	srv    *http.Server
	pubsub *redis.PubSub
	life   module.Lifecycle // functions and goroutines

	// ctx is the module's lifetime: leave handlers and condition checks run
	// under it; Stop cancels it last. accepting ends when Stop begins: the
	// HTTP requests (and so auth function calls) run under it.
	ctx           context.Context
	cancel        context.CancelFunc
	accepting     context.Context
	stopAccepting context.CancelFunc

	// mu guards closing, clients and subs: a client is added only while
	// closing is false, so Stop's snapshot of clients has them all. It is
	// never held with bindings.mu; no I/O and no channel sends under it.
	mu      sync.Mutex
	closing bool
	clients map[*client]struct{}
	subs    subscriptions

	dropped  atomic.Int64 // clients closed as slow consumers
	badFrame rateLimited
}

// New returns a module with the default config.
func New() *Module {
	return &Module{
		Host:             DefaultHost,
		Port:             DefaultPort,
		QueueSize:        DefaultQueueSize,
		WriteTimeoutMS:   DefaultWriteTimeoutMS,
		MaxMessageBytes:  DefaultMaxMessageBytes,
		HandlerTimeoutMS: DefaultHandlerTimeoutMS,
	}
}

var (
	_ module.Module    = (*Module)(nil)
	_ module.Validator = (*Module)(nil)
)

// ID implements module.Module.
func (m *Module) ID() string { return config.ModuleStream }

// Validate checks the decoded config.
func (m *Module) Validate() error {
	var errs []error
	if m.Port < 0 || m.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d out of range 0-65535", m.Port))
	}
	if m.QueueSize < 1 {
		errs = append(errs, fmt.Errorf("queue_size %d: must be at least 1", m.QueueSize))
	}
	if m.WriteTimeoutMS < 1 {
		errs = append(errs, fmt.Errorf("write_timeout_ms %d: must be at least 1", m.WriteTimeoutMS))
	}
	if m.MaxMessageBytes < 256 {
		errs = append(errs, fmt.Errorf("max_message_bytes %d: must be at least 256", m.MaxMessageBytes))
	}
	if m.HandlerTimeoutMS < 1 {
		errs = append(errs, fmt.Errorf("handler_timeout_ms %d: must be at least 1", m.HandlerTimeoutMS))
	}
	return errors.Join(errs...)
}

func (m *Module) handlerTimeout() time.Duration {
	return time.Duration(m.HandlerTimeoutMS) * time.Millisecond
}

func (m *Module) writeTimeout() time.Duration {
	return time.Duration(m.WriteTimeoutMS) * time.Millisecond
}

// Addr is the stream WebSocket's bound host:port ("" before Start).
func (m *Module) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// URL is the stream WebSocket's URL ("" before Start).
func (m *Module) URL() string {
	if m.ln == nil {
		return ""
	}
	return "ws://" + m.Addr() + "/"
}

// Dropped is how many clients were closed as slow consumers.
func (m *Module) Dropped() int64 { return m.dropped.Load() }

// Clients is how many stream WebSockets are open.
func (m *Module) Clients() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.clients)
}

// Start registers the stream functions and trigger types, subscribes to the
// change channel and serves the stream WebSocket.
func (m *Module) Start(ctx context.Context, h *module.Host) (err error) {
	if h.Redis == nil {
		return errors.New("stream: no Redis store")
	}
	m.h = h
	m.log = h.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.store = &store{rdb: h.Redis, prefix: h.KeyPrefix}
	m.bindings = newBindings()
	m.channel = h.Key("stream", "events")
	m.clients = map[*client]struct{}{}
	m.subs = subscriptions{}
	m.life.Begin(ctx, h.Engine)
	// Not life's context: leave handlers run under it while Stop waits.
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.accepting, m.stopAccepting = context.WithCancel(m.ctx)
	if m.Adapter != nil {
		m.log.Info("stream: the adapter setting is ignored; streams are kept in the engine's Redis")
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Stop(context.WithoutCancel(ctx)))
		}
	}()

	if m.BridgeURL != "" {
		if m.remote, err = bridge.Dial(m.BridgeURL, WorkerName+" bridge", m.log, m.watchBridge); err != nil {
			return err
		}
		m.log.Info("stream: items kept in a remote engine (bridge); connecting", "bridge_url", m.BridgeURL)
	}

	var lc net.ListenConfig
	addr := net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
	if m.ln, err = lc.Listen(ctx, "tcp", addr); err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}

	// Subscribe before registering anything, and wait for Redis to confirm,
	// so no change published after Start is missed.
	m.pubsub = h.Redis.Subscribe(ctx, m.channel)
	if _, err = m.pubsub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe to %s: %w", m.channel, err)
	}
	ps := m.pubsub
	m.life.Go(func() { m.fanOut(ps) }) // exits when Stop closes ps

	for _, f := range m.functions() {
		if err = m.life.RegisterFunction(WorkerName, f); err != nil {
			return err
		}
	}
	for _, tt := range []engine.TriggerType{
		{ID: TriggerStream, Description: "Stream item changes and custom events (config: stream_name, group_id?, item_id?, condition_function_id?)"},
		{ID: TriggerJoin, Description: "A stream client joins a subscription; return {\"unauthorized\": true} to refuse it"},
		{ID: TriggerLeave, Description: "A stream client leaves a subscription or disconnects"},
	} {
		tt.Provider = provider{typ: tt.ID, bs: m.bindings}
		if err = h.Engine.RegisterTriggerType(WorkerName, tt); err != nil {
			return err
		}
	}

	m.srv = &http.Server{
		Handler:           http.HandlerFunc(m.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return m.accepting },
	}
	ln, srv := m.ln, m.srv
	m.life.Go(func() { // exits when Stop shuts srv down
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("stream server stopped", "err", err)
		}
	})
	m.log.Info("stream API listening", "url", m.URL())
	return nil
}

// Stop closes every client with 1001 (running their stream:leave
// handlers while ctx allows), stops the server and the pub/sub loop, and
// waits for the module's goroutines. It also works after a failed Start.
func (m *Module) Stop(ctx context.Context) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil
	}
	m.closing = true
	clients := make([]*client, 0, len(m.clients))
	for c := range m.clients {
		clients = append(clients, c)
	}
	m.mu.Unlock()

	// Everything at once: refuse new sockets, cancel pending auth calls,
	// close every client (1001), end the change subscription; then wait,
	// leave handlers still running under m.ctx.
	err := m.life.Stop(ctx, func() error {
		if m.stopAccepting != nil {
			m.stopAccepting()
		}
		if m.srv != nil {
			m.srv.Close() // listener and not-yet-upgraded requests; sockets are ours
		} else if m.ln != nil {
			m.ln.Close()
		}
		for _, c := range clients {
			c.close(closeGoingAway, "server shutting down")
		}
		if m.pubsub != nil {
			m.pubsub.Close() // ends fanOut
		}
		if m.remote != nil {
			return m.remote.Close(ctx)
		}
		return nil
	})
	if err != nil {
		// Out of time: abandon leave handlers and drop sockets at once.
		err = fmt.Errorf("stream: stop: %w", err)
		if m.cancel != nil {
			m.cancel()
		}
		for _, c := range clients {
			c.conn.CloseNow()
		}
		m.life.Wait(context.Background())
	}
	if m.cancel != nil {
		m.cancel()
	}
	return err
}

// fanOut delivers every published change to the matching local clients.
func (m *Module) fanOut(ps *redis.PubSub) {
	var backoff time.Duration
	for {
		msg, err := ps.ReceiveMessage(m.ctx)
		if err != nil {
			if errors.Is(err, redis.ErrClosed) || m.ctx.Err() != nil || m.isClosing() {
				return
			}
			// go-redis reconnects and resubscribes on the next receive.
			backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
			m.log.Warn("stream change subscription interrupted; retrying", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-m.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		m.deliver([]byte(msg.Payload))
	}
}

func (m *Module) isClosing() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closing
}

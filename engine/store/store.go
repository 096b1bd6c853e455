// Package store opens the Redis that modules keep shared state in: an
// external server when a URL is configured, otherwise one of two embedded
// stores. The managed store is a redis-server child the engine starts and
// owns, persisting to an append-only file under a data directory (see
// Managed). The memory store is an in-process miniredis: nothing survives
// the process, nothing is shared with other engines.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Kind names where the data lives.
type Kind string

// Store kinds.
const (
	KindExternal Kind = "external" // a Redis at a configured URL
	KindManaged  Kind = "managed"  // a redis-server child with an append-only file
	KindMemory   Kind = "memory"   // in-process miniredis, lost on exit
)

// Options selects and configures the store.
type Options struct {
	// URL is redis://, rediss:// or unix://; when set, Kind and DataDir are
	// ignored.
	URL string
	// Kind is KindManaged or KindMemory when URL is empty; empty means
	// KindMemory.
	Kind Kind
	// DataDir and RedisServer configure the managed store; see
	// ManagedOptions.
	DataDir     string
	RedisServer string
	Logger      *slog.Logger
}

// Store is an open Redis connection.
type Store struct {
	Client *redis.Client
	Kind   Kind
	// Embedded reports the in-process memory store (Kind == KindMemory).
	Embedded bool
	// Addr is the server's host:port, or its socket path for the managed
	// store.
	Addr string
	// DataDir is the managed store's data directory; empty otherwise.
	DataDir string

	mini    *miniredis.Miniredis
	managed *Managed
}

// Open connects to the configured Redis and checks it with a PING, or
// starts the embedded store of the chosen kind.
func Open(ctx context.Context, o Options) (*Store, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.URL != "" {
		return openURL(ctx, o.URL, log)
	}
	switch o.Kind {
	case KindManaged:
		m, err := StartManaged(ctx, ManagedOptions{DataDir: o.DataDir, RedisServer: o.RedisServer, Logger: log})
		if err != nil {
			return nil, err
		}
		c := redis.NewClient(&redis.Options{Network: "unix", Addr: m.Socket(), MaintNotificationsConfig: noMaintNotifications()})
		return &Store{Client: c, Kind: KindManaged, Addr: m.Socket(), DataDir: m.DataDir(), managed: m}, nil
	case KindMemory, "":
		mini := miniredis.NewMiniRedis()
		if err := mini.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("store: start in-memory redis: %w", err)
		}
		log.Warn("redis store: in memory; queue, state and stream data are lost when the engine exits and are not shared with other engines", "addr", mini.Addr())
		return &Store{Client: redis.NewClient(&redis.Options{Addr: mini.Addr(), MaintNotificationsConfig: noMaintNotifications()}), Kind: KindMemory, Embedded: true,
			Addr: mini.Addr(), mini: mini}, nil
	default:
		return nil, fmt.Errorf("store: unknown store kind %q (want %s or %s)", o.Kind, KindManaged, KindMemory)
	}
}

func openURL(ctx context.Context, url string, log *slog.Logger) (*Store, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("store: redis.url: %w", err)
	}
	opts.MaintNotificationsConfig = noMaintNotifications()
	c := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("store: cannot reach redis at %s: %w", opts.Addr, err)
	}
	log.Info("connected to redis", "addr", opts.Addr)
	return &Store{Client: c, Kind: KindExternal, Addr: opts.Addr}, nil
}

// closeTimeout bounds Close's wait for a managed redis-server to exit.
const closeTimeout = 15 * time.Second

// noMaintNotifications turns off go-redis's cluster maintenance
// notifications: iii talks to one server, and the "auto" mode prints
// "failed to initialize maintnotifications" whenever a module builds a
// second client from the store's options.
func noMaintNotifications() *maintnotifications.Config {
	return &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

// Close closes the client and stops an embedded server: a managed
// redis-server flushes its append-only file and exits.
func (s *Store) Close() error {
	err := s.Client.Close()
	if errors.Is(err, redis.ErrClosed) {
		err = nil
	}
	if s.mini != nil {
		s.mini.Close()
	}
	if s.managed != nil {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		err = errors.Join(err, s.managed.Stop(ctx))
	}
	return err
}

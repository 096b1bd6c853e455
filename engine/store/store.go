// Package store opens the Redis that modules keep shared state in: an
// external server when a URL is configured, otherwise an embedded,
// in-process miniredis (nothing durable, nothing shared between engines).
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Store is an open Redis connection.
type Store struct {
	Client   *redis.Client
	Embedded bool
	Addr     string // host:port of the server
	mini     *miniredis.Miniredis
}

// Open connects to url (redis://, rediss:// or unix://) and checks it with a
// PING, or starts an embedded store when url is empty.
func Open(ctx context.Context, url string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if url == "" {
		mini := miniredis.NewMiniRedis()
		if err := mini.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("store: start embedded redis: %w", err)
		}
		s := &Store{Client: redis.NewClient(&redis.Options{Addr: mini.Addr()}), Embedded: true, Addr: mini.Addr(), mini: mini}
		log.Warn("no redis.url configured: using an embedded in-memory Redis; queue, state and stream data are not durable and not shared with other engines", "addr", mini.Addr())
		return s, nil
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("store: redis.url: %w", err)
	}
	c := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("store: cannot reach redis at %s: %w", opts.Addr, err)
	}
	log.Info("connected to redis", "addr", opts.Addr)
	return &Store{Client: c, Addr: opts.Addr}, nil
}

// Close closes the client and stops an embedded server.
func (s *Store) Close() error {
	err := s.Client.Close()
	if errors.Is(err, redis.ErrClosed) {
		err = nil
	}
	if s.mini != nil {
		s.mini.Close()
	}
	return err
}

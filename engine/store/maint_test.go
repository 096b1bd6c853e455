package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine/store"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// redisLog captures what go-redis prints through its package logger.
type redisLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *redisLog) Printf(_ context.Context, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *redisLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = nil
}

func (l *redisLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestOpenPrintsNothing: opening the store, using it and copying its
// options for a second client (as the queue module does) make go-redis
// print nothing of its own (it used to print "failed to initialize
// maintnotifications" on every start).
func TestOpenPrintsNothing(t *testing.T) {
	var log redisLog
	redis.SetLogger(&log)
	t.Run("memory", func(t *testing.T) { checkPrintsNothing(t, &log, store.Options{Kind: store.KindMemory}) })
	t.Run("managed", func(t *testing.T) {
		checkPrintsNothing(t, &log, store.Options{Kind: store.KindManaged, DataDir: t.TempDir()})
	})
	storetest.Each(t, func(t *testing.T, b storetest.Backend) { checkPrintsNothing(t, &log, store.Options{URL: b.URL}) })
}

func checkPrintsNothing(t *testing.T, log *redisLog, opts store.Options) {
	log.reset()
	{
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := store.Open(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// Modules copy the store's options for clients of their own (the
		// queue's blocking reads).
		o := *s.Client.Options()
		c := redis.NewClient(&o)
		defer c.Close()
		for _, c := range []*redis.Client{s.Client, c} {
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if got := log.String(); got != "" {
			t.Errorf("go-redis printed:\n%s", got)
		}
	}
}

package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine/store"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		s, err := store.Open(ctx, store.Options{URL: b.URL})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s.Embedded {
			t.Error("external redis reported as embedded")
		}
		if err := s.Client.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if got := b.Client(t).Get(ctx, "k").Val(); got != "v" {
			t.Errorf("got %q through a second client, want v", got)
		}
	})
}

func TestOpenEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Embedded || s.Kind != store.KindMemory || s.Addr == "" {
		t.Errorf("embedded store: %+v", s)
	}
	if err := s.Client.XAdd(ctx, &redisXAdd).Err(); err != nil {
		t.Errorf("streams on the embedded store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, url := range []string{"redis://127.0.0.1:1", "http://nope", "redis://:bad:port"} {
		if s, err := store.Open(ctx, store.Options{URL: url}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", url)
		}
	}
}

var redisXAdd = redis.XAddArgs{Stream: "s", Values: map[string]any{"a": "1"}}

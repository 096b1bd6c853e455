// Package devtest starts whole engines for tests: a devserver from the
// text of a config.yaml, its log kept in memory and shown when the test
// fails, stopped at cleanup.
package devtest

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
)

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

// Start parses yaml as config.yaml (interpolating from the environment),
// starts a devserver logging at debug level into logs, and stops it when
// the test ends, printing the log if the test failed.
func Start(t testing.TB, ctx context.Context, yaml string) (*devserver.Server, *Logs) {
	t.Helper()
	cfg, err := config.Parse("config.yaml", []byte(yaml), os.LookupEnv)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", yaml, err)
	}
	logs := &Logs{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg, Logger: log})
	if err != nil {
		t.Fatalf("devserver.Start: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(sctx); err != nil {
			t.Errorf("devserver stop: %v", err)
		}
		if t.Failed() {
			t.Logf("engine log:\n%s", logs.String())
		}
	})
	return srv, logs
}

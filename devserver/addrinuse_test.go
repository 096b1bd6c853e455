package devserver_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
	_ "github.com/iii-workbench/iii/engine/modules/cron"   // a module to list
	_ "github.com/iii-workbench/iii/engine/modules/stream" // a module with a port
)

// TestOnlyEngineSaysWhatRuns: a config file that names only engine: runs
// no module, and the engine says so instead of starting silently bare.
func TestOnlyEngineSaysWhatRuns(t *testing.T) {
	for _, tt := range []struct {
		text string
		warn bool
	}{
		{"engine:\n  port: 0\n", true},
		{"engine:\n  port: 0\nmodules:\n  - class: CronModule\n", false},
	} {
		cfg, err := config.Parse("config.yaml", []byte(tt.text), nil)
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := devserver.Start(ctx, devserver.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		s.Stop(ctx)
		cancel()
		if got := strings.Contains(logs.String(), "the config lists no modules"); got != tt.warn {
			t.Errorf("config %q: warned %v, want %v; logs:\n%s", tt.text, got, tt.warn, logs.String())
		}
	}
}

package observability_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/modules/observability"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is an engine running the observability module.
type server struct {
	*enginetest.Server
	mod *observability.Module
}

// startServer starts an engine with the module configured by cfg (the
// YAML of its config: block; metrics on a free port unless cfg sets
// metrics_port or holds the comment #default-port).
func startServer(t *testing.T, cfg string, env map[string]string) *server {
	t.Helper()
	return startServerWith(t, "", cfg, env)
}

// startServerWith is startServer with more modules before ours (config.yaml
// module entries, e.g. "  - class: QueueModule\n").
func startServerWith(t *testing.T, modules, cfg string, env map[string]string) *server {
	t.Helper()
	if !strings.Contains(cfg, "metrics_port") && !strings.Contains(cfg, "#default-port") {
		cfg = strings.TrimSpace("metrics_port: 0\n" + cfg)
	}
	var b strings.Builder
	b.WriteString("engine: {host: 127.0.0.1, port: 0}\nmodules:\n" + modules + "  - class: iii-observability\n    config:\n")
	for _, line := range strings.Split(cfg, "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("      " + line + "\n")
		}
	}
	c, err := config.Parse("config.yaml", []byte(b.String()), func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		t.Fatalf("config:\n%s\n%v", b.String(), err)
	}
	observability.SetGetenv(func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	defer observability.SetGetenv(os.LookupEnv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := enginetest.StartConfig(t, ctx, c)
	m, ok := s.Modules().Get(config.ModuleObservability)
	if !ok {
		t.Fatal("observability module not started")
	}
	return &server{Server: s, mod: m.(*observability.Module)}
}

// call invokes a function in-process and decodes its result into out
// (when not nil).
func call(t *testing.T, ctx context.Context, eng *engine.Engine, req engine.Request, out any) {
	t.Helper()
	raw, err := eng.Invoke(ctx, req)
	if err != nil {
		t.Fatalf("invoke %s %s: %v", req.FunctionID, req.Data, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s result %s: %v", req.FunctionID, raw, err)
		}
	}
}

func data(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// spanList is engine::traces::list's result.
type spanList struct {
	Spans []observability.Span `json:"spans"`
	Total int                  `json:"total"`
}

// treeNode mirrors a node of engine::traces::tree.
type treeNode struct {
	observability.Span
	Children []treeNode `json:"children"`
}

type traceTree struct {
	TraceID    string     `json:"trace_id"`
	SpanCount  int        `json:"span_count"`
	DurationMS float64    `json:"duration_ms"`
	Roots      []treeNode `json:"roots"`
}

type logList struct {
	Logs  []observability.LogRecord `json:"logs"`
	Total int                       `json:"total"`
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; last state: %s", what, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// spans lists spans with a filter.
func spans(t *testing.T, ctx context.Context, eng *engine.Engine, filter map[string]any) spanList {
	t.Helper()
	var out spanList
	call(t, ctx, eng, engine.Request{FunctionID: "engine::traces::list", Data: data(filter)}, &out)
	return out
}

// waitFunctions waits until the engine lists every id.
func waitFunctions(t *testing.T, ctx context.Context, eng *engine.Engine, ids ...string) {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf("functions %v", ids), func() (bool, string) {
		have := map[string]bool{}
		for _, f := range eng.Snapshot().Functions {
			have[f.ID] = true
		}
		for _, id := range ids {
			if !have[id] {
				return false, "missing " + id
			}
		}
		return true, ""
	})
}

// scrape fetches the Prometheus text exposition.
func scrape(t *testing.T, ctx context.Context, addr string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v\n%s", resp.Status, err, body)
	}
	return string(body)
}

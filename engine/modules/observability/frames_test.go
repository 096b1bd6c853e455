package observability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

// engineCounters reads engine::metrics::list's engine counters.
func engineCounters(t *testing.T, ctx context.Context, eng *engine.Engine) map[string]float64 {
	t.Helper()
	var out struct {
		Engine map[string]any `json:"engine"`
	}
	call(t, ctx, eng, engine.Request{FunctionID: "engine::metrics::list", Data: data(map[string]any{"limit": 1})}, &out)
	m := map[string]float64{}
	for k, v := range out.Engine {
		if f, ok := v.(float64); ok {
			m[k] = f
		}
	}
	return m
}

// TestMalformedFramesDropped: bad telemetry frames on the worker socket
// and on /otel are counted and dropped; both sockets stay open, the
// worker's calls still succeed and a good frame afterwards is stored.
func TestMalformedFramesDropped(t *testing.T) {
	ctx := enginetest.Context(t)
	s := startServer(t, "", nil)
	eng := s.Engine()
	good, err := os.ReadFile("otlpjson/testdata/node-traces.json")
	if err != nil {
		t.Fatal(err)
	}
	sdkWorker := enginetest.Connect(t, ctx, s.URL(), "mf-worker", sdk.WithTelemetry(false)) // only the good frame adds worker spans
	sdkWorker.RegisterFunction("mf::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil })
	waitFunctions(t, ctx, eng, "mf::echo")

	raw, _, err := websocket.Dial(ctx, s.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseNow()
	raw.SetReadLimit(1 << 20)
	if _, hello, err := raw.Read(ctx); err != nil || !bytes.Contains(hello, []byte("workerregistered")) {
		t.Fatalf("first frame %s, %v", hello, err)
	}
	otel, _, err := websocket.Dial(ctx, strings.TrimSuffix(s.URL(), "/")+"/otel", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer otel.CloseNow()

	huge := append([]byte("OTLP"), bytes.Repeat([]byte(" "), 5<<20)...)
	frames := []struct {
		name    string
		payload []byte
	}{
		{"bad prefix", []byte("XXXX{\"resourceSpans\":[]}")},
		{"bad JSON", []byte("OTLP{\"resourceSpans\":[")},
		{"wrong shape", []byte(`LOGS{"resourceLogs":{"x":1}}`)},
		{"invalid UTF-8", []byte("MTRC{\"resourceMetrics\":[{\"x\":\"\xff\"}]}")},
		{"huge", huge},
	}
	for _, ws := range []*websocket.Conn{raw, otel} {
		for _, f := range frames {
			if err := ws.Write(ctx, websocket.MessageBinary, f.payload); err != nil {
				t.Fatalf("write %s frame: %v", f.name, err)
			}
		}
	}
	// Three malformed and one huge frame per socket; the bad prefix is not
	// telemetry at all (the engine drops it as an undecodable message).
	waitFor(t, ctx, "frames counted", func() (bool, string) {
		c := engineCounters(t, ctx, eng)
		return c["telemetry_frames_malformed"] == 6 && c["telemetry_frames_too_large"] == 2, fmt.Sprint(c)
	})

	// The raw worker socket still routes calls.
	id := uuid.NewString()
	frame, err := protocol.Encode(protocol.InvokeFunction{InvocationID: id, FunctionID: "mf::echo", Data: json.RawMessage(`{"ok":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Write(ctx, websocket.MessageText, frame); err != nil {
		t.Fatalf("invoke after bad frames: %v", err)
	}
	for {
		_, b, err := raw.Read(ctx)
		if err != nil {
			t.Fatalf("socket closed after bad frames: %v", err)
		}
		msg, err := protocol.Decode(b)
		if err != nil {
			continue
		}
		if r, ok := msg.(protocol.InvocationResult); ok && r.InvocationID == id {
			if r.Error != nil || !bytes.Contains(r.Result, []byte(`"ok":1`)) {
				t.Errorf("result %s %v", r.Result, r.Error)
			}
			break
		}
	}
	// The SDK worker too.
	if _, err := sdk.Call[json.RawMessage](ctx, sdkWorker, "mf::echo", map[string]int{"n": 1}); err != nil {
		t.Errorf("SDK call after bad frames: %v", err)
	}
	// And the telemetry socket still takes good frames.
	if err := otel.Write(ctx, websocket.MessageBinary, append([]byte("OTLP"), good...)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the good frame's spans", func() (bool, string) {
		l := spans(t, ctx, eng, map[string]any{"source": "worker"})
		return l.Total == 2, fmt.Sprint(l.Total, " worker spans")
	})
}

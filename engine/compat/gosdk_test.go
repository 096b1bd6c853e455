package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/sdk"
)

// TestGoSDKWithRealSDKs: a worker on our Go SDK calls functions of real
// Node and Python iii-sdk workers, and they call the Go worker's function,
// through one engine.
func TestGoSDKWithRealSDKs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := startFleet(t, ctx)
	gw, err := sdk.Connect(ctx, f.eng.url, sdk.WithName("compat-go"), sdk.WithTelemetry(false))
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close(context.Background())
	if err := gw.RegisterFunction("go::echo", func(_ context.Context, in json.RawMessage) (any, error) {
		var m map[string]any
		if err := json.Unmarshal(in, &m); err != nil {
			return nil, err
		}
		m["by"] = "go"
		return m, nil
	}); err != nil {
		t.Fatal(err)
	}
	goID := f.raw.workerNamed(t, ctx, "compat-go").ID
	for _, l := range langs {
		w := f.w[l]
		t.Run(fmt.Sprintf("go_calls_%s", l), func(t *testing.T) {
			tag := uuid.NewString()
			got, err := sdk.Call[map[string]any](ctx, gw, w.fn("echo"), map[string]any{"tag": tag})
			if err != nil {
				t.Fatal(err)
			}
			if got["tag"] != tag || got["by"] != string(l) || got["_caller_worker_id"] != goID {
				t.Errorf("Go SDK calling %s: got %v, want tag %s, by %s, _caller_worker_id %s", w.fn("echo"), got, tag, l, goID)
			}
		})
		t.Run(fmt.Sprintf("%s_calls_go", l), func(t *testing.T) {
			tag := uuid.NewString()
			out := w.outcome(t, ctx, w.startCall(t, "go::echo", map[string]any{"tag": tag}, nil))
			if out.str("event") != "result" {
				t.Fatalf("%s SDK calling go::echo: got %v, want a result", l, out)
			}
			res := out.obj("result")
			if res["tag"] != tag || res["by"] != "go" {
				t.Errorf("%s SDK calling go::echo: got %v", l, res)
			}
		})
	}
}

package bridgeclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"

	_ "github.com/iii-workbench/iii/engine/modules/standard" // every module, iii-bridge among them
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func register(t *testing.T, eng *engine.Engine, id string, h engine.Handler) {
	t.Helper()
	if err := eng.RegisterFunction("test", engine.Function{ID: id, Handler: h}); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// call invokes fn and returns its result, or "code: message".
func call(ctx context.Context, eng *engine.Engine, fn, in string) string {
	res, err := eng.Invoke(ctx, engine.Request{FunctionID: fn, Data: json.RawMessage(in)})
	var eb *protocol.ErrorBody
	switch {
	case errors.As(err, &eb):
		return eb.Code + ": " + eb.Message
	case err != nil:
		return "error: " + err.Error()
	}
	return string(res)
}

// TestBridge: two engines joined by the iii-bridge worker of the local
// one, in iii's config format: forwarded, invoked and exposed functions
// each cross in their direction.
func TestBridge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	remoteSrv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-pubsub", "")
	remote := remoteSrv.Engine()
	register(t, remote, "remote::echo", func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
		return json.RawMessage(`{"echo":` + string(c.Data) + `}`), nil
	})
	register(t, remote, "remote::fail", func(context.Context, *engine.Call) (json.RawMessage, error) {
		return nil, &protocol.ErrorBody{Code: "NOPE", Message: "not today"}
	})
	got := make(chan string, 1)
	register(t, remote, "remote::record", func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
		got <- string(c.Data)
		return nil, nil
	})

	local := enginetest.Start(t, ctx, fmt.Sprintf(`workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: 0}
  - name: iii-bridge
    config:
      url: %s
      expose:
        - {local_function: local::hello, remote_function: from-local::hello}
        - {local_function: local::plain}
      forward:
        - {local_function: r::echo, remote_function: remote::echo, timeout_ms: 2000}
        - {local_function: r::fail, remote_function: remote::fail}
`, remoteSrv.URL())).Engine()
	register(t, local, "local::hello", func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
		return json.RawMessage(`{"hello":` + string(c.Data) + `}`), nil
	})
	register(t, local, "local::plain", func(context.Context, *engine.Call) (json.RawMessage, error) { return nil, nil })

	for _, tc := range []struct {
		on       *engine.Engine
		fn, in   string
		want     string // exact result, or the prefix of "code: message"
		isPrefix bool
	}{
		{local, "r::echo", `"x"`, `{"echo":"x"}`, false}, // (an object would gain the remote's _caller_worker_id)
		{local, "bridge.invoke", `{"function_id":"remote::echo","data":[1,2]}`, `{"echo":[1,2]}`, false},
		{local, "bridge.invoke", `{"function_id":"remote::echo"}`, `{"echo":null}`, false},
		{local, "r::fail", `{}`, "bridge_error: ", true},
		{local, "bridge.invoke", `{"function_id":"remote::missing"}`, "bridge_error: ", true},
		{local, "bridge.invoke", `{"data":1}`, "deserialization_error: Failed to parse invoke input: missing field `function_id`", false},
		{local, "bridge.invoke_async", `{"function_id":"remote::record","data":"fire"}`, ``, false},
		{remote, "from-local::hello", `"ann"`, `{"hello":"ann"}`, false},
		{remote, "local::plain", `{}`, ``, false},
	} {
		res := call(ctx, tc.on, tc.fn, tc.in)
		if (tc.isPrefix && !strings.HasPrefix(res, tc.want)) || (!tc.isPrefix && res != tc.want) {
			t.Errorf("%s %s = %q, want %q", tc.fn, tc.in, res, tc.want)
		}
	}
	select {
	case data := <-got:
		if data != `"fire"` {
			t.Errorf("remote::record got %s, want \"fire\"", data)
		}
	case <-ctx.Done():
		t.Fatal("bridge.invoke_async never reached remote::record")
	}
	if res := call(ctx, local, "r::fail", `{}`); !strings.Contains(res, "NOPE") || !strings.Contains(res, "not today") {
		t.Errorf("r::fail = %q, want the remote's code and message in it", res)
	}
}

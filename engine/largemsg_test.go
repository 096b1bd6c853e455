package engine_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// bigString is a JSON string value that makes an invokefunction of
// function fn, with id, exactly n bytes long.
func bigCall(t *testing.T, fn, id string, n int) map[string]any {
	t.Helper()
	m := map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": fn, "data": ""}
	b, _ := json.Marshal(m)
	m["data"] = strings.Repeat("x", n-len(b))
	return m
}

func TestLargeMessages(t *testing.T) {
	t.Run("20 MiB call and result, fragmented both ways", func(t *testing.T) {
		n := 20 << 20
		if raceEnabled {
			// The race detector makes JSON ten times slower: 3 MiB, and
			// the engine fragments past 1 MiB instead of 16.
			n = 3 << 20
			engine.SetFragmentThresholdForTest(t, 1<<20)
		}
		te := enginetest.New(t, engine.Options{})
		host := enginetest.Dial(t, te.URL)
		host.Declare(map[string]any{"name": "host", "features": []string{"large-messages.v1"}})
		host.Register("big::echo")
		caller := enginetest.Dial(t, te.URL)
		id := uuid.NewString()
		call := bigCall(t, "big::echo", id, n)
		caller.SendFragmented(call)
		inv := host.Next(20 * time.Second)
		if inv["type"] != "invokefunction" || len(inv["data"].(string)) != len(call["data"].(string)) {
			t.Fatalf("host got %v with %d bytes of data, want invokefunction with %d", inv["type"], len(inv["data"].(string)), len(call["data"].(string)))
		}
		host.SendFragmented(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": "big::echo", "result": inv["data"]})
		res := caller.Next(20 * time.Second)
		if res["type"] != "invocationresult" || res["invocation_id"] != id || len(res["result"].(string)) != len(call["data"].(string)) {
			t.Fatalf("caller got %v (error %v), want the 20 MiB result", res["type"], res["error"])
		}
	})

	t.Run("over the limit: the call and the result are answered, the sockets stay", func(t *testing.T) {
		const limit = 1 << 20
		te := enginetest.New(t, engine.Options{MaxFrameBytes: limit})
		host := enginetest.Dial(t, te.URL)
		host.Register("big::echo")
		caller := enginetest.Dial(t, te.URL)

		id := uuid.NewString()
		call := bigCall(t, "big::echo", id, limit+1)
		caller.SendFragmented(call)
		res := caller.Expect("invocationresult")
		msg, _ := res["error"].(map[string]any)["message"].(string)
		if res["invocation_id"] != id || enginetest.ErrCode(res) != "payload_too_large" ||
			!strings.Contains(msg, "big::echo") || !strings.Contains(msg, "1048577 bytes") || !strings.Contains(msg, "engine.max_frame_bytes") {
			t.Errorf("over-limit call answered %v, want payload_too_large naming the function, size and key", res)
		}
		caller.Quiet() // still connected
		host.Quiet()   // and nothing was routed

		id = uuid.NewString()
		caller.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "big::echo", "data": "small"})
		inv := host.Expect("invokefunction")
		// The result names its ids after the payload, as the Python SDK's do.
		host.SendFragmented(map[string]any{"type": "invocationresult", "result": strings.Repeat("y", limit),
			"invocation_id": inv["invocation_id"], "function_id": "big::echo"})
		res = caller.Expect("invocationresult")
		msg, _ = res["error"].(map[string]any)["message"].(string)
		if res["invocation_id"] != id || enginetest.ErrCode(res) != "payload_too_large" || !strings.Contains(msg, "result of big::echo") {
			t.Errorf("over-limit result answered %v, want payload_too_large for the result of big::echo", res)
		}
		host.Quiet()
		if d := te.Dropped()[engine.DropTooLarge]; d != 2 {
			t.Errorf("dropped %s = %d, want 2", engine.DropTooLarge, d)
		}
	})

	t.Run("far over the limit closes with 1009", func(t *testing.T) {
		te := enginetest.New(t, engine.Options{MaxFrameBytes: 64 << 10})
		w := enginetest.Dial(t, te.URL)
		// The engine may close before the whole message is written.
		_ = w.WriteFragmented(bigCall(t, "x::y", uuid.NewString(), 300<<10))
		// As in TestBadInput, the kernel may answer the unread rest with
		// a reset that arrives before the close frame (-1).
		if code := w.Closed(10 * time.Second); code != websocket.StatusMessageTooBig && code != -1 {
			t.Errorf("close code %v, want 1009", code)
		}
		enginetest.WaitFor(t, "the sender removed", func() bool { _, err := te.InFlight(w.ID); return err != nil })
	})

	t.Run("64 MiB + 1 is refused at the default limit; over 64 MiB is not sent to a large-messages.v1 worker", func(t *testing.T) {
		if raceEnabled {
			t.Skip("64 MiB of JSON takes minutes under the race detector; the limit itself is tested at 1 MiB above")
		}
		te := enginetest.New(t, engine.Options{})
		caller := enginetest.Dial(t, te.URL)
		id := uuid.NewString()
		caller.SendFragmented(bigCall(t, "big::echo", id, engine.MaxMessageBytes+1))
		res := caller.Expect("invocationresult")
		if enginetest.ErrCode(res) != "payload_too_large" || !strings.Contains(res["error"].(map[string]any)["message"].(string), "67108865 bytes") {
			t.Errorf("64 MiB + 1: %v, want payload_too_large naming 67108865 bytes", res["error"])
		}

		te = enginetest.New(t, engine.Options{MaxFrameBytes: 2 * engine.MaxMessageBytes})
		host := enginetest.Dial(t, te.URL)
		host.Declare(map[string]any{"name": "host", "features": []string{"large-messages.v1"}})
		host.Register("big::echo")
		caller = enginetest.Dial(t, te.URL)
		// Exactly 64 MiB from the caller: the engine's envelope towards
		// the host (traceparent, baggage) is larger than the host reads.
		caller.SendFragmented(bigCall(t, "big::echo", id, engine.MaxMessageBytes))
		res = caller.Expect("invocationresult")
		if enginetest.ErrCode(res) != "payload_too_large" || !strings.Contains(res["error"].(map[string]any)["message"].(string), host.ID) {
			t.Errorf("64 MiB to a large-messages.v1 worker: %v, want payload_too_large naming the worker", res["error"])
		}
		host.Quiet() // nothing reached it, and it is still connected
	})

	t.Run("x-iii-capabilities: tcp-nodelay on the upgrade", func(t *testing.T) {
		te := enginetest.New(t, engine.Options{})
		ws, resp, err := enginetest.DialRaw(t, te.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if got := resp.Header.Get("x-iii-capabilities"); got != "tcp-nodelay" {
			t.Errorf("x-iii-capabilities = %q, want tcp-nodelay", got)
		}
	})
}

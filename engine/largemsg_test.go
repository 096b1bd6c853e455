package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
)

// sendFragmented writes v as one text message of 1 MiB fragments, as the
// 0.25 SDKs send messages over 16 MiB.
func (w *rawWorker) sendFragmented(v any) {
	w.t.Helper()
	if err := w.trySendFragmented(v); err != nil {
		w.t.Fatal(err)
	}
}

// trySendFragmented is sendFragmented for a message the engine may refuse
// before its last fragment is out (it closes the socket over its limit).
func (w *rawWorker) trySendFragmented(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wr, err := w.ws.Writer(ctx, websocket.MessageText)
	if err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	for len(b) > 0 {
		n := min(len(b), 1<<20)
		if _, err := wr.Write(b[:n]); err != nil {
			return fmt.Errorf("write fragment: %w", err)
		}
		b = b[n:]
	}
	if err := wr.Close(); err != nil {
		return fmt.Errorf("close message: %w", err)
	}
	return nil
}

// declare sends the 0.25 SDKs' engine::workers::register with features.
func (w *rawWorker) declare(data map[string]any) {
	w.t.Helper()
	w.send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register",
		"action": map[string]any{"type": "void"}, "data": data})
	w.quiet()
}

// bigString is a JSON string value that makes an invokefunction of
// function fn, with id, exactly n bytes long.
func bigCall(t *testing.T, fn, id string, n int) map[string]any {
	t.Helper()
	m := map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": fn, "data": ""}
	b, _ := json.Marshal(m)
	m["data"] = strings.Repeat("x", n-len(b))
	return m
}

func size(t *testing.T, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
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
		te := startEngine(t, engine.Options{})
		host := dial(t, te.url)
		host.declare(map[string]any{"name": "host", "features": []string{"large-messages.v1"}})
		host.register("big::echo")
		caller := dial(t, te.url)
		id := uuid.NewString()
		call := bigCall(t, "big::echo", id, n)
		caller.sendFragmented(call)
		inv := host.next(20 * time.Second)
		if inv["type"] != "invokefunction" || len(inv["data"].(string)) != len(call["data"].(string)) {
			t.Fatalf("host got %v with %d bytes of data, want invokefunction with %d", inv["type"], len(inv["data"].(string)), len(call["data"].(string)))
		}
		host.sendFragmented(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": "big::echo", "result": inv["data"]})
		res := caller.next(20 * time.Second)
		if res["type"] != "invocationresult" || res["invocation_id"] != id || len(res["result"].(string)) != len(call["data"].(string)) {
			t.Fatalf("caller got %v (error %v), want the 20 MiB result", res["type"], res["error"])
		}
	})

	t.Run("over the limit: the call and the result are answered, the sockets stay", func(t *testing.T) {
		const limit = 1 << 20
		te := startEngine(t, engine.Options{MaxFrameBytes: limit})
		host := dial(t, te.url)
		host.register("big::echo")
		caller := dial(t, te.url)

		id := uuid.NewString()
		call := bigCall(t, "big::echo", id, limit+1)
		caller.sendFragmented(call)
		res := caller.expect("invocationresult")
		msg, _ := res["error"].(map[string]any)["message"].(string)
		if res["invocation_id"] != id || errCode(res) != "payload_too_large" ||
			!strings.Contains(msg, "big::echo") || !strings.Contains(msg, "1048577 bytes") || !strings.Contains(msg, "engine.max_frame_bytes") {
			t.Errorf("over-limit call answered %v, want payload_too_large naming the function, size and key", res)
		}
		caller.quiet() // still connected
		host.quiet()   // and nothing was routed

		id = uuid.NewString()
		caller.send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "big::echo", "data": "small"})
		inv := host.expect("invokefunction")
		// The result names its ids after the payload, as the Python SDK's do.
		host.sendFragmented(map[string]any{"type": "invocationresult", "result": strings.Repeat("y", limit),
			"invocation_id": inv["invocation_id"], "function_id": "big::echo"})
		res = caller.expect("invocationresult")
		msg, _ = res["error"].(map[string]any)["message"].(string)
		if res["invocation_id"] != id || errCode(res) != "payload_too_large" || !strings.Contains(msg, "result of big::echo") {
			t.Errorf("over-limit result answered %v, want payload_too_large for the result of big::echo", res)
		}
		host.quiet()
		if d := te.Dropped()[engine.DropTooLarge]; d != 2 {
			t.Errorf("dropped %s = %d, want 2", engine.DropTooLarge, d)
		}
	})

	t.Run("far over the limit closes with 1009", func(t *testing.T) {
		te := startEngine(t, engine.Options{MaxFrameBytes: 64 << 10})
		w := dial(t, te.url)
		// The engine may close before the message's end is written.
		w.trySendFragmented(bigCall(t, "x::y", uuid.NewString(), 300<<10))
		if code := w.closed(10 * time.Second); code != websocket.StatusMessageTooBig {
			t.Errorf("close code %v, want 1009", code)
		}
	})

	t.Run("64 MiB + 1 is refused at the default limit; over 64 MiB is not sent to a large-messages.v1 worker", func(t *testing.T) {
		if raceEnabled {
			t.Skip("64 MiB of JSON takes minutes under the race detector; the limit itself is tested at 1 MiB above")
		}
		te := startEngine(t, engine.Options{})
		caller := dial(t, te.url)
		id := uuid.NewString()
		caller.sendFragmented(bigCall(t, "big::echo", id, engine.MaxMessageBytes+1))
		res := caller.expect("invocationresult")
		if errCode(res) != "payload_too_large" || !strings.Contains(res["error"].(map[string]any)["message"].(string), "67108865 bytes") {
			t.Errorf("64 MiB + 1: %v, want payload_too_large naming 67108865 bytes", res["error"])
		}

		te = startEngine(t, engine.Options{MaxFrameBytes: 2 * engine.MaxMessageBytes})
		host := dial(t, te.url)
		host.declare(map[string]any{"name": "host", "features": []string{"large-messages.v1"}})
		host.register("big::echo")
		caller = dial(t, te.url)
		// Exactly 64 MiB from the caller: the engine's envelope towards
		// the host (traceparent, baggage) is larger than the host reads.
		caller.sendFragmented(bigCall(t, "big::echo", id, engine.MaxMessageBytes))
		res = caller.expect("invocationresult")
		if errCode(res) != "payload_too_large" || !strings.Contains(res["error"].(map[string]any)["message"].(string), host.id) {
			t.Errorf("64 MiB to a large-messages.v1 worker: %v, want payload_too_large naming the worker", res["error"])
		}
		host.quiet() // nothing reached it, and it is still connected
	})

	t.Run("x-iii-capabilities: tcp-nodelay on the upgrade", func(t *testing.T) {
		te := startEngine(t, engine.Options{})
		ws, resp, err := dialOpts(t, te.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if got := resp.Header.Get("x-iii-capabilities"); got != "tcp-nodelay" {
			t.Errorf("x-iii-capabilities = %q, want tcp-nodelay", got)
		}
	})
}

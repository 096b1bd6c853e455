package engine_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// TestBadInput sends each kind of bad frame on one socket while a second
// worker keeps calling through the same engine; every case has a stated
// outcome and the bystander is never disturbed.
func TestBadInput(t *testing.T) {
	te := enginetest.New(t, engine.Options{MaxFrameBytes: 1 << 16})
	server := enginetest.Dial(t, te.URL)
	server.Register("ok::echo")
	bystander := enginetest.Dial(t, te.URL)
	check := func(t *testing.T) {
		t.Helper()
		id := uuid.NewString()
		bystander.Send(map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": "ok::echo", "data": 1})
		server.ServeOnce(1, nil)
		if res := bystander.Expect("invocationresult"); res["invocation_id"] != id || res["result"] != float64(1) {
			t.Fatalf("bystander got %v", res)
		}
	}
	cases := []struct {
		name   string
		frame  []byte
		binary bool
		closes websocket.StatusCode // 0: the socket stays open and nothing is sent back
	}{
		{"non-JSON", []byte("hello engine"), false, 0},
		{"JSON array", []byte(`[1,2,3]`), false, 0},
		{"truncated JSON", []byte(`{"type":"invokefunction","function_id":`), false, 0},
		{"unknown type", []byte(`{"type":"subscribe","topic":"x"}`), false, 0},
		{"missing type", []byte(`{"function_id":"ok::echo","data":1}`), false, 0},
		{"missing function_id", []byte(`{"type":"invokefunction","invocation_id":"` + uuid.NewString() + `","data":1}`), false, 0},
		{"non-UUID invocation_id", []byte(`{"type":"invokefunction","invocation_id":"42","function_id":"ok::echo","data":1}`), false, 0},
		{"unknown action", []byte(`{"type":"invokefunction","function_id":"ok::echo","data":1,"action":{"type":"later"}}`), false, 0},
		{"result for unknown invocation", []byte(`{"type":"invocationresult","invocation_id":"` + uuid.NewString() + `","function_id":"ok::echo","result":1}`), false, 0},
		{"result without function_id", []byte(`{"type":"invocationresult","invocation_id":"` + uuid.NewString() + `","result":1}`), false, 0},
		{"binary garbage", []byte{0xff, 0x00, 0x13, 0x37, 0x80}, true, 0},
		{"telemetry with bad JSON", []byte("OTLP{not json"), true, 0},
		{"whitespace only", []byte("  \n\t "), false, 0},
		{"unregistertriggertype for nothing", []byte(`{"type":"unregistertriggertype","id":"nope"}`), false, 0},
		// Over the limit: read to its end and discarded (a call or result
		// in it would be answered with payload_too_large, largemsg_test.go).
		{"oversized frame", []byte(`{"type":"ping","pad":"` + strings.Repeat("x", 1<<16) + `"}`), false, 0},
		// More than four times over: the engine stops reading it.
		{"huge frame", []byte(`{"type":"ping","pad":"` + strings.Repeat("x", 4<<20) + `"}`), false, websocket.StatusMessageTooBig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := enginetest.Dial(t, te.URL)
			typ := websocket.MessageText
			if tc.binary {
				typ = websocket.MessageBinary
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := w.Conn.Write(ctx, typ, tc.frame)
			if err != nil && tc.closes == 0 {
				t.Fatalf("write: %v", err)
			}
			if tc.closes != 0 {
				// The engine sends the close frame as soon as it reads the
				// frame header, then drops the connection with the rest of
				// the frame unread; the kernel may answer that with a reset
				// that reaches the client before the close frame (-1).
				got := w.Closed(5 * time.Second)
				if got != tc.closes && got != -1 {
					t.Errorf("close status %v, want %v", got, tc.closes)
				}
				enginetest.WaitFor(t, "oversized sender removed", func() bool { _, err := te.InFlight(w.ID); return err != nil })
			} else {
				w.Quiet() // still open, nothing sent back
			}
			check(t)
		})
	}
}

func TestJSONPingAndBinaryJSON(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	w := enginetest.Dial(t, te.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// UTF-8 JSON in a binary frame is a protocol message.
	if err := w.Conn.Write(ctx, websocket.MessageBinary, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	w.Expect("pong")
	// WS-level ping control frames are answered too.
	if err := w.Conn.Ping(ctx); err != nil {
		t.Errorf("control ping not answered: %v", err)
	}
}

func TestAuthToken(t *testing.T) {
	te := enginetest.New(t, engine.Options{AuthToken: "s3cret"})
	for _, path := range []string{"/", "/otel"} {
		for _, tc := range []struct {
			name   string
			header string
			want   int
		}{
			{"no header", "", http.StatusUnauthorized},
			{"wrong token", "Bearer nope", http.StatusUnauthorized},
			{"not bearer", "Basic s3cret", http.StatusUnauthorized},
			{"right token", "Bearer s3cret", http.StatusSwitchingProtocols},
		} {
			t.Run(path+" "+tc.name, func(t *testing.T) {
				opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
				if tc.header != "" {
					opts.HTTPHeader.Set("Authorization", tc.header)
				}
				ws, resp, err := enginetest.DialRaw(t, te.URL+path, opts)
				if resp == nil {
					t.Fatalf("no HTTP response: %v", err)
				}
				if resp.StatusCode != tc.want {
					t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
				}
				if ws != nil {
					ws.CloseNow()
				}
			})
		}
	}
	enginetest.WaitFor(t, "no workers registered by refused upgrades", func() bool {
		for _, w := range te.Snapshot().Workers {
			if !w.Internal {
				return false
			}
		}
		return true
	})
}

func TestOTelSocketIsNotAWorker(t *testing.T) {
	sink := &sinkRecorder{}
	te := enginetest.New(t, engine.Options{TelemetrySink: sink})
	ws, _, err := enginetest.DialRaw(t, te.URL+"/otel", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, f := range []string{`OTLP{"resourceSpans":[]}`, `MTRC{"resourceMetrics":[]}`, `LOGS{"resourceLogs":[]}`, `JUNK{}`} {
		if err := ws.Write(ctx, websocket.MessageBinary, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	ws.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`)) // ignored: no reply on /otel
	enginetest.WaitFor(t, "three telemetry frames", func() bool { return sink.count() == 3 })
	for _, w := range te.Snapshot().Workers {
		if !w.Internal {
			t.Errorf("/otel socket listed as worker %+v", w)
		}
	}
	// Telemetry on the worker socket goes to the same sink, with the worker id.
	w := enginetest.Dial(t, te.URL)
	w.Conn.Write(ctx, websocket.MessageBinary, []byte(`LOGS{"resourceLogs":[]}`))
	w.Quiet()
	enginetest.WaitFor(t, "worker telemetry", func() bool { return sink.count() == 4 })
	if sink.last() != w.ID {
		t.Errorf("telemetry attributed to %q, want %s", sink.last(), w.ID)
	}
}

type sinkRecorder struct {
	mu      sync.Mutex
	n       int
	lastWID string
}

func (s *sinkRecorder) Telemetry(workerID, kind string, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.lastWID = workerID
}

func (s *sinkRecorder) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *sinkRecorder) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastWID
}

func TestReattachEvictsPreviousConnection(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	caller := enginetest.Dial(t, te.URL)
	old := enginetest.Dial(t, te.URL)
	old.Register("svc::a")
	old.Send(map[string]any{"type": "registertrigger", "id": "trig-1", "trigger_type": "later", "function_id": "svc::a", "config": map[string]any{}})
	old.Quiet()

	// Wrong token: ignored, old connection untouched.
	imposter := enginetest.Dial(t, te.URL)
	imposter.Send(map[string]any{"type": "reattach", "previous_worker_id": old.ID, "reattach_token": uuid.NewString()})
	imposter.Quiet()
	old.Quiet()

	fresh := enginetest.Dial(t, te.URL)
	fresh.Send(map[string]any{"type": "reattach", "previous_worker_id": old.ID, "reattach_token": old.Token})
	fresh.Register("svc::a")    // replayed registration, handled after the eviction
	old.Closed(5 * time.Second) // dropped at once, without a handshake
	// The replayed function is served by the new connection only.
	caller.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "svc::a", "data": nil})
	fresh.ServeOnce("new", nil)
	if res := caller.Expect("invocationresult"); res["result"] != "new" {
		t.Fatalf("got %v", res)
	}
	if tr := findTrigger(te.Engine, "trig-1"); tr != nil {
		t.Errorf("old connection's trigger survived its eviction: %+v", tr)
	}
}

// TestKeepaliveDropsSilentPeers: a socket that stops answering (a peer
// whose host vanished looks the same: nothing comes back) is pinged after
// a quiet interval and dropped when the pong does not come; an idle worker
// that answers pings stays connected.
func TestKeepaliveDropsSilentPeers(t *testing.T) {
	te := enginetest.New(t, engine.Options{PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond})
	idle := enginetest.Dial(t, te.URL) // its reader answers pings
	idle.Register("idle::fn")
	mute, _, err := enginetest.DialRaw(t, te.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := mute.Read(ctx); err != nil { // the greeting; then it never reads again
		t.Fatal(err)
	}
	mute.Write(ctx, websocket.MessageText, []byte(`{"type":"registerfunction","id":"mute::fn"}`))
	enginetest.WaitFor(t, "the mute worker dropped", func() bool {
		for _, f := range te.Snapshot().Functions {
			if f.ID == "mute::fn" {
				return false
			}
		}
		return true
	})
	idle.Quiet()
	idle.Send(map[string]any{"type": "invokefunction", "invocation_id": uuid.NewString(), "function_id": "idle::fn", "data": nil})
	idle.ServeOnce(1, nil) // still registered: the idle worker was kept
	if res := idle.Expect("invocationresult"); res["result"] != float64(1) {
		t.Fatalf("got %v", res)
	}
}

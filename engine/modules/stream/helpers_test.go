package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/modules/stream"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testEngine is an engine with the stream module.
type testEngine struct {
	srv  *enginetest.Server
	mod  *stream.Module
	logs *enginetest.Logs
}

// startEngine starts an engine on redisURL with the stream module on a
// free port; moduleConfig is extra YAML flow-map entries for its config.
func startEngine(t *testing.T, ctx context.Context, redisURL, moduleConfig string) *testEngine {
	t.Helper()
	srv := enginetest.StartModule(t, ctx, redisURL, "StreamModule", "{port: 0"+moduleConfig+"}")
	m, ok := srv.Modules().Get("stream")
	if !ok {
		t.Fatal("stream module not started")
	}
	te := &testEngine{srv: srv, mod: m.(*stream.Module), logs: srv.Logs}
	return te
}

func (te *testEngine) eng() *engine.Engine { return te.srv.Engine() }

// call invokes fn through the engine and fails the test on error.
func (te *testEngine) call(t *testing.T, ctx context.Context, fn string, in any) json.RawMessage {
	t.Helper()
	return enginetest.Call(t, ctx, te.eng(), fn, in)
}

func (te *testEngine) callErr(ctx context.Context, fn string, in any) (json.RawMessage, error) {
	return enginetest.CallErr(ctx, te.eng(), fn, in)
}

// errCode is the ErrorBody code of err ("" when it is not one).
func errCode(err error) string {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		return eb.Code
	}
	return ""
}

// waitBindings waits until n bindings of triggerType are active.
func (te *testEngine) waitBindings(t *testing.T, ctx context.Context, triggerType string, n int) {
	t.Helper()
	for len(te.eng().Bindings(triggerType)) < n {
		if !tick(ctx) {
			t.Fatalf("%d %s bindings never became active (have %d)", n, triggerType, len(te.eng().Bindings(triggerType)))
		}
	}
}

// tick waits a poll interval; false when ctx is done.
func tick(ctx context.Context) bool {
	tm := time.NewTimer(5 * time.Millisecond)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %v: %v", v, err)
	}
	return string(b)
}

// canon re-encodes JSON with sorted keys for comparisons.
func canon(t *testing.T, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("invalid JSON %q: %v", raw, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func assertJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if g, w := canon(t, got), canon(t, []byte(want)); g != w {
		t.Errorf("%s:\n got  %s\n want %s", what, g, w)
	}
}

// --- raw stream client ---------------------------------------------------

// msg is one wrapper frame from the stream server.
type msg struct {
	raw        []byte
	Type       string          `json:"type"`
	Timestamp  int64           `json:"timestamp"`
	StreamName string          `json:"streamName"`
	GroupID    string          `json:"groupId"`
	ID         *string         `json:"id"`
	Event      json.RawMessage `json:"event"`
}

func (m msg) eventType() string {
	var e struct{ Type string }
	json.Unmarshal(m.Event, &e)
	return e.Type
}

// data is event.data (or event.event for custom events).
func (m msg) data() json.RawMessage {
	var e struct {
		Data  json.RawMessage `json:"data"`
		Event json.RawMessage `json:"event"`
	}
	json.Unmarshal(m.Event, &e)
	if e.Event != nil {
		return e.Event
	}
	return e.Data
}

func (m msg) id() string {
	if m.ID == nil {
		return "<null>"
	}
	return *m.ID
}

func (m msg) String() string { return string(m.raw) }

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dial(t *testing.T, ctx context.Context, url string) *wsClient {
	t.Helper()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	conn.SetReadLimit(64 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: t, conn: conn}
}

func (c *wsClient) sendRaw(ctx context.Context, frame string) {
	c.t.Helper()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		c.t.Fatalf("write %s: %v", frame, err)
	}
}

func (c *wsClient) join(ctx context.Context, sub, streamName, group string, id *string) {
	c.t.Helper()
	d := map[string]any{"subscriptionId": sub, "streamName": streamName, "groupId": group}
	if id != nil {
		d["id"] = *id
	}
	c.sendRaw(ctx, mustJSON(c.t, map[string]any{"type": "join", "data": d}))
}

func (c *wsClient) leave(ctx context.Context, sub, streamName, group string) {
	c.t.Helper()
	c.sendRaw(ctx, mustJSON(c.t, map[string]any{"type": "leave",
		"data": map[string]any{"subscriptionId": sub, "streamName": streamName, "groupId": group}}))
}

func (c *wsClient) read(ctx context.Context) msg {
	c.t.Helper()
	typ, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read from stream server: %v", err)
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("frame type %v, want text: %q", typ, b)
	}
	m := msg{raw: b}
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("undecodable frame %q: %v", b, err)
	}
	if m.Type != "stream" || m.Timestamp == 0 {
		c.t.Errorf("frame %s: want type \"stream\" and a timestamp", b)
	}
	return m
}

// expect reads the next frame and checks its event type, stream, group,
// id and (when wantData is not "") data.
func (c *wsClient) expect(ctx context.Context, eventType, streamName, group, id, wantData string) msg {
	c.t.Helper()
	m := c.read(ctx)
	if m.eventType() != eventType || m.StreamName != streamName || m.GroupID != group || m.id() != id {
		c.t.Fatalf("got %s\nwant event %s on %s/%s id %s", m, eventType, streamName, group, id)
	}
	if wantData != "" {
		assertJSON(c.t, "data of "+eventType, m.data(), wantData)
	}
	return m
}

func ptr(s string) *string { return &s }

// sdkWorker connects a Go SDK worker to te.
func sdkWorker(t *testing.T, ctx context.Context, te *testEngine, name string) *sdk.Worker {
	t.Helper()
	w, err := sdk.Connect(ctx, te.srv.URL(), sdk.WithName(name))
	if err != nil {
		t.Fatalf("sdk.Connect: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w.Close(cctx)
	})
	return w
}

// recorder collects the inputs of a handler.
type recorder struct {
	mu     sync.Mutex
	inputs []json.RawMessage
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) add(in json.RawMessage) {
	r.mu.Lock()
	r.inputs = append(r.inputs, append(json.RawMessage(nil), in...))
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []json.RawMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]json.RawMessage(nil), r.inputs...)
}

// wait waits until n inputs were recorded and returns them.
func (r *recorder) wait(t *testing.T, ctx context.Context, n int, what string) []json.RawMessage {
	t.Helper()
	for {
		if got := r.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			t.Fatalf("%s: %d calls seen, want %d: %v", what, len(r.snapshot()), n, ctx.Err())
		}
	}
}

package compat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// frame is one JSON text frame, kept raw and split into its top-level keys.
type frame struct {
	raw []byte
	m   map[string]json.RawMessage
}

func (f frame) has(key string) bool {
	v, ok := f.m[key]
	return ok && string(v) != "null"
}

func (f frame) str(key string) string {
	var s string
	_ = json.Unmarshal(f.m[key], &s)
	return s
}

// decode unmarshals the value of key into v.
func (f frame) decode(t *testing.T, key string, v any) {
	t.Helper()
	if err := json.Unmarshal(f.m[key], v); err != nil {
		t.Fatalf("frame %s: field %q: %v", f.raw, key, err)
	}
}

func (f frame) String() string { return string(f.raw) }

func parseFrame(b []byte) (frame, error) {
	f := frame{raw: b}
	if err := json.Unmarshal(b, &f.m); err != nil {
		return frame{}, fmt.Errorf("frame %q: %w", b, err)
	}
	return f, nil
}

// errorBody is the wire ErrorBody.
type errorBody struct {
	Code       string  `json:"code"`
	Message    string  `json:"message"`
	Stacktrace *string `json:"stacktrace"`
}

// rawClient is a worker written by hand: it speaks JSON frames exactly as
// the spec lays them out, so tests can assert what the engine sends.
type rawClient struct {
	ws       *websocket.Conn
	workerID string
	token    string

	frames   chan frame    // from the reader goroutine
	backlog  []frame       // read, not yet matched
	readErr  error         // valid after readDone
	readDone chan struct{} // closed when the reader exits
	closing  chan struct{}
	once     sync.Once
}

// dialRaw connects to the engine and reads its workerregistered greeting.
func dialRaw(ctx context.Context, t *testing.T, url string) *rawClient {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	ws.SetReadLimit(64 << 20)
	c := &rawClient{ws: ws, frames: make(chan frame, 1024),
		readDone: make(chan struct{}), closing: make(chan struct{})}
	// Exits when the socket fails or close() closes it.
	go c.readLoop()
	t.Cleanup(c.close)

	hello := c.next(t, ctx, "workerregistered", func(f frame) bool { return true })
	if got := hello.str("type"); got != "workerregistered" {
		t.Fatalf("first frame from the engine = %s, want type workerregistered", hello)
	}
	c.workerID, c.token = hello.str("worker_id"), hello.str("reattach_token")
	if _, err := uuid.Parse(c.workerID); err != nil {
		t.Fatalf("workerregistered.worker_id %q is not a UUID (frame %s)", c.workerID, hello)
	}
	if _, err := uuid.Parse(c.token); err != nil {
		t.Fatalf("workerregistered.reattach_token %q is not a UUID (frame %s)", c.token, hello)
	}
	return c
}

func (c *rawClient) readLoop() {
	defer close(c.readDone)
	for {
		typ, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.readErr = err
			return
		}
		if typ != websocket.MessageText {
			c.readErr = fmt.Errorf("engine sent a %v frame, want text", typ)
			return
		}
		f, err := parseFrame(b)
		if err != nil {
			c.readErr = err
			return
		}
		select {
		case c.frames <- f:
		case <-c.closing:
			return
		}
	}
}

func (c *rawClient) close() {
	c.once.Do(func() {
		close(c.closing)
		c.ws.CloseNow()
		<-c.readDone
	})
}

// send writes one frame.
func (c *rawClient) send(t *testing.T, ctx context.Context, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode frame: %v", err)
	}
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("write frame %s: %v", b, err)
	}
}

// next returns the first frame, read or backlogged, that matches pred;
// frames it passes over stay in the backlog.
func (c *rawClient) next(t *testing.T, ctx context.Context, what string, pred func(frame) bool) frame {
	t.Helper()
	if i := slices.IndexFunc(c.backlog, pred); i >= 0 {
		f := c.backlog[i]
		c.backlog = slices.Delete(c.backlog, i, i+1)
		return f
	}
	for {
		select {
		case f := <-c.frames:
			if pred(f) {
				return f
			}
			c.backlog = append(c.backlog, f)
		case <-c.readDone:
			// Frames read before the socket ended are still in the channel.
			select {
			case f := <-c.frames:
				if pred(f) {
					return f
				}
				c.backlog = append(c.backlog, f)
				continue
			default:
			}
			t.Fatalf("raw client: socket ended (%v) while waiting for %s", c.readErr, what)
		case <-ctx.Done():
			t.Fatalf("raw client: no %s: %v (unmatched frames: %v)", what, ctx.Err(), c.backlog)
		}
	}
}

// seen reports whether a frame read so far matches pred, without waiting.
func (c *rawClient) seen(pred func(frame) bool) bool {
	for {
		select {
		case f := <-c.frames:
			c.backlog = append(c.backlog, f)
			continue
		default:
		}
		return slices.ContainsFunc(c.backlog, pred)
	}
}

// invoke sends an invokefunction with a fresh invocation id and returns it.
func (c *rawClient) invoke(t *testing.T, ctx context.Context, functionID string, data any) string {
	t.Helper()
	id := uuid.NewString()
	c.send(t, ctx, map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": functionID, "data": data})
	return id
}

// result waits for the invocationresult of invocation id.
func (c *rawClient) result(t *testing.T, ctx context.Context, id string) frame {
	t.Helper()
	return c.next(t, ctx, "invocationresult "+id, func(f frame) bool {
		return f.str("type") == "invocationresult" && f.str("invocation_id") == id
	})
}

// call invokes a function and returns the raw invocationresult frame.
func (c *rawClient) call(t *testing.T, ctx context.Context, functionID string, data any) frame {
	t.Helper()
	return c.result(t, ctx, c.invoke(t, ctx, functionID, data))
}

// callOK calls a function that must succeed and decodes its result into out.
func (c *rawClient) callOK(t *testing.T, ctx context.Context, functionID string, data, out any) {
	t.Helper()
	f := c.call(t, ctx, functionID, data)
	if f.has("error") {
		t.Fatalf("call %s(%v): got error frame %s, want a result", functionID, data, f)
	}
	if out != nil {
		f.decode(t, "result", out)
	}
}

// workerSummary is the part of engine::workers::list entries the tests read.
type workerSummary struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Runtime *string `json:"runtime"`
	Version *string `json:"version"`
	PID     *int    `json:"pid"`
	Status  string  `json:"status"`
}

func (c *rawClient) workers(t *testing.T, ctx context.Context) []workerSummary {
	t.Helper()
	var out struct {
		Workers []workerSummary `json:"workers"`
	}
	c.callOK(t, ctx, "engine::workers::list", map[string]any{}, &out)
	return out.Workers
}

// workersNamed polls engine::workers::list until pred holds for the workers
// called name, and returns them.
func (c *rawClient) workersNamed(t *testing.T, ctx context.Context, name string, pred func([]workerSummary) bool) []workerSummary {
	t.Helper()
	var named []workerSummary
	for {
		named = named[:0]
		for _, w := range c.workers(t, ctx) {
			if w.Name == name {
				named = append(named, w)
			}
		}
		if pred(named) {
			return named
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("engine::workers::list: workers named %q never matched: last %+v", name, named)
		}
	}
}

// workerNamed waits for the one worker called name whose metadata
// (engine::workers::register) has arrived.
func (c *rawClient) workerNamed(t *testing.T, ctx context.Context, name string) workerSummary {
	t.Helper()
	return c.workersNamed(t, ctx, name, func(ws []workerSummary) bool {
		return len(ws) == 1 && ws[0].Runtime != nil
	})[0]
}

// functionIDs lists the engine's visible functions.
func (c *rawClient) functionIDs(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var out struct {
		Functions []struct {
			FunctionID string `json:"function_id"`
		} `json:"functions"`
	}
	c.callOK(t, ctx, "engine::functions::list", map[string]any{}, &out)
	ids := make([]string, 0, len(out.Functions))
	for _, f := range out.Functions {
		ids = append(ids, f.FunctionID)
	}
	return ids
}

// waitFunctions polls until every id in present is listed and none in absent.
func (c *rawClient) waitFunctions(t *testing.T, ctx context.Context, present, absent []string) {
	t.Helper()
	for {
		ids := c.functionIDs(t, ctx)
		ok := true
		for _, id := range present {
			ok = ok && slices.Contains(ids, id)
		}
		for _, id := range absent {
			ok = ok && !slices.Contains(ids, id)
		}
		if ok {
			return
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("engine::functions::list = %v, want %v present and %v absent", ids, present, absent)
		}
	}
}

// triggerTypeIDs lists the engine's trigger types.
func (c *rawClient) triggerTypeIDs(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var out struct {
		Triggers []struct {
			ID string `json:"id"`
		} `json:"triggers"`
	}
	c.callOK(t, ctx, "engine::triggers::list", map[string]any{}, &out)
	ids := make([]string, 0, len(out.Triggers))
	for _, tt := range out.Triggers {
		ids = append(ids, tt.ID)
	}
	return ids
}

// waitTriggerType polls engine::triggers::list until id is listed (want)
// or not (!want).
func (c *rawClient) waitTriggerType(t *testing.T, ctx context.Context, id string, want bool) {
	t.Helper()
	for {
		ids := c.triggerTypeIDs(t, ctx)
		if slices.Contains(ids, id) == want {
			return
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("engine::triggers::list = %v; want %q listed=%v", ids, id, want)
		}
	}
}

package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/channel"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// refs are the channel refs of a request object.
type refs struct {
	RequestBody channel.Ref `json:"request_body"`
	Response    channel.Ref `json:"response"`
}

// openRef dials a channel ref on the engine's worker port, as an SDK does.
func (f *fixture) openRef(ctx context.Context, r channel.Ref) (*websocket.Conn, error) {
	u := fmt.Sprintf("%s/ws/channels/%s?key=%s&dir=%s", f.srv.URL(), r.ChannelID, r.AccessKey, r.Direction)
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", r.Direction, err)
	}
	c.SetReadLimit(-1)
	return c, nil
}

// TestStreamedResponses drives the response channel the way the SDKs do,
// from a Go worker's function, with a raw WebSocket.
func TestStreamedResponses(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "default_timeout: 3000")
	w, _ := f.connect(t, ctx, "http-stream")

	// closes records how the engine closed each function's writer socket.
	var mu sync.Mutex
	closes := map[string]error{}
	record := func(name string, err error) {
		mu.Lock()
		closes[name] = err
		mu.Unlock()
	}
	closed := func(name string) error {
		for {
			mu.Lock()
			err, ok := closes[name]
			mu.Unlock()
			if ok {
				return err
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: writer socket never closed", name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	handler := func(name string, fn func(ctx context.Context, in refs, c *websocket.Conn) (any, error)) {
		must(t, w.RegisterFunction("t::"+name, func(hctx context.Context, raw json.RawMessage) (any, error) {
			var in refs
			if err := json.Unmarshal(raw, &in); err != nil {
				return nil, err
			}
			c, err := f.openRef(ctx, in.Response)
			if err != nil {
				return nil, err
			}
			return fn(ctx, in, c)
		}))
		route(w, t, "t::"+name, "GET", name, nil)
	}

	// The SDK way: status and headers, body chunks, Close; return nothing.
	handler("stream", func(ctx context.Context, _ refs, c *websocket.Conn) (any, error) {
		defer c.CloseNow()
		c.Write(ctx, websocket.MessageText, []byte(`{"type":"set_status","status_code":206}`))
		c.Write(ctx, websocket.MessageText, []byte(`{"type":"set_headers","headers":{"x-a":"1","content-type":"text/plain"}}`))
		c.Write(ctx, websocket.MessageText, []byte(`not json: ignored`))
		for i := range 3 {
			c.Write(ctx, websocket.MessageBinary, []byte(fmt.Sprintf("chunk %d;", i)))
		}
		c.Close(websocket.StatusNormalClosure, "stream_complete")
		return nil, nil
	})
	// Completes its stream, then returns a value a while later (as the
	// Python SDK's handlers may): the response ends with the stream.
	returned := make(chan struct{})
	handler("slowreturn", func(ctx context.Context, _ refs, c *websocket.Conn) (any, error) {
		defer close(returned)
		c.Write(ctx, websocket.MessageBinary, []byte("done"))
		c.Close(websocket.StatusNormalClosure, "stream_complete")
		time.Sleep(time.Second)
		return map[string]any{"body": "too late to matter"}, nil
	})
	// Returns a value before any body chunk: the value answers.
	handler("value", func(ctx context.Context, _ refs, c *websocket.Conn) (any, error) {
		c.Write(ctx, websocket.MessageText, []byte(`{"type":"set_status","status_code":500}`))
		go func() {
			_, _, err := c.Read(ctx) // the engine closes it once the value answered
			record("value", err)
		}()
		return map[string]any{"status_code": 201, "body": map[string]any{"won": "value"}}, nil
	})
	// Sends half a body, then vanishes without a Close.
	handler("vanish", func(ctx context.Context, _ refs, c *websocket.Conn) (any, error) {
		c.Write(ctx, websocket.MessageBinary, []byte("partial"))
		time.Sleep(50 * time.Millisecond)
		c.CloseNow()
		return nil, nil
	})
	// Streams events until the client leaves.
	handler("events", func(ctx context.Context, _ refs, c *websocket.Conn) (any, error) {
		c.Write(ctx, websocket.MessageText, []byte(`{"type":"set_headers","headers":{"content-type":"text/event-stream"}}`))
		go func() {
			_, _, err := c.Read(ctx) // answers the engine's close, as the SDKs' sockets do
			record("events", err)
		}()
		go func() {
			for i := 0; ; i++ {
				if err := c.Write(ctx, websocket.MessageBinary, []byte(fmt.Sprintf("data: %d\n\n", i))); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		return nil, nil
	})
	// Opens the response channel and never writes: 504 at default_timeout.
	handler("silent", func(ctx context.Context, _ refs, c *websocket.Conn) (any, error) {
		go func() {
			_, _, err := c.Read(ctx)
			record("silent", err)
		}()
		return nil, nil
	})
	// Never opens the channels and returns nothing: {} after the grace.
	must(t, w.RegisterFunction("t::nothing", func(context.Context, json.RawMessage) (any, error) { return nil, nil }))
	route(w, t, "t::nothing", "GET", "nothing", nil)
	// Reads its JSON body from request_body too.
	must(t, w.RegisterFunction("t::jsonbody", func(hctx context.Context, raw json.RawMessage) (any, error) {
		var in refs
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, err
		}
		c, err := f.openRef(ctx, in.RequestBody)
		if err != nil {
			return nil, err
		}
		defer c.CloseNow()
		var body []byte
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
					return nil, err
				}
				return map[string]any{"body": map[string]any{"raw": string(body)}}, nil
			}
			body = append(body, b...)
		}
	}))
	route(w, t, "t::jsonbody", "POST", "jsonbody", nil)
	f.waitStatus(t, ctx, "GET", "/value", 201)

	t.Run("status, headers and chunks", func(t *testing.T) {
		r := f.do(t, ctx, "GET", "/stream", nil)
		if r.status != 206 || r.header.Get("X-A") != "1" || r.header.Get("Content-Type") != "text/plain" || string(r.body) != "chunk 0;chunk 1;chunk 2;" {
			t.Errorf("got %s %v", r, r.header)
		}
	})
	t.Run("a result after the stream completed", func(t *testing.T) {
		start := time.Now()
		r := f.do(t, ctx, "GET", "/slowreturn", nil)
		if r.status != 200 || string(r.body) != "done" {
			t.Errorf("got %s", r)
		}
		if d := time.Since(start); d > 800*time.Millisecond {
			t.Errorf("response ended after %v: it waited for the function's result", d)
		}
		<-returned
		// The worker writes its results in order: once a later call has
		// been answered, the engine has read the slow result too.
		f.do(t, ctx, "GET", "/nothing", nil)
		if n := f.srv.Engine().Stats().Dropped[engine.DropLateResult]; n != 0 {
			t.Errorf("%d late results counted; the stream had answered, so the result is not one", n)
		}
	})
	t.Run("a returned value wins", func(t *testing.T) {
		r := f.do(t, ctx, "GET", "/value", nil)
		if r.status != 201 || !strings.Contains(string(r.body), `"won":"value"`) {
			t.Errorf("got %s", r)
		}
		if st := websocket.CloseStatus(closed("value")); st != websocket.StatusGoingAway {
			t.Errorf("writer after the value answered: %v, want 1001", closed("value"))
		}
	})
	t.Run("a writer that vanishes cuts the response", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, "GET", f.base+"/vanish", nil)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || string(b) != "partial" {
			t.Errorf("body %q, err %v; want the partial body and a read error", b, err)
		}
	})
	t.Run("client leaving ends the stream", func(t *testing.T) {
		rctx, cancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(rctx, "GET", f.base+"/events", nil)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("content-type %q", resp.Header.Get("Content-Type"))
		}
		rd := bufio.NewReader(resp.Body)
		for range 3 {
			if _, err := rd.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		resp.Body.Close()
		if st := websocket.CloseStatus(closed("events")); st != websocket.StatusGoingAway {
			t.Errorf("writer after the client left: %v, want 1001", closed("events"))
		}
	})
	t.Run("open channel, no answer: 504", func(t *testing.T) {
		start := time.Now()
		assertEnvelope(t, f.do(t, ctx, "GET", "/silent", nil), 504, "TIMEOUT", true)
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("504 after %v, before default_timeout", d)
		}
		if st := websocket.CloseStatus(closed("silent")); st != websocket.StatusGoingAway {
			t.Errorf("writer after the 504: %v, want 1001", closed("silent"))
		}
	})
	t.Run("no result, no channel: {}", func(t *testing.T) {
		r := f.do(t, ctx, "GET", "/nothing", nil)
		if r.status != 200 || string(r.body) != "{}" {
			t.Errorf("got %s", r)
		}
	})
	t.Run("JSON body on request_body too", func(t *testing.T) {
		r := f.do(t, ctx, "POST", "/jsonbody", strings.NewReader(`{"a":1}`), "Content-Type: application/json")
		if r.status != 200 || string(r.body) != `{"raw":"{\"a\":1}"}` {
			t.Errorf("got %s", r)
		}
	})
	// Every request's channels left the table.
	for f.srv.Engine().Channels().Len() != 0 {
		if ctx.Err() != nil {
			t.Fatalf("%d channels left", f.srv.Engine().Channels().Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

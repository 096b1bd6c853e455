package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// TestChannelsCreate: engine::channels::create hands out a writer and a
// reader ref that work on the worker port, without the worker token; the
// channel goes when the creating worker disconnects.
func TestChannelsCreate(t *testing.T) {
	// Channel sockets carry their own key: the worker token is not asked
	// for (a wrong key is a 404, not a 401).
	authed := enginetest.New(t, engine.Options{AuthToken: "secret"})
	if _, resp, err := enginetest.DialRaw(t, authed.URL+"/ws/channels/nope?key=x&dir=read", nil); err == nil || resp == nil || resp.StatusCode != 404 {
		t.Errorf("unknown channel on an engine with a token: %v %v, want 404", err, resp)
	}

	te := enginetest.New(t, engine.Options{})
	w := enginetest.Dial(t, te.URL)

	for _, tc := range []struct {
		in   any
		code string
	}{
		{map[string]any{"buffer_size": -1}, engine.CodeDeserialization},
		{map[string]any{"buffer_size": "big"}, engine.CodeDeserialization},
	} {
		if res := w.Call("engine::channels::create", tc.in, uuid.NewString()); enginetest.ErrCode(res) != tc.code {
			t.Errorf("create %v: %v, want %s", tc.in, res, tc.code)
		}
	}
	// Python sends {"buffer_size": null}; Node omits it.
	for _, in := range []any{map[string]any{"buffer_size": nil}, map[string]any{}, map[string]any{"buffer_size": 5000}} {
		res := result(t, w.Call("engine::channels::create", in, uuid.NewString()))
		wr, _ := res["writer"].(map[string]any)
		rd, _ := res["reader"].(map[string]any)
		if wr["direction"] != "write" || rd["direction"] != "read" || wr["channel_id"] != rd["channel_id"] ||
			wr["access_key"] != rd["access_key"] || wr["channel_id"] == "" {
			t.Fatalf("create %v: %v", in, res)
		}
	}
	res := result(t, w.Call("engine::channels::create", map[string]any{"buffer_size": 2}, uuid.NewString()))
	ref := res["writer"].(map[string]any)
	chURL := func(dir string) string {
		return fmt.Sprintf("%s/ws/channels/%s?key=%s&dir=%s", te.URL, ref["channel_id"], ref["access_key"], dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wc, _, err := websocket.Dial(ctx, chURL("write"), nil)
	if err != nil {
		t.Fatalf("dial the writer end without the token: %v", err)
	}
	defer wc.CloseNow()
	rc, _, err := websocket.Dial(ctx, chURL("read"), nil)
	if err != nil {
		t.Fatalf("dial the reader end: %v", err)
	}
	defer rc.CloseNow()
	if err := wc.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if typ, data, err := rc.Read(ctx); err != nil || typ != websocket.MessageText || string(data) != "hello" {
		t.Fatalf("reader got %v %q %v", typ, data, err)
	}

	// The creator leaves: its channel that nobody opened is gone (404),
	// the connected pair keeps streaming.
	idle := result(t, w.Call("engine::channels::create", map[string]any{}, uuid.NewString()))["reader"].(map[string]any)
	w.Conn.Close(websocket.StatusNormalClosure, "bye")
	idleURL := fmt.Sprintf("%s/ws/channels/%s?key=%s&dir=read", te.URL, idle["channel_id"], idle["access_key"])
	enginetest.WaitFor(t, "the idle channel to go with its worker", func() bool {
		c, resp, err := websocket.Dial(ctx, idleURL, nil)
		if err == nil {
			c.CloseNow()
		}
		return resp != nil && resp.StatusCode == 404
	})
	if err := wc.Write(ctx, websocket.MessageBinary, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	if typ, data, err := rc.Read(ctx); err != nil || typ != websocket.MessageBinary || len(data) != 2 {
		t.Fatalf("reader after the creator left: %v %v %v", typ, data, err)
	}
	wc.Close(websocket.StatusNormalClosure, "")
	if _, _, err := rc.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("reader after the writer closed: %v, want 1000", err)
	}
}

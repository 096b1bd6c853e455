package channel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine/testctx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs m behind a loopback HTTP server at its real route and
// returns the ws:// base URL.
func serve(t *testing.T, opts Options) (*Manager, string) {
	t.Helper()
	m := NewManager(opts)
	mux := http.NewServeMux()
	mux.Handle("GET "+Path+"{channel_id}", m)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("manager close: %v", err)
		}
		srv.Close()
	})
	return m, "ws" + strings.TrimPrefix(srv.URL, "http")
}

// smallBuffers shrinks the kernel buffers of accepted sockets, so a
// writer the engine stops reading stalls after little data.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(32 << 10)
		tc.SetWriteBuffer(32 << 10)
	}
	return c, err
}

func url(base string, r Ref) string {
	return fmt.Sprintf("%s%s%s?key=%s&dir=%s", base, Path, r.ChannelID, r.AccessKey, r.Direction)
}

func dial(t *testing.T, ctx context.Context, base string, r Ref) *websocket.Conn {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 32<<10)
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10)
		})
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	c, resp, err := websocket.Dial(ctx, url(base, r), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial %s end: %v (response %v)", r.Direction, err, resp)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// readAll reads messages until the close and returns them with the close.
func readAll(ctx context.Context, c *websocket.Conn) ([]Item, websocket.CloseError) {
	var items []Item
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				ce = websocket.CloseError{Code: -1, Reason: err.Error()}
			}
			return items, ce
		}
		items = append(items, Item{Text: typ == websocket.MessageText, Data: data})
	}
}

func TestRoundTripAndClose(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{})
	wref, rref := m.Create(0, "")
	if wref.ChannelID != rref.ChannelID || wref.AccessKey != rref.AccessKey || wref.Direction != Write || rref.Direction != Read {
		t.Fatalf("refs: writer %+v reader %+v", wref, rref)
	}
	w := dial(t, ctx, base, wref)
	want := []Item{{Text: true, Data: []byte(`{"type":"a"}`)}, {Data: []byte{0, 1, 2, 255}}, {Text: true, Data: []byte("b")}}
	for _, it := range want {
		typ := websocket.MessageBinary
		if it.Text {
			typ = websocket.MessageText
		}
		if err := w.Write(ctx, typ, it.Data); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if err := w.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("writer close: %v", err)
	}
	// The reader connects after the writer has finished: items wait.
	r := dial(t, ctx, base, rref)
	got, ce := readAll(ctx, r)
	if len(got) != len(want) {
		t.Fatalf("reader got %d items %v, want %v", len(got), got, want)
	}
	for i := range want {
		if got[i].Text != want[i].Text || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Errorf("item %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if ce.Code != websocket.StatusNormalClosure {
		t.Errorf("reader close: %v, want 1000", ce)
	}
	// Both ends done: the channel left the table; a late socket gets 404.
	for m.Len() != 0 {
		if ctx.Err() != nil {
			t.Fatalf("channel still in the table after both ends finished")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNotFoundAndBadDir(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{})
	wref, _ := m.Create(0, "")
	httpBase := "http" + strings.TrimPrefix(base, "ws")
	for _, tc := range []struct {
		name, path string
		status     int
		body       string
	}{
		{"wrong key", Path + wref.ChannelID + "?key=nope&dir=write", 404, "Channel not found"},
		{"unknown id", Path + "f00?key=" + wref.AccessKey + "&dir=write", 404, "Channel not found"},
		{"bad dir", Path + wref.ChannelID + "?key=" + wref.AccessKey + "&dir=sideways", 400, "dir must be read or write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, "GET", httpBase+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
				t.Errorf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode, b, tc.status, tc.body)
			}
			// The same through a WebSocket client: the upgrade is refused.
			_, wresp, err := websocket.Dial(ctx, base+tc.path, nil)
			if err == nil || wresp == nil || wresp.StatusCode != tc.status {
				t.Errorf("dial %s: err %v, response %v; want a refused upgrade with %d", tc.path, err, wresp, tc.status)
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestEndTakenOnce(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{})
	wref, rref := m.Create(0, "")
	dial(t, ctx, base, wref)
	dial(t, ctx, base, rref)
	for _, ref := range []Ref{wref, rref} {
		c := dial(t, ctx, base, ref)
		_, _, err := c.Read(ctx)
		if st := websocket.CloseStatus(err); st != websocket.StatusPolicyViolation {
			t.Errorf("second %s socket: %v, want an immediate close 1008", ref.Direction, err)
		}
	}
}

func TestOversizedItem(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{MaxItemBytes: 1024})
	wref, rref := m.Create(0, "")
	w := dial(t, ctx, base, wref)
	if err := w.Write(ctx, websocket.MessageBinary, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, websocket.MessageBinary, make([]byte, 1025)); err != nil {
		t.Fatal(err)
	}
	_, _, err := w.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig || ce.Reason == "" {
		t.Fatalf("writer after an oversized item: %v, want close 1009 with a reason", err)
	}
	r := dial(t, ctx, base, rref)
	got, rce := readAll(ctx, r)
	if len(got) != 1 || string(got[0].Data) != "ok" {
		t.Errorf("reader got %v, want the one item before the oversized one", got)
	}
	if rce.Code != websocket.StatusInternalError || !strings.Contains(rce.Reason, "over 1024 bytes") {
		t.Errorf("reader close: %v, want 1011 naming the item limit", rce)
	}
}

// TestSlowReader: a reader that does not read holds the writer back with
// the buffer bounded, and loses nothing once it reads.
func TestSlowReader(t *testing.T) {
	ctx := testctx.New(t)
	const (
		maxBuffered = 256 << 10
		itemSize    = 32 << 10
		n           = 64 // 2 MiB: far more than the test's socket buffers hold
	)
	m, base := serve(t, Options{MaxBufferedBytes: maxBuffered})
	wref, rref := m.Create(1024, "")
	q := m.lookup(wref.ChannelID, wref.AccessKey).src.(*queue)
	w := dial(t, ctx, base, wref)
	var sent atomic.Int64
	errc := make(chan error, 1)
	// Exits after n writes and the close, or when the socket fails.
	go func() {
		buf := make([]byte, itemSize)
		for i := range n {
			binary.BigEndian.PutUint64(buf, uint64(i))
			if err := w.Write(ctx, websocket.MessageBinary, buf); err != nil {
				errc <- err
				return
			}
			sent.Add(1)
		}
		errc <- w.Close(websocket.StatusNormalClosure, "")
	}()
	// The writer stalls: the queue fills to its byte bound and stays there.
	var last int64 = -1
	stable := 0
	for stable < 20 {
		if ctx.Err() != nil {
			t.Fatalf("writer never stalled (sent %d)", sent.Load())
		}
		time.Sleep(10 * time.Millisecond)
		items, b := q.buffered()
		if b > maxBuffered+itemSize {
			t.Fatalf("queue holds %d bytes in %d items, bound %d", b, items, maxBuffered+itemSize)
		}
		if s := sent.Load(); s == last && b >= maxBuffered-itemSize {
			stable++
		} else {
			last, stable = s, 0
		}
	}
	if s := sent.Load(); s >= n {
		t.Fatalf("writer sent all %d items with nobody reading", s)
	}
	r := dial(t, ctx, base, rref)
	t0 := time.Now()
	got, ce := readAll(ctx, r)
	t.Logf("read %d items in %v, close %v, sent %d", len(got), time.Since(t0), ce, sent.Load())
	if err := <-errc; err != nil {
		t.Fatalf("writer: %v", err)
	}
	if len(got) != n || ce.Code != websocket.StatusNormalClosure {
		t.Fatalf("reader got %d items and %v, want %d and 1000", len(got), ce, n)
	}
	for i, it := range got {
		if k := binary.BigEndian.Uint64(it.Data); k != uint64(i) || len(it.Data) != itemSize {
			t.Fatalf("item %d is #%d of %d bytes", i, k, len(it.Data))
		}
	}
}

func TestReaderLeavesWriterClosed(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{})
	wref, rref := m.Create(0, "")
	w := dial(t, ctx, base, wref)
	r := dial(t, ctx, base, rref)
	if err := w.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Read(ctx); err != nil {
		t.Fatal(err)
	}
	r.Close(websocket.StatusNormalClosure, "bye")
	// The writer learns at its next item.
	for {
		if err := w.Write(ctx, websocket.MessageText, []byte("y")); err != nil {
			break
		}
		_, _, err := w.Read(ctx)
		if st := websocket.CloseStatus(err); st == websocket.StatusGoingAway {
			return
		} else if st != -1 || ctx.Err() != nil {
			t.Fatalf("writer after the reader left: %v, want close 1001", err)
		}
	}
}

func TestOwnerAndTTLRemoval(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{TTL: 150 * time.Millisecond})

	wref, rref := m.Create(0, "worker-1")
	other, _ := m.Create(0, "worker-2")
	w := dial(t, ctx, base, wref)
	m.RemoveOwner("worker-1")
	_, _, err := w.Read(ctx)
	if ce := (websocket.CloseError{}); !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || !strings.Contains(ce.Reason, "owner") {
		t.Errorf("writer of a removed channel: %v, want 1001 naming the owner", err)
	}
	if _, resp, err := websocket.Dial(ctx, url(base, rref), nil); err == nil || resp == nil || resp.StatusCode != 404 {
		t.Errorf("reader of a removed channel: %v %v, want 404", err, resp)
	}
	if m.lookup(other.ChannelID, other.AccessKey) == nil {
		t.Errorf("another worker's channel was removed")
	}

	// A reader waiting for a writer that never comes: the sweep ends it
	// after the TTL.
	_, rref2 := m.Create(0, "")
	r := dial(t, ctx, base, rref2)
	start := time.Now()
	_, ce := readAll(ctx, r)
	if ce.Code != websocket.StatusGoingAway || !strings.Contains(ce.Reason, "expired") {
		t.Errorf("reader of an expired channel: %v, want 1001 naming the expiry", ce)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("expired after %v, before the TTL", d)
	}
	for m.Len() != 0 {
		if ctx.Err() != nil {
			t.Fatalf("%d channels left after the TTL", m.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInProcessEnds(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{})
	body := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160000 bytes: 3 chunks
	rref := m.CreateReadable(NewBytesSource(body), "")
	// Its write end is the engine's: a worker cannot take it.
	c := dial(t, ctx, base, Ref{ChannelID: rref.ChannelID, AccessKey: rref.AccessKey, Direction: Write})
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("write end of a readable channel: %v, want 1008", err)
	}
	got, ce := readAll(ctx, dial(t, ctx, base, rref))
	var all []byte
	for _, it := range got {
		if it.Text || len(it.Data) > ChunkSize {
			t.Errorf("item text=%v of %d bytes, want binary of at most %d", it.Text, len(it.Data), ChunkSize)
		}
		all = append(all, it.Data...)
	}
	if !bytes.Equal(all, body) || ce.Code != websocket.StatusNormalClosure {
		t.Errorf("read %d bytes (equal %v) and %v, want %d and 1000", len(all), bytes.Equal(all, body), ce, len(body))
	}

	q := newQueue(4, 1<<20)
	wref := m.CreateWritable(q, "")
	w := dial(t, ctx, base, wref)
	if err := w.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	w.Close(websocket.StatusNormalClosure, "")
	it, err := q.Next(ctx)
	if err != nil || string(it.Data) != "hi" || !it.Text {
		t.Fatalf("sink got %+v %v", it, err)
	}
	if _, err := q.Next(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("sink end: %v, want EOF", err)
	}
}

func TestCloseEndsSockets(t *testing.T) {
	ctx := testctx.New(t)
	m := NewManager(Options{})
	mux := http.NewServeMux()
	mux.Handle("GET "+Path+"{channel_id}", m)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	base := "ws" + strings.TrimPrefix(srv.URL, "http")
	wref, rref := m.Create(0, "")
	w := dial(t, ctx, base, wref)
	r := dial(t, ctx, base, rref)
	_, idle := m.Create(0, "")
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{w, r} {
		if _, _, err := c.Read(ctx); websocket.CloseStatus(err) == -1 && !errors.Is(err, io.EOF) {
			t.Logf("socket after Close: %v", err)
		}
	}
	if _, resp, err := websocket.Dial(ctx, url(base, idle), nil); err == nil || resp.StatusCode != 404 {
		t.Errorf("dial after Close: %v, want 404", err)
	}
}

// rawWriter opens the writer end with a hand-made handshake, so the test
// can send frames coder/websocket refuses to build.
func rawWriter(t *testing.T, base string, r Ref) net.Conn {
	t.Helper()
	u := url(base, r)
	hostPath := strings.TrimPrefix(u, "ws://")
	host, path, _ := strings.Cut(hostPath, "/")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatalf("dial writer: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("writer handshake: %v %v", resp, err)
	}
	return c
}

// maskedFrame is one client frame (FIN set, mask of zeros, payload < 126).
func maskedFrame(opcode byte, payload []byte) []byte {
	f := []byte{0x80 | opcode, 0x80 | byte(len(payload)), 0, 0, 0, 0}
	return append(f, payload...)
}

// The Rust SDK's ChannelWriter::close sends a close frame with no status
// code (1005 on the receiving side). That is the writer's clean end, as in
// iii: the reader gets every item and a normal close, not an error.
func TestWriterCloseWithoutStatusIsClean(t *testing.T) {
	ctx := testctx.New(t)
	m, base := serve(t, Options{})
	wref, rref := m.Create(0, "")
	w := rawWriter(t, base, wref)
	if _, err := w.Write(append(maskedFrame(0x1, []byte(`[1,2,3]`)), maskedFrame(0x8, nil)...)); err != nil {
		t.Fatalf("write frames: %v", err)
	}
	r := dial(t, ctx, base, rref)
	got, ce := readAll(ctx, r)
	if len(got) != 1 || string(got[0].Data) != `[1,2,3]` || !got[0].Text {
		t.Fatalf("reader got %+v, want the one text item", got)
	}
	if ce.Code != websocket.StatusNormalClosure {
		t.Errorf("reader close: %v, want 1000 after the writer's close frame without a status", ce)
	}
}

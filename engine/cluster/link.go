package cluster

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Link frames: one JSON object per line, several lines per WebSocket
// message when calls queue up.
type linkRequest struct {
	ID          uint64           `json:"i"`
	FunctionID  string           `json:"f"`
	Namespace   string           `json:"n,omitempty"` // "" for the default namespace
	Caller      *protocol.Caller `json:"c,omitempty"`
	Data        json.RawMessage  `json:"d,omitempty"`
	Metadata    json.RawMessage  `json:"m,omitempty"`
	Traceparent string           `json:"tp,omitempty"`
	Baggage     string           `json:"bg,omitempty"`
	TimeoutMS   int64            `json:"t"`
}

type linkReply struct {
	ID     uint64              `json:"i"`
	Result json.RawMessage     `json:"r,omitempty"`
	Error  *protocol.ErrorBody `json:"e,omitempty"`
}

const (
	linkQueueLimit = 8192             // frames waiting for a link's writer
	linkBatchBytes = 256 << 10        // most bytes per WebSocket message, but for one longer line
	linkWriteLimit = 10 * time.Second // one write
)

// linkLineLimit is the longest line (one call or one result) a link
// carries: a worker message can be as large as engine.MaxFrameBytesLimit,
// plus room for the line's own fields. A longer call or result fails
// alone with payload_too_large; the link, and every other call on it,
// goes on. A variable for tests.
var linkLineLimit = engine.MaxFrameBytesLimit + 1<<20

// linkReadLimit is the largest message a link reads: a batch of short
// lines and one line of up to linkLineLimit.
func linkReadLimit() int64 { return int64(linkLineLimit) + 2*linkBatchBytes }

// writer batches queued lines into WebSocket messages; one per socket.
type writer struct {
	mu     sync.Mutex
	buf    [][]byte
	wake   chan struct{} // cap 1
	closed bool
}

func newWriter() *writer { return &writer{wake: make(chan struct{}, 1)} }

// push queues a line; false when the writer is closed or full.
func (w *writer) push(line []byte) bool {
	w.mu.Lock()
	if w.closed || len(w.buf) >= linkQueueLimit {
		w.mu.Unlock()
		return false
	}
	w.buf = append(w.buf, line)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

func (w *writer) shut() {
	w.mu.Lock()
	w.closed = true
	w.buf = nil
	w.mu.Unlock()
}

// run writes queued lines until ctx ends or a write fails.
func (w *writer) run(ctx context.Context, ws *websocket.Conn) error {
	var msg []byte
	var batch [][]byte
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			batch, w.buf = w.buf, batch[:0]
			w.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			msg = msg[:0]
			for i, line := range batch {
				msg = append(msg, line...)
				msg = append(msg, '\n')
				if len(msg) >= linkBatchBytes || i == len(batch)-1 {
					wctx, cancel := context.WithTimeout(ctx, linkWriteLimit)
					err := ws.Write(wctx, websocket.MessageText, msg)
					cancel()
					if err != nil {
						return err
					}
					msg = msg[:0]
				}
			}
			clear(batch)
		}
	}
}

// fwd is a call forwarded over a link and not yet answered.
type fwd struct {
	functionID string
	deadline   time.Time
	done       func(json.RawMessage, *protocol.ErrorBody)
}

// link is this engine's connection to one peer, for the calls it forwards
// there. It dials when the peer joins and again after a drop while the peer
// is still advertised.
type link struct {
	c    *Cluster
	peer string // name, for messages
	addr string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	state   linkState
	w       *writer
	seq     uint64
	pending map[uint64]*fwd
	reason  string // why it closed
}

type linkState int

const (
	linkDialing linkState = iota // calls queue until the dial ends
	linkUp
	linkDown // dial failed or connection lost; calls fail fast until redialled
	linkClosed
)

func (c *Cluster) newLink(ad advert) *link {
	ctx, cancel := context.WithCancel(c.ctx)
	return &link{c: c, peer: ad.Name, addr: ad.Link, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		w: newWriter(), pending: map[uint64]*fwd{}}
}

// start dials in a goroutine the cluster waits for.
func (l *link) start() {
	// Exits when the link is closed (peer left, cluster stopped).
	if !l.c.life.Go(func() {
		defer close(l.done)
		l.run()
	}) {
		close(l.done) // the cluster is stopping: the link never runs
	}
}

func (l *link) usable() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == linkUp || l.state == linkDialing
}

func (l *link) run() {
	backoff := 50 * time.Millisecond
	for l.ctx.Err() == nil {
		hdr := http.Header{}
		if tok := l.c.opts.AuthToken; tok != "" {
			hdr.Set("Authorization", "Bearer "+tok)
		}
		dctx, cancel := context.WithTimeout(l.ctx, l.c.cfg.TTL)
		ws, _, err := websocket.Dial(dctx, "ws://"+l.addr+"/", &websocket.DialOptions{HTTPHeader: hdr,
			CompressionMode: websocket.CompressionDisabled})
		cancel()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			l.c.log.Warn("cluster: cannot reach peer; calls for it fail with cluster_unavailable until it answers",
				"engine", l.peer, "link", l.addr, "err", err)
			l.down(engine.CodeClusterUnavailable, fmt.Sprintf("engine %s (%s) is unreachable: %v", l.peer, l.addr, err))
			if !sleep(l.ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		ws.SetReadLimit(linkReadLimit())
		l.mu.Lock()
		if l.state == linkClosed {
			l.mu.Unlock()
			ws.CloseNow()
			return
		}
		l.state = linkUp
		w := l.w
		l.mu.Unlock()
		err = l.serve(ws, w)
		ws.CloseNow()
		if l.ctx.Err() != nil {
			return
		}
		l.c.log.Warn("cluster: link to peer lost", "engine", l.peer, "err", err)
		l.down(engine.CodeInvocationStopped, fmt.Sprintf("Invocation stopped: the connection to engine %s was lost", l.peer))
		if !sleep(l.ctx, backoff) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serve runs one connection: the writer in a goroutine, replies read here.
func (l *link) serve(ws *websocket.Conn, w *writer) error {
	ctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	werr := make(chan error, 1)
	// Exits when ctx is cancelled (this function returns) or a write fails.
	go func() {
		err := w.run(ctx, ws)
		cancel()
		werr <- err
	}()
	var err error
	for {
		var data []byte
		_, data, err = ws.Read(ctx)
		if err != nil {
			break
		}
		for len(data) > 0 {
			line, rest, _ := bytes.Cut(data, []byte{'\n'})
			data = rest
			if len(line) == 0 {
				continue
			}
			var r linkReply
			if json.Unmarshal(line, &r) != nil {
				continue
			}
			l.mu.Lock()
			f := l.pending[r.ID]
			delete(l.pending, r.ID)
			l.mu.Unlock()
			if f != nil {
				f.done(r.Result, r.Error)
			}
		}
	}
	cancel()
	if e := <-werr; e != nil && !errors.Is(e, context.Canceled) {
		err = e
	}
	return err
}

// down fails every pending and queued call and makes new ones fail fast
// until the next connection.
func (l *link) down(code, msg string) {
	l.mu.Lock()
	if l.state == linkClosed {
		l.mu.Unlock()
		return
	}
	l.state = linkDown
	calls := l.pending
	l.pending = map[uint64]*fwd{}
	l.w.shut()
	l.w = newWriter()
	l.reason = msg
	l.mu.Unlock()
	for _, f := range calls {
		f.done(nil, &protocol.ErrorBody{Code: code, Message: msg})
	}
}

// close ends the link for good: its calls end with invocation_stopped.
func (l *link) close(why string) {
	l.mu.Lock()
	if l.state == linkClosed {
		l.mu.Unlock()
		return
	}
	l.state = linkClosed
	calls := l.pending
	l.pending = map[uint64]*fwd{}
	l.w.shut()
	l.reason = why
	l.mu.Unlock()
	l.cancel()
	for _, f := range calls {
		f.done(nil, &protocol.ErrorBody{Code: engine.CodeInvocationStopped, Message: "Invocation stopped: " + why})
	}
}

// call sends one call to the peer; done gets its outcome exactly once.
func (l *link) call(call *engine.Call, timeout time.Duration, done func(json.RawMessage, *protocol.ErrorBody)) {
	l.mu.Lock()
	switch l.state {
	case linkDown, linkClosed:
		code, msg := engine.CodeClusterUnavailable, l.reason
		if l.state == linkClosed {
			code = engine.CodeInvocationStopped
		}
		l.mu.Unlock()
		done(nil, &protocol.ErrorBody{Code: code, Message: fmt.Sprintf("cannot forward %s: %s", call.FunctionID, msg)})
		return
	}
	l.seq++
	id := l.seq
	l.pending[id] = &fwd{functionID: call.FunctionID, deadline: time.Now().Add(timeout), done: done}
	w := l.w
	l.mu.Unlock()
	line, err := json.Marshal(linkRequest{ID: id, FunctionID: call.FunctionID, Namespace: wireNS(nsOrDefault(call.Namespace)),
		Caller: call.StampedCaller(), Data: call.Data, Metadata: call.Metadata,
		Traceparent: call.Traceparent, Baggage: call.Baggage, TimeoutMS: timeout.Milliseconds()})
	code := engine.CodeClusterUnavailable
	switch {
	case err != nil:
	case len(line) > linkLineLimit:
		code = engine.CodePayloadTooLarge
		err = fmt.Errorf("the call is %d bytes, over the %d a link carries", len(line), linkLineLimit)
	case !w.push(line):
		err = errors.New("link queue full or closed")
	}
	if err != nil {
		l.mu.Lock()
		f := l.pending[id]
		delete(l.pending, id)
		l.mu.Unlock()
		if f != nil {
			f.done(nil, &protocol.ErrorBody{Code: code,
				Message: fmt.Sprintf("cannot forward %s to engine %s: %v", call.FunctionID, l.peer, err)})
		}
	}
}

// expire fails calls past their deadline with timeout.
func (l *link) expire(now time.Time) {
	var late []*fwd
	l.mu.Lock()
	for id, f := range l.pending {
		if !now.Before(f.deadline) {
			delete(l.pending, id)
			late = append(late, f)
		}
	}
	l.mu.Unlock()
	for _, f := range late {
		f.done(nil, &protocol.ErrorBody{Code: engine.CodeTimeout,
			Message: fmt.Sprintf("invocation of %s forwarded to engine %s timed out", f.functionID, l.peer)})
	}
}

// serverConn is a peer's link into this engine.
type serverConn struct {
	ws *websocket.Conn
	w  *writer
}

func (c *Cluster) authorized(r *http.Request) bool {
	tok := c.opts.AuthToken
	if tok == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(tok)) == 1
}

// serveLink runs the calls a peer forwards here as this engine's own and
// writes their outcomes back.
func (c *Cluster) serveLink(rw http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		http.Error(rw, "unauthorized: cluster links need the engine's token", http.StatusUnauthorized)
		return
	}
	ws, err := websocket.Accept(rw, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	ws.SetReadLimit(linkReadLimit())
	sc := &serverConn{ws: ws, w: newWriter()}
	if !c.life.Enter() {
		ws.CloseNow()
		return
	}
	defer c.life.Leave()
	// Stop cancels c.ctx before it closes the connections it finds here.
	c.srvMu.Lock()
	if c.ctx.Err() != nil {
		c.srvMu.Unlock()
		ws.CloseNow()
		return
	}
	c.srvConn[sc] = struct{}{}
	c.srvMu.Unlock()
	defer func() {
		c.srvMu.Lock()
		delete(c.srvConn, sc)
		c.srvMu.Unlock()
	}()
	defer ws.CloseNow()
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	var calls sync.WaitGroup
	defer calls.Wait()
	calls.Add(1)
	// Exits when ctx is cancelled (the reader below returned) or a write fails.
	go func() {
		defer calls.Done()
		sc.w.run(ctx, ws)
		cancel()
	}()
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		for len(data) > 0 {
			line, rest, _ := bytes.Cut(data, []byte{'\n'})
			data = rest
			if len(line) == 0 {
				continue
			}
			var req linkRequest
			if err := json.Unmarshal(line, &req); err != nil {
				c.log.Warn("cluster: bad frame from a peer dropped", "remote", r.RemoteAddr, "err", err)
				continue
			}
			calls.Add(1)
			// Exits when the call ends, bounded by its timeout.
			go func() {
				defer calls.Done()
				c.runForwarded(ctx, sc.w, req)
			}()
		}
	}
}

func (c *Cluster) runForwarded(ctx context.Context, w *writer, req linkRequest) {
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = engine.DefaultInvocationTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := c.eng.Invoke(ctx, engine.Request{FunctionID: req.FunctionID, Namespace: req.Namespace, Caller: req.Caller,
		Data: req.Data, Metadata: req.Metadata,
		Traceparent: req.Traceparent, Baggage: req.Baggage, Trigger: engine.TriggerKindCluster})
	reply := linkReply{ID: req.ID, Result: res}
	if err != nil {
		var eb *protocol.ErrorBody
		switch {
		case errors.As(err, &eb):
			reply.Error = eb
		case errors.Is(err, context.DeadlineExceeded):
			reply.Error = &protocol.ErrorBody{Code: engine.CodeTimeout, Message: fmt.Sprintf("invocation of %s timed out on engine %s", req.FunctionID, c.name)}
		default:
			reply.Error = &protocol.ErrorBody{Code: engine.CodeInvocationStopped, Message: fmt.Sprintf("Invocation stopped: engine %s is stopping", c.name)}
		}
	}
	line, mErr := json.Marshal(reply)
	switch {
	case mErr != nil:
		line, _ = json.Marshal(linkReply{ID: req.ID, Error: &protocol.ErrorBody{Code: "serialization_error", Message: mErr.Error()}})
	case len(line) > linkLineLimit:
		line, _ = json.Marshal(linkReply{ID: req.ID, Error: &protocol.ErrorBody{Code: engine.CodePayloadTooLarge,
			Message: fmt.Sprintf("the result of %s is %d bytes, over the %d a link between engines carries", req.FunctionID, len(line), linkLineLimit)}})
	}
	w.push(line)
}

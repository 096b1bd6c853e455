// Package channel implements iii's streaming channels (spec §1.4): a
// one-way pipe of items (text or binary) between two parties that connect
// to the engine's worker port at
//
//	/ws/channels/{channel_id}?key=<access_key>&dir=read|write
//
// A channel is created by engine::channels::create (both ends are
// sockets), or by the HTTP module for a request's body (the engine writes,
// a worker reads) and its response (a worker writes, the engine reads).
//
// Rules, as iii has them unless noted:
//
//   - An unknown channel id or a wrong key is refused before the upgrade
//     with 404 "Channel not found".
//   - Each end is taken once; a second socket for a taken end is closed at
//     once (1008, naming the end).
//   - A text frame from the writer is one text item and reaches the reader
//     as a text frame; a binary frame likewise. The writer's Close (1000 or
//     1001) ends the stream: the reader gets every buffered item, then a
//     Close 1000. A writer that vanishes without a Close, or sends an item
//     over the item limit, ends the stream with a Close 1011 for the reader
//     (after the buffered items), so a cut-off stream is never mistaken for
//     a complete one by a client that looks at the close code.
//   - Buffers are bounded in items (buffer_size, default 64, at most 1024)
//     and in bytes (Options.MaxBufferedBytes). When a buffer is full the
//     engine stops reading the writer's socket, so TCP slows the writer
//     down; nothing is dropped and memory stays bounded however long the
//     reader does not read. (iii bounds items only.)
//   - An item larger than Options.MaxItemBytes closes the writer's socket
//     with 1009 and a reason.
//   - When the reader goes away the writer's socket is closed with 1001.
//   - A channel created by a worker is removed when that worker
//     disconnects, and a channel one of whose ends nobody took within
//     Options.TTL (5 minutes, as iii) is removed by a sweep that runs every
//     TTL/5. Removing a channel closes the socket of the end that was
//     taken, if the other end was never taken; a channel whose two ends
//     are both connected keeps streaming until its writer finishes (iii
//     does the same).
package channel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Direction is the end of a channel a ref opens, from the worker's side.
type Direction string

// Directions.
const (
	Read  Direction = "read"
	Write Direction = "write"
)

// Ref is a channel end as workers see it (iii's StreamChannelRef).
type Ref struct {
	ChannelID string    `json:"channel_id"`
	AccessKey string    `json:"access_key"`
	Direction Direction `json:"direction"`
}

// Item is one message of a channel.
type Item struct {
	Text bool // a text item; otherwise binary
	Data []byte
}

// Defaults and limits.
const (
	DefaultBufferSize       = 64
	MaxBufferSize           = 1024
	DefaultMaxItemBytes     = 4 << 20
	DefaultMaxBufferedBytes = 4 << 20
	DefaultTTL              = 5 * time.Minute
	// ChunkSize is the largest item the engine itself writes into a
	// channel (request bodies), as the SDKs' writers do.
	ChunkSize = 64 << 10
)

// Path is the route prefix of the channel endpoint.
const Path = "/ws/channels/"

// EndError ends a stream abnormally: the socket of the other end is closed
// with Code and Reason.
type EndError struct {
	Code   websocket.StatusCode
	Reason string
}

func (e *EndError) Error() string {
	return fmt.Sprintf("channel: %s (close %d)", e.Reason, int(e.Code))
}

// Errors.
var (
	// ErrReaderGone is returned by a Sink's Put when nobody will read.
	ErrReaderGone = &EndError{Code: websocket.StatusGoingAway, Reason: "channel reader closed"}
	// ErrClosed is returned after the manager was closed.
	ErrClosed = errors.New("channel: manager closed")

	errOwnerGone = &EndError{Code: websocket.StatusGoingAway, Reason: "channel owner disconnected"}
	errExpired   = &EndError{Code: websocket.StatusGoingAway, Reason: "channel expired: its other end was never opened"}
	errShutdown  = &EndError{Code: websocket.StatusGoingAway, Reason: "engine shutting down"}
)

// Source feeds the reader socket of a channel whose writer is in-process.
type Source interface {
	// Next returns the next item, io.EOF at the normal end, or an error
	// (an *EndError sets the close code) at an abnormal one.
	Next(ctx context.Context) (Item, error)
	// Stop tells the source its reader is gone (err nil: it finished).
	Stop(err error)
}

// Sink takes the items of a channel whose reader is in-process.
type Sink interface {
	// Open is called once, when the writer socket is accepted.
	Open()
	// Put delivers one item; an error (ErrReaderGone) stops the writer.
	Put(ctx context.Context, it Item) error
	// Finish ends the stream: err nil for the writer's Close, else why.
	Finish(err error)
	// Gone is closed once nobody will read any more; Err then says why
	// (the writer's socket is closed with it at once).
	Gone() <-chan struct{}
	Err() error
}

// Options configures a Manager. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// MaxItemBytes is the largest item a writer may send; a larger one
	// closes its socket with 1009.
	MaxItemBytes int64
	// MaxBufferedBytes bounds the bytes waiting in one channel (beyond
	// them the writer waits), besides its buffer_size in items.
	MaxBufferedBytes int
	// TTL is how long an end may stay untaken before the channel goes.
	TTL time.Duration
}

func (o *Options) withDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxItemBytes <= 0 {
		o.MaxItemBytes = DefaultMaxItemBytes
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
}

// Manager holds the channels and serves their sockets. Its goroutines are
// the sweeper and one per connected channel socket; Close stops them all.
//
// Lock order: Manager.mu, then channel.mu; queue.mu is taken alone.
type Manager struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context // cancelled by Close; every socket runs under it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closing bool
	chans   map[string]*channel
}

// channel is one channel of the table.
type channel struct {
	id, key string
	owner   string // worker id, "" for the engine's own
	created time.Time
	src     Source // what a reader socket reads; nil when the reader is in-process
	dst     Sink   // where a writer socket writes; nil when the writer is in-process

	mu         sync.Mutex
	readTaken  bool
	writeTaken bool
	readDone   bool
	writeDone  bool
}

// NewManager returns a manager and starts its sweeper.
func NewManager(opts Options) *Manager {
	opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{opts: opts, log: opts.Logger.With("component", "channels"),
		ctx: ctx, cancel: cancel, chans: make(map[string]*channel)}
	m.wg.Add(1)
	// Exits when Close cancels m.ctx.
	go func() {
		defer m.wg.Done()
		m.sweepLoop()
	}()
	return m
}

// Close ends every channel socket (1001) and waits for the manager's
// goroutines within ctx.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	chans := m.chans
	m.chans = make(map[string]*channel)
	m.mu.Unlock()
	for _, ch := range chans {
		ch.abandon(errShutdown)
	}
	m.cancel()
	done := make(chan struct{})
	// Exits once every socket and the sweeper have returned.
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("channel: close: %w", ctx.Err())
	}
}

// Len is the number of channels in the table.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.chans)
}

// Buffered is the number of bytes waiting in the buffers of channels
// between two sockets (for metrics and tests).
func (m *Manager) Buffered() int {
	m.mu.Lock()
	qs := make([]*queue, 0, len(m.chans))
	for _, ch := range m.chans {
		if q, ok := ch.src.(*queue); ok {
			qs = append(qs, q)
		}
	}
	m.mu.Unlock()
	total := 0
	for _, q := range qs {
		_, b := q.buffered()
		total += b
	}
	return total
}

// Create makes a channel between two sockets, owned by worker owner ("":
// nobody), with a buffer of bufferSize items (<= 0: 64; at most 1024).
func (m *Manager) Create(bufferSize int, owner string) (writer, reader Ref) {
	if bufferSize <= 0 {
		bufferSize = DefaultBufferSize
	}
	bufferSize = min(bufferSize, MaxBufferSize)
	q := newQueue(bufferSize, m.opts.MaxBufferedBytes)
	ch := m.add(owner, q, q)
	return ch.ref(Write), ch.ref(Read)
}

// CreateReadable makes a channel whose writer is src, in-process: the
// returned ref lets a worker read it.
func (m *Manager) CreateReadable(src Source, owner string) Ref {
	return m.add(owner, src, nil).ref(Read)
}

// CreateWritable makes a channel whose reader is dst, in-process: the
// returned ref lets a worker write it.
func (m *Manager) CreateWritable(dst Sink, owner string) Ref {
	return m.add(owner, nil, dst).ref(Write)
}

func (m *Manager) add(owner string, src Source, dst Sink) *channel {
	id, key := newIDPair()
	ch := &channel{id: id, key: key, owner: owner, created: time.Now(), src: src, dst: dst,
		readTaken: src == nil, writeTaken: dst == nil, readDone: src == nil, writeDone: dst == nil}
	m.mu.Lock()
	closing := m.closing
	if !closing {
		m.chans[id] = ch
	}
	m.mu.Unlock()
	if closing {
		ch.abandon(errShutdown)
	}
	return ch
}

func (ch *channel) ref(d Direction) Ref {
	return Ref{ChannelID: ch.id, AccessKey: ch.key, Direction: d}
}

// Remove drops a channel from the table: no socket may connect to it any
// more. Sockets already connected are left to finish.
func (m *Manager) Remove(id string) {
	m.mu.Lock()
	delete(m.chans, id)
	m.mu.Unlock()
}

// RemoveOwner removes the channels created by worker id (it
// disconnected), closing the socket of any that will never get its other
// end.
func (m *Manager) RemoveOwner(id string) {
	if id == "" {
		return
	}
	var gone []*channel
	m.mu.Lock()
	for cid, ch := range m.chans {
		if ch.owner == id {
			delete(m.chans, cid)
			gone = append(gone, ch)
		}
	}
	m.mu.Unlock()
	for _, ch := range gone {
		ch.abandon(errOwnerGone)
	}
	if len(gone) > 0 {
		m.log.Debug("removed the channels of a disconnected worker", "worker_id", id, "count", len(gone))
	}
}

// abandon ends the channel for the end that was never taken: a connected
// writer is told the reader is gone, a connected reader gets what is
// buffered and then the close of err.
func (ch *channel) abandon(err *EndError) {
	ch.mu.Lock()
	readTaken, writeTaken := ch.readTaken, ch.writeTaken
	ch.readTaken, ch.writeTaken = true, true
	ch.mu.Unlock()
	if !readTaken && ch.src != nil {
		ch.src.Stop(err)
	}
	if !writeTaken && ch.dst != nil {
		ch.dst.Finish(err)
	}
}

func (m *Manager) sweepLoop() {
	every := min(max(m.opts.TTL/5, 10*time.Millisecond), time.Minute)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-tk.C:
			m.sweep(now)
		}
	}
}

// sweep removes the channels with an end untaken for longer than the TTL.
func (m *Manager) sweep(now time.Time) {
	var stale []*channel
	m.mu.Lock()
	for id, ch := range m.chans {
		if now.Sub(ch.created) <= m.opts.TTL {
			continue
		}
		ch.mu.Lock()
		untaken := !ch.readTaken || !ch.writeTaken
		ch.mu.Unlock()
		if untaken {
			delete(m.chans, id)
			stale = append(stale, ch)
		}
	}
	m.mu.Unlock()
	for _, ch := range stale {
		ch.abandon(errExpired)
	}
	if len(stale) > 0 {
		m.log.Info("removed channels whose other end was never opened", "count", len(stale), "ttl", m.opts.TTL)
	}
}

func (m *Manager) lookup(id, key string) *channel {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.chans[id]
	if ch == nil || ch.key != key {
		return nil
	}
	return ch
}

// take claims an end; false if it was taken already.
func (ch *channel) take(d Direction) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if d == Read {
		if ch.readTaken {
			return false
		}
		ch.readTaken = true
		return true
	}
	if ch.writeTaken {
		return false
	}
	ch.writeTaken = true
	return true
}

// done records that an end's socket finished; once both have, the channel
// leaves the table.
func (m *Manager) done(ch *channel, d Direction) {
	ch.mu.Lock()
	if d == Read {
		ch.readDone = true
	} else {
		ch.writeDone = true
	}
	both := ch.readDone && ch.writeDone
	ch.mu.Unlock()
	if both {
		m.mu.Lock()
		if m.chans[ch.id] == ch {
			delete(m.chans, ch.id)
		}
		m.mu.Unlock()
	}
}

// ServeHTTP serves /ws/channels/{channel_id}?key=...&dir=read|write.
func (m *Manager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("channel_id")
	if id == "" {
		id = strings.TrimPrefix(r.URL.Path, Path)
	}
	q := r.URL.Query()
	ch := m.lookup(id, q.Get("key"))
	if ch == nil {
		http.Error(w, "Channel not found", http.StatusNotFound)
		return
	}
	dir := Direction(q.Get("dir"))
	if dir != Read && dir != Write {
		http.Error(w, fmt.Sprintf("dir must be read or write, got %q", q.Get("dir")), http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		http.Error(w, "engine shutting down", http.StatusServiceUnavailable)
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()
	// Channel sockets carry their own capability (the key); browsers'
	// origins are not checked, as iii does not.
	// The end is claimed before the upgrade is answered, so of two
	// sockets the one whose upgrade completed first is the one served.
	taken := ch.take(dir)
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		m.log.Debug("channel upgrade failed", "channel_id", id, "err", err)
		if taken {
			m.done(ch, dir)
		}
		return
	}
	defer c.CloseNow()
	if !taken {
		c.Close(websocket.StatusPolicyViolation, fmt.Sprintf("channel %s end already taken", dir))
		return
	}
	defer m.done(ch, dir)
	if dir == Read {
		m.serveReader(c, ch)
	} else {
		m.serveWriter(c, ch)
	}
}

// serveReader sends the channel's items to the socket until the stream
// ends or the socket goes.
func (m *Manager) serveReader(c *websocket.Conn, ch *channel) {
	// CloseRead answers the client's control frames; its context ends
	// when the client closes or the manager does.
	ctx := c.CloseRead(m.ctx)
	for {
		it, err := ch.src.Next(ctx)
		if err != nil {
			if ctx.Err() != nil && m.ctx.Err() == nil {
				ch.src.Stop(ErrReaderGone) // the client left
				return
			}
			code, reason := closeFor(err)
			c.Close(code, reason)
			ch.src.Stop(nil)
			return
		}
		typ := websocket.MessageBinary
		if it.Text {
			typ = websocket.MessageText
		}
		if err := c.Write(ctx, typ, it.Data); err != nil {
			ch.src.Stop(ErrReaderGone)
			return
		}
	}
}

// serveWriter puts the socket's messages into the channel until the
// writer closes.
func (m *Manager) serveWriter(c *websocket.Conn, ch *channel) {
	c.SetReadLimit(m.opts.MaxItemBytes)
	ch.dst.Open()
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	m.wg.Add(1)
	// Closes the socket as soon as the reader is gone, even while the
	// writer sends nothing; exits then or when this function returns.
	go func() {
		defer m.wg.Done()
		select {
		case <-ch.dst.Gone():
			code, reason := closeFor(ch.dst.Err())
			c.Close(code, reason)
		case <-ctx.Done():
		}
	}()
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			switch st := websocket.CloseStatus(err); {
			// A close frame without a status (1005) is a clean end too: the
			// Rust SDK's writer sends one, and iii takes any close frame.
			case st == websocket.StatusNormalClosure || st == websocket.StatusGoingAway || st == websocket.StatusNoStatusRcvd:
				ch.dst.Finish(nil)
			case errors.Is(err, websocket.ErrMessageTooBig):
				ch.dst.Finish(&EndError{Code: websocket.StatusInternalError,
					Reason: fmt.Sprintf("channel writer sent an item over %d bytes", m.opts.MaxItemBytes)})
			case m.ctx.Err() != nil:
				ch.dst.Finish(errShutdown)
			default:
				ch.dst.Finish(&EndError{Code: websocket.StatusInternalError, Reason: "channel writer went away without closing"})
			}
			return
		}
		if err := ch.dst.Put(ctx, Item{Text: typ == websocket.MessageText, Data: data}); err != nil {
			code, reason := closeFor(err)
			c.Close(code, reason)
			return
		}
	}
}

// closeFor is the close a stream's end err gives the other socket.
func closeFor(err error) (websocket.StatusCode, string) {
	var ee *EndError
	switch {
	case errors.Is(err, io.EOF):
		return websocket.StatusNormalClosure, ""
	case errors.As(err, &ee):
		return ee.Code, ee.Reason
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errShutdown.Code, errShutdown.Reason
	}
	return websocket.StatusInternalError, err.Error()
}

// newIDPair is two random UUID (version 4) strings, from one read of the
// system's randomness.
func newIDPair() (string, string) {
	var b [32]byte
	rand.Read(b[:])
	return uuidString(b[:16]), uuidString(b[16:])
}

func uuidString(b []byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// Package cork lets a WebSocket connection's writer send several frames
// with one write syscall. The engine's worker sockets and the Go SDK's
// connection both write through it.
package cork

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn lets a connection's writer send several WebSocket frames with one
// write syscall. The WebSocket library flushes once per message; while
// the writer has corked the socket, those flushes land in a buffer, and
// uncork writes the buffer at once (as nats-server's flushOutbound hands
// queued frames to one writev). Writes made while it is not corked (pings,
// pongs, the close handshake) go straight through.
//
// A Conn made by NewConn over a TCP socket on Linux also reads and writes
// it with raw syscalls (see rawFD).
type Conn struct {
	net.Conn
	raw    *rawFD // nil: through net.Conn
	mu     sync.Mutex
	corked bool
	buf    *[]byte // from corkBufs while corked
	err    error   // a failed write while corked; returned by uncork
}

// corkFlushAt is how much a corked connection buffers before it writes
// anyway, so a large batch goes out in 64 KiB writes.
const corkFlushAt = 64 << 10

// corkBufs holds the buffers of corked connections; an idle connection
// keeps none.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, corkFlushAt+4<<10); return &b }}

// NewConn wraps c, with raw-syscall reads and writes where the platform
// and the connection allow them.
func NewConn(c net.Conn) *Conn {
	return &Conn{Conn: c, raw: rawOf(c)}
}

func (c *Conn) Read(p []byte) (int, error) {
	if c.raw != nil && !monitorDue() {
		return c.raw.read(p)
	}
	return c.Conn.Read(p)
}

// monitorEvery is how often a read takes the ordinary path although the
// raw one is there. An ordinary syscall wakes the runtime's monitor thread
// if it sleeps, and the monitor is what preempts a goroutine that runs for
// more than 10 ms and polls the network when no one else has: while the
// process is busy it should be awake, which raw syscalls alone would never
// ask of it. One wake per this interval keeps that true, against thousands
// a second with every read ordinary.
const monitorEvery = 10 * time.Millisecond

// lastOrdinary is when (UnixNano) a read last took the ordinary path, in
// any Conn of the process.
var lastOrdinary atomic.Int64

// monitorDue reports whether this read should take the ordinary path.
func monitorDue() bool {
	now := time.Now().UnixNano()
	last := lastOrdinary.Load()
	return now-last >= int64(monitorEvery) && lastOrdinary.CompareAndSwap(last, now)
}

// write writes p to the socket.
func (c *Conn) write(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.write(p)
	}
	return c.Conn.Write(p)
}

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.write(p)
	}
	if c.err != nil {
		return 0, c.err
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= corkFlushAt {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flushLocked writes the buffer; c.mu is held, which keeps other writers
// out until the buffered frames are on the socket (frames must not
// interleave).
func (c *Conn) flushLocked() error {
	if len(*c.buf) == 0 {
		return nil
	}
	_, err := c.write(*c.buf)
	*c.buf = (*c.buf)[:0]
	if err != nil {
		c.err = err
	}
	return err
}

// Cork starts buffering writes.
func (c *Conn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.buf = corkBufs.Get().(*[]byte)
	c.err = nil
	c.mu.Unlock()
}

// Uncork writes what was buffered and stops buffering. On a Conn that is
// not corked it does nothing.
func (c *Conn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return nil
	}
	err := c.err
	if err == nil {
		err = c.flushLocked()
	}
	c.corked = false
	*c.buf = (*c.buf)[:0]
	corkBufs.Put(c.buf)
	c.buf, c.err = nil, nil
	return err
}

// Listener hands out Conns.
type Listener struct{ net.Listener }

// Accept wraps the accepted connection in a Conn.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}

type key struct{}

// ConnContext is an http.Server's ConnContext: it lets a handler find the
// Conn under its request with FromContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, key{}, cc)
	}
	return ctx
}

// FromContext is the Conn under a request served with ConnContext, or nil.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(key{}).(*Conn)
	return c
}

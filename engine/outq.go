package engine

import (
	"errors"
	"sync"
)

var errQueueClosed = errors.New("engine: connection closed")

// outFrame is one queued frame. call is set for an invokefunction: when
// the call has been given up (its caller left, it timed out) before the
// writer reaches it, the writer skips the frame.
type outFrame struct {
	b    []byte
	call *pending
	buf  *[]byte // b's pooled buffer (framePool), returned once b is written; nil if b is not pooled
}

// framePool holds the buffers the two frames of every call are encoded
// into (invokefunction to the target, invocationresult to the caller);
// the writer returns each after writing it. Frames that are dropped
// instead are left to the garbage collector.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledFrame is the largest buffer kept for reuse: a large payload
// does not pin its buffer in the pool.
const maxPooledFrame = 16 << 10

// frameBuf takes a buffer from framePool: encode into (*buf)[:0], store
// the result back in *buf and queue it as outFrame{b: *buf, buf: buf}.
func frameBuf() *[]byte { return framePool.Get().(*[]byte) }

// release returns the frame's buffer to the pool once it is written.
func (f *outFrame) release() {
	if f.buf != nil && cap(*f.buf) <= maxPooledFrame {
		*f.buf = (*f.buf)[:0]
		framePool.Put(f.buf)
	}
	f.buf, f.b = nil, nil
}

// outq is one worker's outbound frame queue, bounded in bytes by a soft
// high-water mark. Producers (the router, from any goroutine) push without
// blocking; a producer that may wait (a worker's reader relaying a call, an
// in-process caller) first waits in Engine.awaitRoom until the queue is
// back under its low-water mark. Pushes themselves never fail on size, so
// answers and control frames are never refused; what bounds the queue is
// that call producers wait (see awaitRoom for the order of waits). The
// connection's single writer takes everything queued in one batch and
// reports the bytes written with wrote. It grows lazily, so an idle
// connection costs only the struct.
type outq struct {
	mu      sync.Mutex
	frames  []outFrame
	spare   []outFrame // the writer's previous batch, reused
	bytes   int        // queued plus taken by the writer and not yet written
	high    int        // producers that may wait do so at or above this
	low     int        // and resume at or below this
	closed  bool
	drained chan struct{} // closed when bytes falls to low or the queue closes; nil when nobody waits
	ready   chan struct{} // cap 1: "there is something to write"
}

func newOutq(high int) *outq {
	return &outq{high: high, low: high / 2, ready: make(chan struct{}, 1)}
}

// push queues a frame. It fails only when the queue is closed.
func (q *outq) push(f outFrame) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return errQueueClosed
	}
	q.frames = append(q.frames, f)
	q.bytes += len(f.b)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return nil
}

// full reports whether the queue is at or above its high-water mark.
func (q *outq) full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.closed && q.bytes >= q.high
}

// wait returns nil when the queue has room (below high water, or closed:
// the push that follows then fails), or else a channel that is closed once
// the queue has drained to its low-water mark or closed.
func (q *outq) wait() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.bytes < q.high {
		return nil
	}
	if q.drained == nil {
		q.drained = make(chan struct{})
	}
	return q.drained
}

// take returns everything queued so far (possibly nothing). The returned
// slice is valid until the next take.
func (q *outq) take() []outFrame {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.frames
	clear(q.spare)
	q.frames = q.spare[:0]
	q.spare = batch
	return batch
}

// wrote records that the writer is done with n bytes of its batch, waking
// waiting producers once the queue is down to its low-water mark.
func (q *outq) wrote(n int) {
	q.mu.Lock()
	q.bytes -= n
	if q.drained != nil && q.bytes <= q.low {
		close(q.drained)
		q.drained = nil
	}
	q.mu.Unlock()
}

// len returns the number of queued frames and bytes.
func (q *outq) len() (frames, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames), q.bytes
}

// close refuses further pushes, wakes waiting producers and returns the
// frames that were still queued (the writer's current batch is its own).
func (q *outq) close() []outFrame {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	left := q.frames
	q.frames, q.spare = nil, nil
	if q.drained != nil {
		close(q.drained)
		q.drained = nil
	}
	return left
}

package engine

import (
	"errors"
	"sync"
)

var (
	errQueueFull   = errors.New("engine: outbound queue full")
	errQueueClosed = errors.New("engine: connection closed")
)

// outq is one worker's bounded outbound frame queue. Producers (the router,
// from any goroutine) push without blocking; the connection's single writer
// takes everything queued in one batch. It grows lazily, so an idle
// connection costs only the struct.
type outq struct {
	mu     sync.Mutex
	frames [][]byte
	spare  [][]byte // the writer's previous batch, reused
	limit  int
	closed bool
	ready  chan struct{} // cap 1: "there is something to write"
}

func newOutq(limit int) *outq {
	return &outq{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues a frame. It fails when the queue is full or closed.
func (q *outq) push(frame []byte) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return errQueueClosed
	}
	if len(q.frames) >= q.limit {
		q.mu.Unlock()
		return errQueueFull
	}
	q.frames = append(q.frames, frame)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return nil
}

// take returns everything queued so far (possibly nothing). The returned
// slice is valid until the next take.
func (q *outq) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.frames
	clear(q.spare)
	q.frames = q.spare[:0]
	q.spare = batch
	return batch
}

// close refuses further pushes.
func (q *outq) close() {
	q.mu.Lock()
	q.closed = true
	q.frames = nil
	q.spare = nil
	q.mu.Unlock()
}

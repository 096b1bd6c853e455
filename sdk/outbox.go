package sdk

import (
	"context"
	"sync"
)

// kind says what happens to a queued frame when the connection drops.
type kind uint8

const (
	// kindRegistration frames (register*/unregister*) belong to one
	// connection: while disconnected they are dropped, because every new
	// connection replays the worker's registration tables. They do not count
	// against the limit: the tables bound them.
	kindRegistration kind = iota
	// kindResult frames (invocation results, trigger acks) belong to one
	// connection too: a new connection has no use for them.
	kindResult
	// kindCall frames are outgoing invocations. They wait for the next
	// connection unless their caller has given up.
	kindCall
	// kindTelemetry frames are binary OTLP frames (the worker's spans). They
	// belong to one connection and have a limit of their own
	// (telemetryQueueLimit): past it, and while disconnected, they are
	// dropped and their spans counted.
	kindTelemetry
)

// telemetryQueueLimit bounds the telemetry frames waiting for the writer
// (each holds at most one export batch of spans).
const telemetryQueueLimit = 64

type entry struct {
	frame        []byte
	kind         kind
	invocationID string // kindCall with a result wanted
	spans        int    // kindTelemetry: spans in the frame
}

// outbox is the worker's bounded outbound queue. Any goroutine pushes
// without blocking; the current connection's writer takes batches.
type outbox struct {
	mu        sync.Mutex
	entries   []entry
	limit     int
	telemetry int // kindTelemetry entries in entries
	dropped   uint64
	connected bool
	closed    bool
	ready     chan struct{} // cap 1: "there is something to write"
	// room is closed when the writer takes the queue, or the queue closes
	// or disconnects; nil while nobody waits for room (see pushWait).
	room chan struct{}
}

func newOutbox(limit int) *outbox {
	return &outbox{limit: limit, ready: make(chan struct{}, 1)}
}

// signal wakes the writer; it never blocks (callers may hold Worker.mu).
func (q *outbox) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// push queues e. While disconnected, only calls are kept; other frames are
// silently dropped (telemetry frames are counted, see droppedSpans). It
// fails with ErrClosed after close and ErrQueueFull at the limit.
func (q *outbox) push(e entry) error {
	q.mu.Lock()
	if e.kind == kindTelemetry {
		err := q.pushTelemetry(e)
		q.mu.Unlock()
		if err == nil {
			q.signal()
		}
		return err
	}
	switch {
	case q.closed:
		q.mu.Unlock()
		return ErrClosed
	case !q.connected && e.kind != kindCall:
		q.mu.Unlock()
		return nil
	case e.kind != kindRegistration && len(q.entries)-q.telemetry >= q.limit:
		q.mu.Unlock()
		return ErrQueueFull
	}
	q.entries = append(q.entries, e)
	q.mu.Unlock()
	q.signal()
	return nil
}

// pushWait queues a result frame (kindResult), waiting while the queue is
// at its limit: a result is never dropped for lack of room, since its
// caller would wait out its timeout for it. The wait ends when the writer
// takes the queue, with ctx (the error is ctx's), or when the queue closes
// (ErrClosed); while disconnected the frame is dropped, as push does (the
// engine has failed the call already).
func (q *outbox) pushWait(ctx context.Context, e entry) error {
	for {
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
			return ErrClosed
		case !q.connected:
			q.mu.Unlock()
			return nil
		case len(q.entries)-q.telemetry < q.limit:
			q.entries = append(q.entries, e)
			q.mu.Unlock()
			q.signal()
			return nil
		}
		if q.room == nil {
			q.room = make(chan struct{})
		}
		room := q.room
		q.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// wakeLocked releases producers waiting in pushWait; q.mu is held.
func (q *outbox) wakeLocked() {
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
}

// pushTelemetry queues a telemetry frame, or drops and counts it. The
// caller holds q.mu.
func (q *outbox) pushTelemetry(e entry) error {
	var err error
	switch {
	case q.closed:
		err = ErrClosed
	case !q.connected:
		err = errDisconnected
	case q.telemetry >= telemetryQueueLimit:
		err = ErrQueueFull
	default:
		q.entries = append(q.entries, e)
		q.telemetry++
		return nil
	}
	q.dropped += uint64(e.spans)
	return err
}

// droppedSpans is how many spans of telemetry frames were dropped.
func (q *outbox) droppedSpans() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// dropSpans counts spans dropped before they reached the queue.
func (q *outbox) dropSpans(n int) {
	q.mu.Lock()
	q.dropped += uint64(n)
	q.mu.Unlock()
}

// take removes and returns everything queued.
func (q *outbox) take() []entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.entries
	q.entries = nil
	q.telemetry = 0
	q.wakeLocked()
	return batch
}

// requeue puts entries the writer could not send back at the front.
func (q *outbox) requeue(es []entry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range es {
		if e.kind == kindTelemetry {
			q.telemetry++
		}
	}
	q.entries = append(append([]entry(nil), es...), q.entries...)
}

// connect starts a connection: the queue becomes head, then the calls
// still waiting for which keep reports true, then tail. Other frames left
// from the previous connection are dropped.
func (q *outbox) connect(head, tail []entry, keep func(entry) bool) {
	q.mu.Lock()
	es := append([]entry(nil), head...)
	for _, e := range q.entries {
		switch {
		case e.kind == kindCall && keep(e):
			es = append(es, e)
		case e.kind == kindTelemetry:
			q.dropped += uint64(e.spans)
		}
	}
	q.entries = append(es, tail...)
	q.telemetry = 0
	q.connected = true
	q.mu.Unlock()
	q.signal()
}

// disconnect makes non-call frames drop until the next connect.
func (q *outbox) disconnect() {
	q.mu.Lock()
	q.connected = false
	q.wakeLocked()
	q.mu.Unlock()
}

// close refuses further pushes; what is queued can still be taken.
func (q *outbox) close() {
	q.mu.Lock()
	q.closed = true
	q.wakeLocked()
	q.mu.Unlock()
}

package sdk

import "sync"

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
)

type entry struct {
	frame        []byte
	kind         kind
	invocationID string // kindCall with a result wanted
}

// outbox is the worker's bounded outbound queue. Any goroutine pushes
// without blocking; the current connection's writer takes batches.
type outbox struct {
	mu        sync.Mutex
	entries   []entry
	limit     int
	connected bool
	closed    bool
	ready     chan struct{} // cap 1: "there is something to write"
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
// silently dropped. It fails with ErrClosed after close and ErrQueueFull at
// the limit.
func (q *outbox) push(e entry) error {
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return ErrClosed
	case !q.connected && e.kind != kindCall:
		q.mu.Unlock()
		return nil
	case e.kind != kindRegistration && len(q.entries) >= q.limit:
		q.mu.Unlock()
		return ErrQueueFull
	}
	q.entries = append(q.entries, e)
	q.mu.Unlock()
	q.signal()
	return nil
}

// take removes and returns everything queued.
func (q *outbox) take() []entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.entries
	q.entries = nil
	return batch
}

// requeue puts entries the writer could not send back at the front.
func (q *outbox) requeue(es []entry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.entries = append(append([]entry(nil), es...), q.entries...)
}

// connect starts a connection: the queue becomes head, then the calls
// still waiting for which keep reports true, then tail. Other frames left
// from the previous connection are dropped.
func (q *outbox) connect(head, tail []entry, keep func(entry) bool) {
	q.mu.Lock()
	es := append([]entry(nil), head...)
	for _, e := range q.entries {
		if e.kind == kindCall && keep(e) {
			es = append(es, e)
		}
	}
	q.entries = append(es, tail...)
	q.connected = true
	q.mu.Unlock()
	q.signal()
}

// disconnect makes non-call frames drop until the next connect.
func (q *outbox) disconnect() {
	q.mu.Lock()
	q.connected = false
	q.mu.Unlock()
}

// close refuses further pushes; what is queued can still be taken.
func (q *outbox) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

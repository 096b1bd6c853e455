package channel

import (
	"context"
	"io"
	"sync"
)

// queue is the buffer of a channel between two sockets: one writer puts,
// one reader takes. It holds at most maxItems items and, beyond the first,
// at most maxBytes bytes; a full queue makes Put wait.
type queue struct {
	maxItems, maxBytes int

	mu         sync.Mutex
	items      []Item // items[head:] wait
	head       int
	bytes      int
	finished   bool  // the writer ended
	finishErr  error // nil: ended normally
	readerGone error // non-nil: nobody will read

	gone     chan struct{} // closed by Stop
	readable chan struct{} // cap 1: an item or the end arrived
	writable chan struct{} // cap 1: room was made or the reader left
}

var (
	_ Source = (*queue)(nil)
	_ Sink   = (*queue)(nil)
)

func newQueue(maxItems, maxBytes int) *queue {
	return &queue{maxItems: maxItems, maxBytes: maxBytes, gone: make(chan struct{}),
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (q *queue) Open() {}

// Put waits for room, then appends it.
func (q *queue) Put(ctx context.Context, it Item) error {
	for {
		q.mu.Lock()
		if q.readerGone != nil {
			err := q.readerGone
			q.mu.Unlock()
			return err
		}
		if n := len(q.items) - q.head; n < q.maxItems && (n == 0 || q.bytes+len(it.Data) <= q.maxBytes) {
			if q.head > 0 && q.head >= len(q.items)/2 {
				k := copy(q.items, q.items[q.head:])
				clear(q.items[k:])
				q.items, q.head = q.items[:k], 0
			}
			q.items = append(q.items, it)
			q.bytes += len(it.Data)
			q.mu.Unlock()
			signal(q.readable)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.writable:
		}
	}
}

// Finish ends the stream after the items already put.
func (q *queue) Finish(err error) {
	q.mu.Lock()
	if !q.finished {
		q.finished, q.finishErr = true, err
	}
	q.mu.Unlock()
	signal(q.readable)
}

// Next waits for the next item or the end.
func (q *queue) Next(ctx context.Context) (Item, error) {
	for {
		q.mu.Lock()
		if q.head < len(q.items) {
			it := q.items[q.head]
			q.items[q.head] = Item{}
			q.head++
			if q.head == len(q.items) {
				q.items, q.head = q.items[:0], 0
			}
			q.bytes -= len(it.Data)
			q.mu.Unlock()
			signal(q.writable)
			return it, nil
		}
		if q.finished {
			err := q.finishErr
			q.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return Item{}, err
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return Item{}, ctx.Err()
		case <-q.readable:
		}
	}
}

// Stop says nobody will read: waiting items are dropped (there is no one
// to give them to) and the writer's next Put fails.
func (q *queue) Stop(err error) {
	if err == nil {
		err = ErrReaderGone
	}
	q.mu.Lock()
	if q.readerGone == nil {
		q.readerGone = err
		close(q.gone)
	}
	clear(q.items)
	q.items, q.head, q.bytes = nil, 0, 0
	q.mu.Unlock()
	signal(q.writable)
}

// Gone is closed by Stop.
func (q *queue) Gone() <-chan struct{} { return q.gone }

// Err is why nobody reads (nil while someone may).
func (q *queue) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.readerGone
}

// buffered reports the items and bytes waiting (for tests).
func (q *queue) buffered() (items, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head, q.bytes
}

// BytesSource is a Source of b, in binary items of at most ChunkSize
// bytes, then the end. It serves a body the engine has already read.
type BytesSource struct {
	b []byte
}

var _ Source = (*BytesSource)(nil)

// empty is the source of an empty body: it has no state to change.
var empty = &BytesSource{}

// NewBytesSource returns a source of b (not copied).
func NewBytesSource(b []byte) *BytesSource {
	if len(b) == 0 {
		return empty
	}
	return &BytesSource{b: b}
}

// Next returns the next chunk, then io.EOF.
func (s *BytesSource) Next(context.Context) (Item, error) {
	if len(s.b) == 0 {
		return Item{}, io.EOF
	}
	n := min(len(s.b), ChunkSize)
	it := Item{Data: s.b[:n]}
	s.b = s.b[n:]
	return it, nil
}

// Stop does nothing: the bytes are the caller's.
func (s *BytesSource) Stop(error) {}

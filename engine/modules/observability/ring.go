package observability

import "sync"

// ring is a bounded, concurrency-safe buffer that keeps the newest cap
// items: adding to a full ring evicts the oldest.
type ring[T any] struct {
	mu      sync.RWMutex
	buf     []T
	next    int // where the next item goes
	n       int // items held
	evicted uint64
	onAdd   func(T) // called under mu; must not block or take a lock but its own
	onEvict func(T) // likewise
}

func newRing[T any](capacity int) *ring[T] {
	return &ring[T]{buf: make([]T, max(capacity, 1))}
}

// add stores v, evicting the oldest item when full.
func (r *ring[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == len(r.buf) {
		if r.onEvict != nil {
			r.onEvict(r.buf[r.next])
		}
		r.evicted++
	} else {
		r.n++
	}
	r.buf[r.next] = v
	if r.onAdd != nil {
		r.onAdd(v)
	}
	r.next = (r.next + 1) % len(r.buf)
}

// newest calls fn for each item from the newest to the oldest until fn
// returns false. fn runs under the read lock: it must not call back into
// the ring.
func (r *ring[T]) newest(fn func(T) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for i := 1; i <= r.n; i++ {
		if !fn(r.buf[(r.next-i+len(r.buf))%len(r.buf)]) {
			return
		}
	}
}

// clear drops every item and returns how many there were.
func (r *ring[T]) clear() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.n
	if r.onEvict != nil {
		for i := 1; i <= r.n; i++ {
			r.onEvict(r.buf[(r.next-i+len(r.buf))%len(r.buf)])
		}
	}
	clear(r.buf)
	r.next, r.n = 0, 0
	return n
}

// len is how many items the ring holds.
func (r *ring[T]) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

package waitgroup

import (
	"context"
	"sync"
)

// Group owns a part's goroutines: Go starts one unless Close has been
// called, and Wait waits for all of them within a deadline. It is the one
// way the engine and its modules start a goroutine they must stop (as
// nats-server's startGoRoutine). The zero value is ready to use.
type Group struct {
	mu     sync.RWMutex // a leaf: nothing else is locked under it
	closed bool
	wg     sync.WaitGroup
}

// Go runs fn in a goroutine the group waits for. It returns false, and
// does not run fn, once Close has been called.
func (g *Group) Go(fn func()) bool {
	if !g.Enter() {
		return false
	}
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// Enter counts the calling goroutine (one the group did not start, such as
// an HTTP handler) as one Wait waits for; pair it with Leave. It returns
// false once Close has been called.
func (g *Group) Enter() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

// Leave ends what a successful Enter began.
func (g *Group) Leave() { g.wg.Done() }

// Close makes Go and Enter refuse from now on. It reports whether this
// call closed the group (false when it was closed already).
func (g *Group) Close() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := g.closed
	g.closed = true
	return !was
}

// Closed reports whether Close has been called.
func (g *Group) Closed() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.closed
}

// Wait waits until every goroutine of the group (and of more, waited for
// together) has returned, or until ctx is done, and then returns
// ctx.Err().
func (g *Group) Wait(ctx context.Context, more ...*sync.WaitGroup) error {
	select {
	case <-Done(append([]*sync.WaitGroup{&g.wg}, more...)...):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

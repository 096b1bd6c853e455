package module

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/internal/waitgroup"
	"github.com/redis/go-redis/v9"
)

// Lifecycle is the part of a module's life every module shares: the
// context of its loops, the goroutines it starts (Go refuses once Stop has
// begun), and the functions it registered. Stop ends all of it in one
// order. A module holds one and calls Begin at the top of Start; the zero
// value is ready.
type Lifecycle struct {
	g      waitgroup.Group
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex // guards eng and fnIDs; a leaf
	eng   *engine.Engine
	fnIDs []string
}

// Begin returns the context of the module's loops: it carries ctx's values
// but not its cancellation, and ends when Stop begins.
func (l *Lifecycle) Begin(ctx context.Context, eng *engine.Engine) context.Context {
	l.mu.Lock()
	l.eng = eng
	l.mu.Unlock()
	l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return l.ctx
}

// Context is the context Begin returned (nil before Begin).
func (l *Lifecycle) Context() context.Context { return l.ctx }

// RegisterFunction registers f as worker's (the module's name on the
// engine) and remembers it, so Stop unregisters it.
func (l *Lifecycle) RegisterFunction(worker string, f engine.Function) error {
	l.mu.Lock()
	eng := l.eng
	l.mu.Unlock()
	if err := eng.RegisterFunction(worker, f); err != nil {
		return err
	}
	l.mu.Lock()
	l.fnIDs = append(l.fnIDs, f.ID)
	l.mu.Unlock()
	return nil
}

// Go runs fn in a goroutine Stop waits for; false, without running fn,
// once Stop has begun.
func (l *Lifecycle) Go(fn func()) bool { return l.g.Go(fn) }

// Enter counts the calling goroutine (one the module did not start, such
// as an HTTP handler) as one Stop waits for; pair it with Leave. False once
// Stop has begun.
func (l *Lifecycle) Enter() bool { return l.g.Enter() }

// Leave ends what a successful Enter began.
func (l *Lifecycle) Leave() { l.g.Leave() }

// Wait waits for the module's goroutines until ctx is done, for a module
// whose Stop must do more once they have returned or once time is up.
func (l *Lifecycle) Wait(ctx context.Context) error { return l.g.Wait(ctx) }

// Stopping reports whether Stop has begun.
func (l *Lifecycle) Stopping() bool { return l.g.Closed() }

// Stop ends the module's shared part, in order: no new goroutines, its
// functions unregistered (no new calls reach it), its loop context
// cancelled, then each of closers run (a subscription, a server; only by
// the first call), and last it waits for its goroutines until ctx is done.
// It is safe after a failed or partial Start, before Begin, and more than
// once.
func (l *Lifecycle) Stop(ctx context.Context, closers ...func() error) error {
	if !l.g.Close() {
		closers = nil
	}
	l.mu.Lock()
	eng, ids := l.eng, l.fnIDs
	l.fnIDs = nil
	l.mu.Unlock()
	for _, id := range ids {
		eng.UnregisterFunction(id)
	}
	if l.cancel != nil {
		l.cancel()
	}
	var errs []error
	for _, c := range closers {
		errs = append(errs, c())
	}
	if err := l.g.Wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("waiting for its goroutines: %w", err))
	}
	return errors.Join(errs...)
}

// CloseSubscription is a Stop closer for a Redis subscription (nil for
// none); one closed already is not an error.
func CloseSubscription(ps *redis.PubSub) func() error {
	return func() error {
		if ps == nil {
			return nil
		}
		if err := ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			return fmt.Errorf("close subscription: %w", err)
		}
		return nil
	}
}

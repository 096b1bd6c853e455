package engine

import (
	"time"

	"github.com/coder/websocket"
)

// Test hooks into unexported parts, for the engine_test package.

// WorkerHasFeature reports whether the connected worker id declared token.
func (e *Engine) WorkerHasFeature(id, token string) bool {
	e.mu.RLock()
	c := e.conns[id]
	e.mu.RUnlock()
	return c != nil && c.hasFeature(token)
}

// OnDeclaredForTest runs fn with the worker id, whether it is the first
// declaration, and the function ids the connection held at that moment.
func (e *Engine) OnDeclaredForTest(fn func(workerID string, first bool, fns []string)) {
	e.onDeclared(func(c *conn, first bool) {
		e.mu.RLock()
		var ids []string
		for key := range c.fnIDs {
			ids = append(ids, bareID(key))
		}
		e.mu.RUnlock()
		fn(c.id, first, ids)
	})
}

// SetFragmentThresholdForTest makes the engine fragment messages over n
// bytes until the test ends (the race detector makes 16 MiB slow).
func SetFragmentThresholdForTest(t interface{ Cleanup(func()) }, n int) {
	old := fragmentThreshold
	fragmentThreshold = n
	t.Cleanup(func() { fragmentThreshold = old })
}

// SlowConsumerForTest returns the stall check's verdict on the worker id's
// connection as it is now: calling it runs slowConsumer on that
// connection, also after it is closing or gone.
func (e *Engine) SlowConsumerForTest(id string) func() {
	e.mu.RLock()
	c := e.conns[id]
	e.mu.RUnlock()
	return func() {
		if c != nil {
			c.slowConsumer(e.opts.SlowConsumerTimeout)
		}
	}
}

// CloseWorkerForTest closes the worker id's connection with reason, as
// the engine refuses a worker (flushing first, then waiting for the
// peer's close frame).
func (e *Engine) CloseWorkerForTest(id, reason string) {
	e.mu.RLock()
	c := e.conns[id]
	e.mu.RUnlock()
	if c != nil {
		c.close(websocket.StatusPolicyViolation, reason)
	}
}

// SetOwnerAckTimeoutForTest shortens the hosts' ack timeout (OWNER_TIMEOUT)
// for engines created until the test ends.
func SetOwnerAckTimeoutForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := ownerAckTimeout.Swap(int64(d))
	t.Cleanup(func() { ownerAckTimeout.Store(old) })
}

// CorkedWorkersForTest counts the connected workers whose socket the
// writer can cork, and all connected workers.
func (e *Engine) CorkedWorkersForTest() (corked, total int) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, c := range e.conns {
		total++
		if c.cork != nil {
			corked++
		}
	}
	return corked, total
}

// SetDeclareGraceForTest sets how long a worker that has not declared
// itself holds new observers of its functions, until the test ends.
func SetDeclareGraceForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := declareGrace.Swap(int64(d))
	t.Cleanup(func() { declareGrace.Store(old) })
}

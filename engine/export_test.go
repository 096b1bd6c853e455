package engine

import "time"

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

// SetOwnerAckTimeoutForTest shortens the hosts' ack timeout (OWNER_TIMEOUT)
// for engines created until the test ends.
func SetOwnerAckTimeoutForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := ownerAckTimeout.Swap(int64(d))
	t.Cleanup(func() { ownerAckTimeout.Store(old) })
}

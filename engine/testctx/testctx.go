// Package testctx is the one way tests get a context: the test's own,
// with a deadline, so a hung call fails the test with the deadline's error
// instead of hanging until go test's -timeout. It imports nothing of iii,
// so every package's internal tests can use it (engine/enginetest, which
// imports most of the engine, wraps it for engine tests).
package testctx

import (
	"context"
	"testing"
	"time"
)

// Timeout is New's deadline.
const Timeout = 30 * time.Second

// New is the test's context, cancelled after Timeout or when the test
// ends.
func New(t testing.TB) context.Context {
	t.Helper()
	return Within(t, Timeout)
}

// Within is New with deadline d.
func Within(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

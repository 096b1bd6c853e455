package sdk

import (
	"math/rand/v2"
	"time"
)

// Reconnect backoff, as the Node and Python SDKs do it.
const (
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 30 * time.Second
	backoffMultiplier     = 2
	backoffJitter         = 0.3
)

// backoffDelay is the wait before reconnect attempt number attempt
// (0-based): initial×2^attempt capped at max, then moved by up to ±30 %
// according to r, a uniform number in [0,1).
func backoffDelay(initial, max time.Duration, attempt int, r float64) time.Duration {
	d := float64(initial)
	for i := 0; i < attempt && d < float64(max); i++ {
		d *= backoffMultiplier
	}
	if d > float64(max) {
		d = float64(max)
	}
	d += d * backoffJitter * (2*r - 1)
	return time.Duration(d)
}

// backoff counts consecutive failed reconnects.
type backoff struct {
	initial, max time.Duration
	attempt      int
}

func (b *backoff) next() time.Duration {
	d := backoffDelay(b.initial, b.max, b.attempt, rand.Float64())
	b.attempt++
	return d
}

func (b *backoff) reset() { b.attempt = 0 }

package engine

import (
	"sync/atomic"
	"time"
)

// Reasons a frame or call is dropped. Each drop is counted under its
// reason (Stats.Dropped, and iii_engine_dropped_total{reason} through the
// observability module) and logged, rate-limited.
const (
	// DropUndecodable: a frame from a worker that is not a valid message.
	DropUndecodable = "undecodable_frame"
	// DropLateResult: a result for an invocation that had already ended
	// (timed out, its caller gave up) or was never sent.
	DropLateResult = "late_result"
	// DropCallerGone: a result for a caller whose connection has closed,
	// or a queued call skipped because its caller gave up before the
	// engine wrote it to the target.
	DropCallerGone = "caller_gone"
	// DropConnClosed: frames still queued for a worker when its socket
	// closed; the calls among them end with invocation_stopped.
	DropConnClosed = "connection_closed"
	// DropTelemetry: a telemetry frame with no sink or no valid prefix.
	DropTelemetry = "telemetry"
	// DropTooLarge: a message from a worker over the read limit (its call
	// or result is answered with payload_too_large), or one the engine
	// would have sent over the limit its target reads.
	DropTooLarge = "message_too_large"
	// DropObserve: an observer activation not made (loop guard, a full
	// activation queue) or a host's report for an unknown observer.
	DropObserve = "observe"
)

var dropReasons = [...]string{DropUndecodable, DropLateResult, DropCallerGone, DropConnClosed, DropTelemetry, DropTooLarge, DropObserve}

// dropCounters counts drops by reason.
type dropCounters struct {
	n   [len(dropReasons)]atomic.Uint64
	log rateLimiter
}

func dropIndex(reason string) int {
	for i, r := range dropReasons {
		if r == reason {
			return i
		}
	}
	panic("engine: unknown drop reason " + reason)
}

// drop counts n frames or calls dropped for reason and logs it,
// rate-limited; attrs say which.
func (e *Engine) drop(reason string, n int, attrs ...any) {
	if n <= 0 {
		return
	}
	e.drops.n[dropIndex(reason)].Add(uint64(n))
	if s, ok := e.drops.log.allow(time.Now()); ok {
		e.log.Warn("engine dropped frames", append([]any{"reason", reason, "count", n, "suppressed_log_lines", s}, attrs...)...)
	}
}

func (d *dropCounters) snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(dropReasons))
	for i, r := range dropReasons {
		out[r] = d.n[i].Load()
	}
	return out
}

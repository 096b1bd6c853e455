package sdk

import (
	"errors"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	const s = time.Second
	tests := []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{0, 0.5, 1 * s},
		{1, 0.5, 2 * s},
		{2, 0.5, 4 * s},
		{4, 0.5, 16 * s},
		{5, 0.5, 30 * s}, // 32 s capped
		{1000, 0.5, 30 * s},
		{0, 0, 700 * time.Millisecond},         // -30 %
		{5, 0, 21 * s},                         // -30 % of the cap
		{0, 0.999999, 1300 * time.Millisecond}, // just under +30 %
	}
	for _, tt := range tests {
		got := backoffDelay(s, 30*s, tt.attempt, tt.r)
		if diff := got - tt.want; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("backoffDelay(1s, 30s, attempt %d, r %v) = %v, want %v", tt.attempt, tt.r, got, tt.want)
		}
	}
}

func TestBackoffSequence(t *testing.T) {
	b := backoff{initial: time.Second, max: 30 * time.Second}
	for i, base := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		base *= time.Second
		d := b.next()
		lo, hi := time.Duration(float64(base)*0.7), time.Duration(float64(base)*1.3)
		if d < lo || d > hi {
			t.Errorf("attempt %d: delay %v, want within [%v, %v]", i, d, lo, hi)
		}
	}
	b.reset()
	if d := b.next(); d > 1300*time.Millisecond {
		t.Errorf("after reset: delay %v, want about 1s", d)
	}
}

func frames(es []entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.frame)
	}
	return out
}

func TestOutbox(t *testing.T) {
	q := newOutbox(2)

	// Disconnected: only calls are kept, up to the limit.
	if err := q.push(entry{frame: []byte("reg"), kind: kindRegistration}); err != nil {
		t.Fatalf("push registration while disconnected: %v", err)
	}
	if err := q.push(entry{frame: []byte("res"), kind: kindResult}); err != nil {
		t.Fatalf("push result while disconnected: %v", err)
	}
	for _, f := range []string{"call1", "call2"} {
		if err := q.push(entry{frame: []byte(f), kind: kindCall, invocationID: f}); err != nil {
			t.Fatalf("push %s: %v", f, err)
		}
	}
	if err := q.push(entry{frame: []byte("call3"), kind: kindCall}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("push past the limit: got %v, want ErrQueueFull", err)
	}

	// connect: head, kept calls, tail.
	q.connect(
		[]entry{{frame: []byte("reattach")}, {frame: []byte("fn")}},
		[]entry{{frame: []byte("meta")}},
		func(e entry) bool { return e.invocationID != "call1" },
	)
	got := frames(q.take())
	want := []string{"reattach", "fn", "call2", "meta"}
	if len(got) != len(want) {
		t.Fatalf("after connect: got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("after connect: got %q, want %q", got, want)
		}
	}

	// Connected: registrations ignore the limit, results do not.
	for range 3 {
		if err := q.push(entry{frame: []byte("reg"), kind: kindRegistration}); err != nil {
			t.Fatalf("push registration: %v", err)
		}
	}
	if err := q.push(entry{frame: []byte("res"), kind: kindResult}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("push result past the limit: got %v, want ErrQueueFull", err)
	}
	batch := q.take()
	q.requeue(batch[2:])
	if err := q.push(entry{frame: []byte("last"), kind: kindResult}); err != nil {
		t.Fatalf("push after take: %v", err)
	}
	if got := len(q.take()); got != 2 {
		t.Fatalf("requeued + pushed: got %d entries, want 2", got)
	}

	// A new connection drops the old session's frames.
	q.disconnect()
	_ = q.push(entry{frame: []byte("call"), kind: kindCall})
	q.requeue([]entry{{frame: []byte("stale-result"), kind: kindResult}})
	q.connect(nil, nil, func(entry) bool { return true })
	if got := frames(q.take()); len(got) != 1 || got[0] != "call" {
		t.Fatalf("after reconnect: got %q, want [call]", got)
	}

	q.close()
	if err := q.push(entry{kind: kindCall}); !errors.Is(err, ErrClosed) {
		t.Fatalf("push after close: got %v, want ErrClosed", err)
	}
}

func TestWorkerName(t *testing.T) {
	t.Setenv("III_WORKER_NAME", "")
	if got := workerName("explicit"); got != "explicit" {
		t.Errorf("workerName(explicit) = %q", got)
	}
	if got := workerName(""); got == "" || got[len(got)-1] == ':' {
		t.Errorf("workerName(\"\") = %q, want hostname:pid", got)
	}
	t.Setenv("III_WORKER_NAME", "managed")
	if got := workerName(""); got != "managed" {
		t.Errorf("workerName(\"\") with III_WORKER_NAME=managed = %q, want managed", got)
	}
	if got := workerName("explicit"); got != "explicit" {
		t.Errorf("workerName(explicit) with III_WORKER_NAME set = %q, want explicit", got)
	}
}

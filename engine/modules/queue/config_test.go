package queue

import (
	"strings"
	"testing"
	"time"
)

func ptr(i int) *int { return &i }

func TestResolveConfig(t *testing.T) {
	tests := []struct {
		name    string
		queues  map[string]QueueConfig
		iii     map[string]QueueConfig
		wantErr string // substring; "" means valid
	}{
		{name: "empty gets default"},
		{name: "both keys", queues: map[string]QueueConfig{"a": {}}, iii: map[string]QueueConfig{"b": {}}},
		{name: "fifo via type", iii: map[string]QueueConfig{"o": {Type: "fifo", MessageGroupField: "user"}}},
		{name: "fifo via bool", queues: map[string]QueueConfig{"o": {FIFO: true, MessageGroupField: "user"}}},
		{name: "duplicate", queues: map[string]QueueConfig{"a": {}}, iii: map[string]QueueConfig{"a": {}},
			wantErr: `queue "a" is configured under both`},
		{name: "fifo needs field", queues: map[string]QueueConfig{"o": {FIFO: true}}, wantErr: "queues.o.message_group_field: required"},
		{name: "field without fifo", queues: map[string]QueueConfig{"o": {MessageGroupField: "x"}}, wantErr: "only meaningful for a fifo"},
		{name: "bad type", queues: map[string]QueueConfig{"o": {Type: "lifo"}}, wantErr: `type: "lifo" is not standard or fifo`},
		{name: "type contradicts", queues: map[string]QueueConfig{"o": {Type: "standard", FIFO: true}}, wantErr: "contradicts"},
		{name: "concurrency", queues: map[string]QueueConfig{"o": {Concurrency: 5000}}, wantErr: "concurrency: 5000 is out of range"},
		{name: "negative retries", queues: map[string]QueueConfig{"o": {MaxRetries: ptr(-1)}}, wantErr: "max_retries: -1"},
		{name: "negative backoff", queues: map[string]QueueConfig{"o": {BackoffMS: ptr(-5)}}, wantErr: "backoff_ms: -5"},
		{name: "claim below timeout", queues: map[string]QueueConfig{"o": {TimeoutMS: 1000, ClaimIdleMS: 500}}, wantErr: "claim_idle_ms: 500 is below timeout_ms 1000"},
		{name: "brace in name", queues: map[string]QueueConfig{"a{b}": {}}, wantErr: "contains a brace"},
		{name: "space in name", queues: map[string]QueueConfig{"a b": {}}, wantErr: "whitespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveAll(tc.queues, tc.iii)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("resolveAll(%v, %v): %v, want no error", tc.queues, tc.iii, err)
				}
				if _, ok := got[DefaultQueue]; !ok {
					t.Errorf("resolveAll(%v, %v) has no default queue: %v", tc.queues, tc.iii, got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("resolveAll(%v, %v) error = %v, want one containing %q", tc.queues, tc.iii, err, tc.wantErr)
			}
		})
	}
}

// The default queue takes a poison message to the dead-letter queue within
// seconds: 1 + 2 s of backoff between its three attempts (max_retries 3
// counts attempts in all, as iii's does).
func TestDefaultQueueDeadLettersWithinSeconds(t *testing.T) {
	all, err := resolveAll(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := all[DefaultQueue]
	var total time.Duration
	for attempt := 1; attempt < s.MaxRetries; attempt++ {
		total += s.backoff(attempt)
	}
	if s.MaxRetries != 3 || total != 3*time.Second {
		t.Errorf("default queue: %d attempts with %v of backoff in total, want 3 attempts and 3s", s.MaxRetries, total)
	}
	if s.Concurrency != 10 || s.Timeout != 30*time.Second || s.ClaimIdle != 40*time.Second {
		t.Errorf("default queue settings %+v, want concurrency 10, timeout 30s, claim idle 40s", s)
	}
}

func TestBackoffDoublesAndCaps(t *testing.T) {
	s := settings{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {60, time.Second}} {
		if got := s.backoff(tc.attempt); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.attempt, got, tc.want)
		}
	}
}

func TestGroupOf(t *testing.T) {
	for _, tc := range []struct {
		data, want string
		ok         bool
	}{
		{`{"user":"ann"}`, "ann", true},
		{`{"user":42}`, "42", true},
		{`{"user":{"a": 1}}`, `{"a":1}`, true},
		{`{"user":null}`, "", false},
		{`{"other":1}`, "", false},
		{`[1]`, "", false},
		{`null`, "", false},
	} {
		got, ok := groupOf([]byte(tc.data), "user")
		if got != tc.want || ok != tc.ok {
			t.Errorf("groupOf(%s) = %q, %v; want %q, %v", tc.data, got, ok, tc.want, tc.ok)
		}
	}
}

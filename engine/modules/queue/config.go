package queue

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Defaults of a queue's settings; `default` and every queue that config.yaml
// does not list start from these.
const (
	DefaultConcurrency    = 10
	DefaultMaxRetries     = 3
	DefaultBackoffMS      = 1000
	DefaultMaxBackoffMS   = 3_600_000
	DefaultTimeoutMS      = 30_000
	DefaultPollIntervalMS = 100
	// DefaultClaimMarginMS is added to timeout_ms to get the default
	// claim_idle_ms: how long a message may stay claimed but unacknowledged
	// before another consumer takes it over.
	DefaultClaimMarginMS = 10_000
	// DefaultMaxQueues bounds how many queues one engine consumes (configured
	// plus those created by enqueueing to a new name).
	DefaultMaxQueues = 256
	// DefaultQueue always exists.
	DefaultQueue = "default"
)

// Limits on configured values.
const (
	maxConcurrency = 1024
	maxRetries     = 1000
	maxNameLen     = 200
)

// QueueConfig is one queue's settings in config.yaml (`queues:` or iii's
// `queue_configs:`). Unset fields take the defaults above.
type QueueConfig struct {
	// Concurrency is how many messages this engine handles at once
	// (standard queues), or the number of ordered partitions shared by all
	// engines (FIFO queues).
	Concurrency int `yaml:"concurrency"`
	// MaxRetries is how many delivery attempts a message gets in all (the
	// first one included) before it goes to the dead-letter queue, as in
	// iii; 0 behaves as 1. (A durable subscriber's queue_config.max_retries
	// counts retries after the first attempt instead, as iii's does.)
	MaxRetries *int `yaml:"max_retries"`
	// BackoffMS is the delay before the first retry; it doubles per retry.
	BackoffMS *int `yaml:"backoff_ms"`
	// MaxBackoffMS caps the doubling.
	MaxBackoffMS int `yaml:"max_backoff_ms"`
	// TimeoutMS bounds one handler call; a timeout is a failed attempt.
	TimeoutMS int `yaml:"timeout_ms"`
	// ClaimIdleMS is the visibility timeout: a message claimed by a consumer
	// that has not acknowledged it for this long (its engine died) is
	// re-delivered. Default timeout_ms + 10 s; it may not be below timeout_ms.
	ClaimIdleMS int `yaml:"claim_idle_ms"`
	// PollIntervalMS is how often retries that have come due are moved back
	// onto the queue (iii's poll_interval_ms).
	PollIntervalMS int `yaml:"poll_interval_ms"`
	// FIFO (or Type "fifo") processes the messages of one message group one
	// at a time, in order. MessageGroupField names the field of the message
	// data holding the group; it is required for FIFO queues.
	FIFO              bool   `yaml:"fifo"`
	Type              string `yaml:"type"`
	MessageGroupField string `yaml:"message_group_field"`
}

// settings is a queue's resolved configuration.
type settings struct {
	Concurrency  int
	MaxRetries   int
	Backoff      time.Duration
	MaxBackoff   time.Duration
	Timeout      time.Duration
	ClaimIdle    time.Duration
	PollInterval time.Duration
	FIFO         bool
	GroupField   string
}

// resolve fills in defaults and checks the values; name is used in errors.
func (c QueueConfig) resolve(name string) (settings, error) {
	s := settings{
		Concurrency:  DefaultConcurrency,
		MaxRetries:   DefaultMaxRetries,
		Backoff:      DefaultBackoffMS * time.Millisecond,
		MaxBackoff:   DefaultMaxBackoffMS * time.Millisecond,
		Timeout:      DefaultTimeoutMS * time.Millisecond,
		PollInterval: DefaultPollIntervalMS * time.Millisecond,
		GroupField:   c.MessageGroupField,
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("queues.%s.%s", name, fmt.Sprintf(format, args...)))
	}
	if err := checkName(name); err != nil {
		errs = append(errs, fmt.Errorf("queues: %w", err))
	}
	switch {
	case c.Concurrency < 0 || c.Concurrency > maxConcurrency:
		bad("concurrency: %d is out of range 1-%d", c.Concurrency, maxConcurrency)
	case c.Concurrency > 0:
		s.Concurrency = c.Concurrency
	}
	if c.MaxRetries != nil {
		if *c.MaxRetries < 0 || *c.MaxRetries > maxRetries {
			bad("max_retries: %d is out of range 0-%d", *c.MaxRetries, maxRetries)
		}
		s.MaxRetries = *c.MaxRetries
	}
	if c.BackoffMS != nil {
		if *c.BackoffMS < 0 {
			bad("backoff_ms: %d is negative", *c.BackoffMS)
		}
		s.Backoff = time.Duration(*c.BackoffMS) * time.Millisecond
	}
	if c.MaxBackoffMS < 0 {
		bad("max_backoff_ms: %d is negative", c.MaxBackoffMS)
	} else if c.MaxBackoffMS > 0 {
		s.MaxBackoff = time.Duration(c.MaxBackoffMS) * time.Millisecond
	}
	if c.TimeoutMS < 0 {
		bad("timeout_ms: %d is negative", c.TimeoutMS)
	} else if c.TimeoutMS > 0 {
		s.Timeout = time.Duration(c.TimeoutMS) * time.Millisecond
	}
	s.ClaimIdle = s.Timeout + DefaultClaimMarginMS*time.Millisecond
	switch {
	case c.ClaimIdleMS < 0:
		bad("claim_idle_ms: %d is negative", c.ClaimIdleMS)
	case c.ClaimIdleMS > 0 && time.Duration(c.ClaimIdleMS)*time.Millisecond < s.Timeout:
		bad("claim_idle_ms: %d is below timeout_ms %d: messages whose handler is still running would be delivered again",
			c.ClaimIdleMS, s.Timeout.Milliseconds())
	case c.ClaimIdleMS > 0:
		s.ClaimIdle = time.Duration(c.ClaimIdleMS) * time.Millisecond
	}
	if c.PollIntervalMS < 0 {
		bad("poll_interval_ms: %d is negative", c.PollIntervalMS)
	} else if c.PollIntervalMS > 0 {
		s.PollInterval = time.Duration(c.PollIntervalMS) * time.Millisecond
	}
	switch strings.ToLower(c.Type) {
	case "", "standard":
		if c.Type != "" && c.FIFO {
			bad("type: %q contradicts fifo: true", c.Type)
		}
		s.FIFO = c.FIFO
	case "fifo":
		s.FIFO = true
	default:
		bad("type: %q is not standard or fifo", c.Type)
	}
	if s.FIFO && strings.TrimSpace(c.MessageGroupField) == "" {
		bad("message_group_field: required for a fifo queue (the data field whose value groups ordered messages)")
	}
	if !s.FIFO && c.MessageGroupField != "" {
		bad("message_group_field: only meaningful for a fifo queue (set fifo: true or type: fifo)")
	}
	return s, errors.Join(errs...)
}

// checkName refuses queue names that cannot be a Redis key part: empty,
// too long, with braces (they are the cluster hash tag), whitespace or
// control characters.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("queue name is empty")
	case len(name) > maxNameLen:
		return fmt.Errorf("queue name %.20q... is longer than %d bytes", name, maxNameLen)
	case strings.ContainsAny(name, "{}"):
		return fmt.Errorf("queue name %q contains a brace", name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("queue name %q contains whitespace or a control character", name)
		}
	}
	return nil
}

// backoff is the delay before retry number attempt (1 for the first retry):
// base doubled attempt-1 times, capped.
func (s settings) backoff(attempt int) time.Duration {
	d := s.Backoff
	for i := 1; i < attempt && d < s.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, s.MaxBackoff)
}

// resolveAll merges `queues` and `queue_configs` and resolves every entry;
// `default` is always present.
func resolveAll(queues, iiiQueues map[string]QueueConfig) (map[string]settings, error) {
	var errs []error
	all := maps.Clone(queues)
	if all == nil {
		all = map[string]QueueConfig{}
	}
	for _, name := range slices.Sorted(maps.Keys(iiiQueues)) {
		if _, dup := all[name]; dup {
			errs = append(errs, fmt.Errorf("queue %q is configured under both queues and queue_configs", name))
			continue
		}
		all[name] = iiiQueues[name]
	}
	if _, ok := all[DefaultQueue]; !ok {
		all[DefaultQueue] = QueueConfig{}
	}
	out := make(map[string]settings, len(all))
	for _, name := range slices.Sorted(maps.Keys(all)) {
		s, err := all[name].resolve(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[name] = s
	}
	return out, errors.Join(errs...)
}

// Package cron is the Cron module (iii's CronModule / iii-cron): the `cron`
// trigger type fires functions on a schedule.
//
// A binding's config is {"expression": "<cron>", "condition_function_id"?}.
// Expressions are 6 fields with seconds first (as iii), 7 fields (+year),
// plain 5-field cron, or descriptors (@every 5s, @hourly, ...), in UTC unless
// prefixed with CRON_TZ=<zone>. The function receives
//
//	{"trigger":"cron","job_id":"<trigger id>","scheduled_time":"<RFC3339>","actual_time":"<RFC3339>"}
//
// with the binding's metadata as the invocation metadata.
//
// Distributed: every engine on one Redis schedules its own bindings, and
// each firing first takes a Redis lock (SET NX PX) named after the job —
// function id and expression, not the trigger id, which differs between
// engines — and the scheduled time. Only the engine that gets the lock fires,
// so a job registered on N engines fires once per tick. The lock is never
// released early: it expires after lock_ttl_ms, which must exceed the clock
// skew between engines.
//
// Config (config.yaml):
//
//	modules:
//	  - class: CronModule          # or iii-cron, cron
//	    config:
//	      lock_ttl_ms: 30000       # lifetime of each firing's lock
//	      adapter: {name: redis}   # iii's block: accepted, only config.lock_ttl_ms is used
//
// Day-of-week numbers follow standard cron (0-6 = Sunday-Saturday, as
// robfig/cron); iii's cron crate counts 1-7 from Sunday, so names
// (MON-SUN) are the portable spelling.
package cron

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Names on the engine.
const (
	WorkerName  = "iii-cron"
	TriggerType = "cron"
)

// DefaultLockTTL is how long a firing's lock is held.
const DefaultLockTTL = 30 * time.Second

// conditionTimeout bounds a condition function call.
const conditionTimeout = 30 * time.Second

// ErrStopped is returned for bindings delivered after Stop.
var ErrStopped = errors.New("cron: module stopped")

func init() {
	module.Register(module.Info{ID: "cron", New: func() module.Module {
		return &Module{LockTTLMs: int(DefaultLockTTL / time.Millisecond)}
	}})
}

// Module is the cron module. Its exported fields are its config.yaml keys.
type Module struct {
	// LockTTLMs is how long (ms) the per-firing lock lives in Redis.
	LockTTLMs int `yaml:"lock_ttl_ms"`
	// Adapter is iii's adapter block ({name: kv|redis, config: {...}}),
	// accepted for config compatibility: locks always live in the engine's
	// Redis, and only its config.lock_ttl_ms is used (over lock_ttl_ms).
	Adapter any `yaml:"adapter"`

	eng      *engine.Engine
	redis    redis.UniversalClient
	log      *slog.Logger
	keyFn    func(parts ...string) string
	instance string // lock owner value, for debugging
	lockTTL  time.Duration

	life module.Lifecycle
	ctx  context.Context // lifetime of the module's goroutines (life's)

	mu   sync.Mutex
	jobs map[string]*job // by trigger id
}

var (
	_ module.Module    = (*Module)(nil)
	_ module.Validator = (*Module)(nil)
)

// ID implements module.Module.
func (m *Module) ID() string { return "cron" }

// Validate implements module.Validator.
func (m *Module) Validate() error {
	if a, ok := m.Adapter.(map[string]any); ok {
		if c, ok := a["config"].(map[string]any); ok {
			if v, ok := c["lock_ttl_ms"]; ok {
				ms, ok := v.(int)
				if !ok {
					return fmt.Errorf("adapter.config.lock_ttl_ms must be an integer, got %v", v)
				}
				m.LockTTLMs = ms
			}
		}
	}
	if m.LockTTLMs < 1 {
		return fmt.Errorf("lock_ttl_ms must be at least 1, got %d", m.LockTTLMs)
	}
	return nil
}

// job is one scheduled binding.
type job struct {
	trigger   engine.Trigger
	meta      atomic.Pointer[json.RawMessage] // the binding's metadata; replaced in place
	sched     *schedule
	condition string
	lockID    string // hash of function id and canonical expression
	cancel    context.CancelFunc
	firing    atomic.Bool // a firing is in flight
}

// metadata is the binding's current metadata, passed to each firing.
func (j *job) metadata() json.RawMessage {
	if p := j.meta.Load(); p != nil {
		return *p
	}
	return nil
}

type bindingConfig struct {
	Expression          *string `json:"expression"`
	ConditionFunctionID string  `json:"condition_function_id"`
}

// Start implements module.Module.
func (m *Module) Start(ctx context.Context, h *module.Host) error {
	if h.Redis == nil {
		return errors.New("cron: needs the Redis store")
	}
	m.eng = h.Engine
	m.redis = h.Redis
	m.log = h.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.keyFn = h.Key
	m.instance = uuid.NewString()
	m.lockTTL = time.Duration(m.LockTTLMs) * time.Millisecond
	m.ctx = m.life.Begin(ctx, h.Engine)
	m.jobs = make(map[string]*job)
	if m.Adapter != nil {
		m.log.Info("cron: the adapter setting is ignored; cron locks are kept in the engine's Redis", "lock_ttl_ms", m.LockTTLMs)
	}
	err := h.Engine.RegisterTriggerType(WorkerName, engine.TriggerType{
		ID:                   TriggerType,
		Description:          "Fires a function on a cron schedule (6 fields with seconds, 7 with year, 5-field cron or @every/@hourly descriptors; UTC)",
		TriggerRequestFormat: json.RawMessage(`{"type":"object","properties":{"expression":{"type":"string"},"condition_function_id":{"type":"string"}},"required":["expression"]}`),
		CallRequestFormat:    json.RawMessage(`{"type":"object","properties":{"trigger":{"type":"string"},"job_id":{"type":"string"},"scheduled_time":{"type":"string"},"actual_time":{"type":"string"}}}`),
		Provider:             provider{m},
	})
	if err == nil {
		err = m.registerFire()
	}
	if err != nil {
		m.Stop(ctx)
		return fmt.Errorf("cron: %w", err)
	}
	return nil
}

// Stop implements module.Module: it stops every schedule and waits for
// firings in flight, within ctx.
func (m *Module) Stop(ctx context.Context) error {
	return m.life.Stop(ctx, func() error {
		m.mu.Lock()
		m.jobs = nil
		m.mu.Unlock()
		return nil
	})
}

type provider struct{ m *Module }

// RegisterTrigger schedules a binding, replacing one with the same id.
func (p provider) RegisterTrigger(_ context.Context, t engine.Trigger) error {
	m := p.m
	var cfg bindingConfig
	if len(t.Config) > 0 {
		if err := json.Unmarshal(t.Config, &cfg); err != nil {
			return fmt.Errorf("cron: invalid config: %v", err)
		}
	}
	if cfg.Expression == nil {
		return errors.New("cron: config.expression is required (e.g. \"0 */5 * * * *\")")
	}
	sched, err := parseSchedule(*cfg.Expression)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(t.FunctionID + "\x00" + sched.canonical))
	lockID := hex.EncodeToString(sum[:12])

	m.mu.Lock()
	if m.life.Stopping() {
		m.mu.Unlock()
		return ErrStopped
	}
	old := m.jobs[t.ID]
	if old != nil && old.lockID == lockID && old.condition == cfg.ConditionFunctionID {
		// The same schedule with new metadata (a worker taking the binding
		// over): the running job keeps its timer, so no tick is missed or
		// fired twice.
		old.meta.Store(&t.Metadata)
		m.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(m.ctx)
	j := &job{trigger: t, sched: sched, condition: cfg.ConditionFunctionID, lockID: lockID, cancel: cancel}
	j.meta.Store(&t.Metadata)
	m.jobs[t.ID] = j
	// Exits when the binding is unregistered or replaced, or at Stop.
	m.life.Go(func() { m.run(ctx, j) })
	m.mu.Unlock()
	if old != nil {
		old.cancel()
	}
	m.log.Debug("cron job scheduled", "trigger_id", t.ID, "function_id", t.FunctionID, "expression", sched.canonical)
	return nil
}

// UnregisterTrigger stops a binding's schedule.
func (p provider) UnregisterTrigger(_ context.Context, t engine.Trigger) error {
	m := p.m
	m.mu.Lock()
	j := m.jobs[t.ID]
	delete(m.jobs, t.ID)
	m.mu.Unlock()
	if j != nil {
		j.cancel()
	}
	return nil
}

// run waits for each scheduled time of j and fires it, until ctx ends.
// Ticks missed while the engine was busy are skipped, not caught up.
func (m *Module) run(ctx context.Context, j *job) {
	next := j.sched.Next(time.Now())
	for !next.IsZero() {
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		m.fire(ctx, j, next)
		now := time.Now()
		if now.Before(next) {
			now = next
		}
		next = j.sched.Next(now)
	}
	m.log.Info("cron job has no more firing times", "trigger_id", j.trigger.ID, "expression", j.sched.canonical)
}

// fire starts one firing unless the previous one of the job is still in
// flight (a slow condition function), which skips this tick.
func (m *Module) fire(ctx context.Context, j *job, scheduled time.Time) {
	if !j.firing.CompareAndSwap(false, true) {
		m.log.Warn("cron tick skipped: previous firing still running", "trigger_id", j.trigger.ID,
			"function_id", j.trigger.FunctionID, "scheduled_time", scheduled)
		return
	}
	// Exits when the firing is done; bounded by the lock and condition timeouts.
	ok := m.life.Go(func() {
		defer j.firing.Store(false)
		m.fireOnce(ctx, j, scheduled)
	})
	if !ok {
		j.firing.Store(false)
	}
}

func (m *Module) fireOnce(ctx context.Context, j *job, scheduled time.Time) {
	log := m.log.With("trigger_id", j.trigger.ID, "function_id", j.trigger.FunctionID, "scheduled_time", scheduled.UTC().Format(time.RFC3339))
	key := m.keyFn("cron", "lock", j.lockID, strconv.FormatInt(scheduled.Unix(), 10))
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	won, err := m.redis.SetNX(lctx, key, m.instance, m.lockTTL).Result()
	cancel()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			log.Warn("cron tick skipped: cannot take the lock", "err", err)
		}
		return
	case !won:
		log.Debug("cron tick taken by another engine")
		return
	}
	payload, _ := json.Marshal(map[string]string{
		"trigger":        "cron",
		"job_id":         j.trigger.ID,
		"scheduled_time": scheduled.UTC().Format(time.RFC3339),
		"actual_time":    time.Now().UTC().Format(time.RFC3339Nano),
	})
	if j.condition != "" {
		cctx, cancel := context.WithTimeout(ctx, conditionTimeout)
		res, err := m.eng.Invoke(cctx, engine.Request{FunctionID: j.condition, Namespace: j.trigger.Namespace(),
			Data: payload, Metadata: j.metadata(), Trigger: TriggerType})
		cancel()
		if err != nil {
			log.Info("cron tick skipped: condition function failed", "condition_function_id", j.condition, "err", describe(err))
			return
		}
		if isFalse(res) {
			log.Debug("cron tick skipped: condition is false", "condition_function_id", j.condition)
			return
		}
	}
	// Fire and forget: the result (and any error) is on the engine's event bus.
	if _, err := m.eng.Invoke(ctx, engine.Request{FunctionID: j.trigger.FunctionID, Data: payload,
		Metadata: j.metadata(), Action: &protocol.Action{Type: protocol.ActionVoid}, Trigger: TriggerType}); err != nil {
		log.Warn("cron firing failed", "err", describe(err))
	}
}

func isFalse(res json.RawMessage) bool {
	var b bool
	return json.Unmarshal(res, &b) == nil && !b
}

func describe(err error) string {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		return eb.Code + ": " + eb.Message
	}
	return err.Error()
}

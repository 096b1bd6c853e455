package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// logBinding is a binding of the log trigger type.
type logBinding struct {
	t     engine.Trigger
	level string // "" or "all" = every record
}

// traceBinding is a binding of the trace trigger type.
type traceBinding struct {
	t       engine.Trigger
	service string // "" = any
	status  string // "" = any
}

// triggers holds the bindings of the log and trace trigger types
// (copy-on-write, read without a lock on every record) and the trace ids
// of trigger deliveries, whose own spans and logs fire nothing.
type triggers struct {
	mu     sync.Mutex // serialises writers of logs/traces; guards recent
	logs   atomic.Pointer[map[string]logBinding]
	traces atomic.Pointer[map[string]traceBinding]

	rate rateWindow // deliveries per second

	recent []string // ring of suppressed trace ids
	next   int
	set    map[string]struct{}
}

// suppress remembers a trace id as a trigger delivery's.
func (t *triggers) suppress(traceID string) {
	if traceID == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.set == nil {
		t.set = make(map[string]struct{}, suppressedTraces)
		t.recent = make([]string, suppressedTraces)
	}
	if _, ok := t.set[traceID]; ok {
		return
	}
	if old := t.recent[t.next]; old != "" {
		delete(t.set, old)
	}
	t.recent[t.next] = traceID
	t.next = (t.next + 1) % len(t.recent)
	t.set[traceID] = struct{}{}
}

func (t *triggers) suppressed(traceID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.set[traceID]
	return ok
}

// levels accepted by the log trigger's level filter.
var logLevels = map[string]bool{"": true, "all": true, "trace": true, "debug": true, "info": true, "warn": true, "error": true}

// logProvider is the log trigger type's provider.
type logProvider struct{ t *triggers }

func (p logProvider) RegisterTrigger(_ context.Context, tr engine.Trigger) error {
	var cfg struct {
		Level string `json:"level"`
	}
	if err := decodeConfig(tr.Config, &cfg); err != nil {
		return fmt.Errorf("log trigger: %w", err)
	}
	level := strings.ToLower(strings.TrimSpace(cfg.Level))
	if level == "warning" {
		level = "warn"
	}
	if !logLevels[level] {
		return fmt.Errorf("log trigger: level %q: want info, warn, error, debug, trace or all", cfg.Level)
	}
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	next := map[string]logBinding{}
	if cur := p.t.logs.Load(); cur != nil {
		for k, v := range *cur {
			next[k] = v
		}
	}
	next[tr.ID] = logBinding{t: tr, level: level}
	p.t.logs.Store(&next)
	return nil
}

func (p logProvider) UnregisterTrigger(_ context.Context, tr engine.Trigger) error {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	next := map[string]logBinding{}
	if cur := p.t.logs.Load(); cur != nil {
		for k, v := range *cur {
			if k != tr.ID {
				next[k] = v
			}
		}
	}
	p.t.logs.Store(&next)
	return nil
}

// traceProvider is the trace trigger type's provider.
type traceProvider struct{ t *triggers }

func (p traceProvider) RegisterTrigger(_ context.Context, tr engine.Trigger) error {
	var cfg struct {
		ServiceName string `json:"service_name"`
		Status      string `json:"status"`
	}
	if err := decodeConfig(tr.Config, &cfg); err != nil {
		return fmt.Errorf("trace trigger: %w", err)
	}
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	next := map[string]traceBinding{}
	if cur := p.t.traces.Load(); cur != nil {
		for k, v := range *cur {
			next[k] = v
		}
	}
	next[tr.ID] = traceBinding{t: tr, service: cfg.ServiceName, status: strings.ToLower(strings.TrimSpace(cfg.Status))}
	p.t.traces.Store(&next)
	return nil
}

func (p traceProvider) UnregisterTrigger(_ context.Context, tr engine.Trigger) error {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	next := map[string]traceBinding{}
	if cur := p.t.traces.Load(); cur != nil {
		for k, v := range *cur {
			if k != tr.ID {
				next[k] = v
			}
		}
	}
	p.t.traces.Store(&next)
	return nil
}

// decodeConfig decodes a binding's config; none (or null) is {}.
func decodeConfig(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// fireLog delivers a record to every log binding whose level matches.
func (m *Module) fireLog(rec *LogRecord) {
	cur := m.trig.logs.Load()
	if cur == nil || len(*cur) == 0 {
		return
	}
	level := levelOf(rec.SeverityNumber)
	var payload json.RawMessage
	for _, b := range *cur {
		if b.level != "" && b.level != "all" && b.level != level {
			continue
		}
		if payload == nil {
			var err error
			if payload, err = json.Marshal(rec); err != nil {
				return
			}
		}
		m.deliver(b.t, triggerKindLog, payload)
	}
}

// fireTrace delivers a span to every trace binding whose filters match.
func (m *Module) fireTrace(s *Span) {
	cur := m.trig.traces.Load()
	if cur == nil || len(*cur) == 0 {
		return
	}
	var payload json.RawMessage
	for _, b := range *cur {
		if b.service != "" && !strings.EqualFold(b.service, s.ServiceName) {
			continue
		}
		if b.status != "" && b.status != s.Status {
			continue
		}
		if payload == nil {
			var err error
			if payload, err = json.Marshal(s); err != nil {
				return
			}
		}
		m.deliver(b.t, triggerKindTrace, payload)
	}
}

// maxFiringsPerSecond bounds log and trace trigger deliveries: a handler
// that logs outside its call's context at its own trigger's level would
// otherwise feed itself forever.
const maxFiringsPerSecond = 1000

// rateWindow counts deliveries in the current second.
type rateWindow struct {
	second atomic.Int64
	n      atomic.Int64
}

// allow reports whether one more delivery fits in this second.
func (w *rateWindow) allow(now time.Time) bool {
	sec := now.Unix()
	if cur := w.second.Load(); cur != sec && w.second.CompareAndSwap(cur, sec) {
		w.n.Store(0)
	}
	return w.n.Add(1) <= maxFiringsPerSecond
}

// deliver calls a bound function fire-and-forget; the router never
// blocks.
func (m *Module) deliver(t engine.Trigger, kind string, payload json.RawMessage) {
	if !m.trig.rate.allow(time.Now()) {
		m.stats.triggerFiringsDropped.Add(1)
		return
	}
	m.stats.triggerFirings.Add(1)
	_, err := m.h.Engine.Invoke(m.ctx, engine.Request{FunctionID: t.FunctionID, Data: payload, Metadata: t.Metadata,
		Action: &protocol.Action{Type: protocol.ActionVoid}, Trigger: kind})
	if err != nil {
		m.log.Debug("trigger delivery failed", "trigger_type", kind, "function_id", t.FunctionID, "err", err)
	}
}

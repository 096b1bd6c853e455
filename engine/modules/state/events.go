package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// event is the payload of a `state` trigger (spec §3.5).
type event struct {
	Type      string          `json:"type"`
	EventType string          `json:"event_type"`
	Scope     string          `json:"scope"`
	Key       string          `json:"key"`
	OldValue  json.RawMessage `json:"old_value"`
	NewValue  json.RawMessage `json:"new_value"`
}

// envelope is an event on the Redis channel, tagged with the engine that
// made the change (which has fired its own bindings already).
type envelope struct {
	Origin string `json:"origin"`
	Event  event  `json:"event"`
}

// binding is a `state` trigger with its filters.
type binding struct {
	trigger   engine.Trigger
	scope     *string
	key       *string
	condition string
}

func (b binding) matches(ev *event) bool {
	return (b.scope == nil || *b.scope == ev.Scope) && (b.key == nil || *b.key == ev.Key)
}

type bindingConfig struct {
	Scope               *string `json:"scope"`
	Key                 *string `json:"key"`
	ConditionFunctionID string  `json:"condition_function_id"`
}

type provider struct{ m *Module }

// RegisterTrigger adds (or replaces) a `state` binding.
func (p provider) RegisterTrigger(_ context.Context, t engine.Trigger) error {
	var cfg bindingConfig
	if len(t.Config) > 0 {
		if err := json.Unmarshal(t.Config, &cfg); err != nil {
			return fmt.Errorf("state: invalid trigger config (scope, key, condition_function_id are optional strings): %v", err)
		}
	}
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.life.Stopping() {
		return ErrStopped
	}
	m.bindings[t.ID] = binding{trigger: t, scope: cfg.Scope, key: cfg.Key, condition: cfg.ConditionFunctionID}
	return nil
}

// UnregisterTrigger removes a `state` binding.
func (p provider) UnregisterTrigger(_ context.Context, t engine.Trigger) error {
	p.m.mu.Lock()
	delete(p.m.bindings, t.ID)
	p.m.mu.Unlock()
	return nil
}

// emit fires ev on this engine and publishes it for the others. A failed
// publish is logged: the change itself has been made.
func (m *Module) emit(ctx context.Context, ev event) {
	if !m.TriggersEnabled {
		return
	}
	m.dispatch(ctx, &ev)
	msg, err := marshal(envelope{Origin: m.instance, Event: ev})
	if err == nil {
		err = m.redis.Publish(ctx, m.channel, []byte(msg)).Err()
	}
	if err != nil {
		m.log.Warn("state event not published to other engines", "scope", ev.Scope, "key", ev.Key, "event_type", ev.EventType, "err", err)
	}
}

// receive fires the events of other engines until the subscription closes
// or the module stops.
func (m *Module) receive(ch <-chan *redis.Message) {
	for {
		select {
		case <-m.ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			var env envelope
			if err := json.Unmarshal([]byte(msg.Payload), &env); err != nil {
				m.log.Warn("undecodable state event; dropped", "err", err)
				continue
			}
			if env.Origin != m.instance {
				m.dispatch(m.ctx, &env.Event)
			}
		}
	}
}

// dispatch calls the function of every binding matching ev. Bindings with a
// condition function are served in goroutines (at most maxConditionCalls at
// a time; past that dispatch waits); the others get a void call at once.
//
// Handlers run in the trace of the call that caused the event (ctx carries
// it, see engine.ContextWithCall); events from other engines start traces of
// their own.
func (m *Module) dispatch(ctx context.Context, ev *event) {
	tctx := m.ctx
	if c, ok := engine.CallFromContext(ctx); ok {
		tctx = engine.ContextWithCall(m.ctx, c)
	}
	m.mu.RLock()
	var targets []binding
	for _, b := range m.bindings {
		if b.matches(ev) {
			targets = append(targets, b)
		}
	}
	m.mu.RUnlock()
	if len(targets) == 0 {
		return
	}
	payload, err := marshal(ev)
	if err != nil {
		m.log.Error("state event not encodable", "err", err)
		return
	}
	for _, b := range targets {
		if b.condition == "" {
			m.invoke(tctx, b, payload)
			continue
		}
		select {
		case m.sem <- struct{}{}:
		case <-m.ctx.Done():
			return
		}
		// Exits when fn returns; fn is bounded by conditionTimeout.
		if !m.life.Go(func() {
			defer func() { <-m.sem }()
			if m.conditionHolds(tctx, b, payload) {
				m.invoke(tctx, b, payload)
			}
		}) {
			<-m.sem
			return
		}
	}
}

func (m *Module) invoke(ctx context.Context, b binding, payload json.RawMessage) {
	// Void calls return at once; results and errors go to the event bus.
	m.eng.Invoke(ctx, engine.Request{FunctionID: b.trigger.FunctionID, Data: payload,
		Metadata: b.trigger.Metadata, Action: &protocol.Action{Type: protocol.ActionVoid}})
}

// conditionHolds calls the binding's condition function: a JSON false
// result or an error skips the binding.
func (m *Module) conditionHolds(parent context.Context, b binding, payload json.RawMessage) bool {
	ctx, cancel := context.WithTimeout(parent, conditionTimeout)
	defer cancel()
	// In the trigger's namespace, as iii resolves a binding's condition.
	res, err := m.eng.Invoke(ctx, engine.Request{FunctionID: b.condition, Namespace: b.trigger.Namespace(),
		Data: payload, Metadata: b.trigger.Metadata})
	if err != nil {
		var eb *protocol.ErrorBody
		if errors.As(err, &eb) {
			err = fmt.Errorf("%s: %s", eb.Code, eb.Message)
		}
		m.log.Info("state trigger skipped: condition function failed", "trigger_id", b.trigger.ID,
			"condition_function_id", b.condition, "err", err)
		return false
	}
	var v bool
	return json.Unmarshal(res, &v) != nil || v
}

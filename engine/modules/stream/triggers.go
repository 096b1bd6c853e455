package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Trigger types this module provides.
const (
	TriggerStream = "stream"
	TriggerJoin   = "stream:join"
	TriggerLeave  = "stream:leave"
)

// streamConfig is a stream binding's config (spec §3.2).
type streamConfig struct {
	StreamName          string `json:"stream_name"`
	GroupID             string `json:"group_id"`
	ItemID              string `json:"item_id"`
	ConditionFunctionID string `json:"condition_function_id"`
}

// joinLeaveConfig is a stream:join / stream:leave binding's config; both
// fields are optional filters.
type joinLeaveConfig struct {
	StreamName          string `json:"stream_name"`
	ConditionFunctionID string `json:"condition_function_id"`
}

// binding is an accepted binding with its decoded config.
type binding struct {
	id, functionID string
	namespace      string // of the function: its condition resolves there too
	metadata       json.RawMessage
	stream         streamConfig    // for TriggerStream
	joinLeave      joinLeaveConfig // for TriggerJoin, TriggerLeave
}

func (b binding) condition() string {
	if b.stream.ConditionFunctionID != "" {
		return b.stream.ConditionFunctionID
	}
	return b.joinLeave.ConditionFunctionID
}

// bindings holds the active bindings of the module's three trigger types.
type bindings struct {
	mu     sync.RWMutex
	byType map[string]map[string]binding // type → binding id → binding
}

func newBindings() *bindings {
	return &bindings{byType: map[string]map[string]binding{
		TriggerStream: {}, TriggerJoin: {}, TriggerLeave: {},
	}}
}

// decodeConfig strictly decodes an object config (null or absent = {}).
func decodeConfig(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] != '{' {
		return errors.New("config must be an object")
	}
	return json.Unmarshal(raw, v)
}

func (bs *bindings) add(t engine.Trigger) error {
	b := binding{id: t.ID, functionID: t.FunctionID, namespace: t.Namespace(), metadata: t.Metadata}
	switch t.Type {
	case TriggerStream:
		if err := decodeConfig(t.Config, &b.stream); err != nil {
			return fmt.Errorf("stream trigger: %w", err)
		}
		if b.stream.StreamName == "" {
			return errors.New("stream trigger: config.stream_name is required")
		}
	case TriggerJoin, TriggerLeave:
		if err := decodeConfig(t.Config, &b.joinLeave); err != nil {
			return fmt.Errorf("%s trigger: %w", t.Type, err)
		}
	default:
		return fmt.Errorf("stream: unknown trigger type %q", t.Type)
	}
	bs.mu.Lock()
	bs.byType[t.Type][t.ID] = b
	bs.mu.Unlock()
	return nil
}

func (bs *bindings) remove(t engine.Trigger) {
	bs.mu.Lock()
	delete(bs.byType[t.Type], t.ID)
	bs.mu.Unlock()
}

// matchStream returns the stream bindings a change of stream/group/id
// fires, ordered by binding id.
func (bs *bindings) matchStream(streamName, groupID string, id *string) []binding {
	itemID := ""
	if id != nil {
		itemID = *id
	}
	bs.mu.RLock()
	var out []binding
	for _, b := range bs.byType[TriggerStream] {
		c := b.stream
		if c.StreamName != streamName || (c.GroupID != "" && c.GroupID != groupID) || (c.ItemID != "" && c.ItemID != itemID) {
			continue
		}
		out = append(out, b)
	}
	bs.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// matchJoinLeave returns the join or leave bindings for streamName, ordered
// by binding id.
func (bs *bindings) matchJoinLeave(typ, streamName string) []binding {
	bs.mu.RLock()
	var out []binding
	for _, b := range bs.byType[typ] {
		if b.joinLeave.StreamName == "" || b.joinLeave.StreamName == streamName {
			out = append(out, b)
		}
	}
	bs.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// provider adapts bindings to engine.TriggerProvider for one trigger type.
type provider struct {
	typ string
	bs  *bindings
}

func (p provider) RegisterTrigger(_ context.Context, t engine.Trigger) error {
	t.Type = p.typ
	return p.bs.add(t)
}

func (p provider) UnregisterTrigger(_ context.Context, t engine.Trigger) error {
	t.Type = p.typ
	p.bs.remove(t)
	return nil
}

// conditionMet calls a binding's condition function: a JSON false result
// skips the handler, any other result runs it, an error skips it.
func (m *Module) conditionMet(ctx context.Context, b binding, payload json.RawMessage) bool {
	fn := b.condition()
	if fn == "" {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, m.handlerTimeout())
	defer cancel()
	res, err := m.h.Engine.Invoke(ctx, engine.Request{FunctionID: fn, Namespace: b.namespace, Data: payload, Metadata: b.metadata})
	if err != nil {
		m.log.DebugContext(ctx, "stream trigger condition failed; handler skipped",
			"function_id", fn, "trigger_id", b.id, "err", err)
		return false
	}
	return string(bytes.TrimSpace(res)) != "false"
}

// fireStream runs the stream bindings matching a change, with the wrapper
// as payload. Handlers are called fire-and-forget; bindings with a
// condition are checked in a goroutine of the module, one per change.
//
// Handlers run in the trace of the call that made the change (ctx carries
// it, see engine.ContextWithCall).
func (m *Module) fireStream(ctx context.Context, streamName, groupID string, id *string, wrapper []byte) {
	tctx := context.Background()
	if c, ok := engine.CallFromContext(ctx); ok {
		tctx = engine.ContextWithCall(tctx, c)
	}
	m.observed(ctx, streamName, groupID, id, wrapper)
	bs := m.bindings.matchStream(streamName, groupID, id)
	var conditional []binding
	for _, b := range bs {
		if b.condition() != "" {
			conditional = append(conditional, b)
			continue
		}
		m.invokeVoid(tctx, b, wrapper)
	}
	if len(conditional) == 0 {
		return
	}
	// Exits after checking each condition (each bounded by the handler
	// timeout) and dispatching the handlers.
	cctx := m.ctx
	if c, ok := engine.CallFromContext(ctx); ok {
		cctx = engine.ContextWithCall(m.ctx, c)
	}
	ok := m.life.Go(func() {
		for _, b := range conditional {
			if m.conditionMet(cctx, b, wrapper) {
				m.invokeVoid(tctx, b, wrapper)
			}
		}
	})
	if !ok {
		m.log.Debug("stream module stopping: conditional stream triggers skipped", "stream_name", streamName)
	}
}

func (m *Module) invokeVoid(ctx context.Context, b binding, payload json.RawMessage) {
	// A void call returns at once; the handler's outcome is the engine's.
	_, _ = m.h.Engine.Invoke(ctx, engine.Request{FunctionID: b.functionID, Data: payload,
		Metadata: b.metadata, Action: &protocol.Action{Type: protocol.ActionVoid}})
}

// runJoinLeave calls the join or leave bindings for ev in order, each
// awaited, and reports whether any join handler answered
// {"unauthorized": true}.
func (m *Module) runJoinLeave(ctx context.Context, typ string, ev joinLeaveEvent) (unauthorized bool) {
	bs := m.bindings.matchJoinLeave(typ, ev.StreamName)
	if len(bs) == 0 {
		return false
	}
	ev.Context = orNull(ev.Context)
	payload := mustMarshal(ev)
	for _, b := range bs {
		if ctx.Err() != nil {
			return unauthorized
		}
		if !m.conditionMet(ctx, b, payload) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, m.handlerTimeout())
		res, err := m.h.Engine.Invoke(cctx, engine.Request{FunctionID: b.functionID, Data: payload, Metadata: b.metadata})
		cancel()
		if err != nil {
			m.log.Warn("stream "+typ+" handler failed", "function_id", b.functionID, "trigger_id", b.id,
				"subscription_id", ev.SubscriptionID, "stream_name", ev.StreamName, "err", err)
			continue
		}
		if typ != TriggerJoin {
			continue
		}
		var r struct {
			Unauthorized *bool `json:"unauthorized"`
		}
		if err := json.Unmarshal(res, &r); err == nil && r.Unauthorized != nil && *r.Unauthorized {
			unauthorized = true
		}
	}
	return unauthorized
}

// SourceChanged is the engine-hosted source of stream changes
// (engine/sources.go) the 0.26 SDKs observe instead of a stream trigger.
const SourceChanged = "stream::on-changed"

// observed reports a change to the observers of stream::on-changed: the
// input is the stream trigger's payload (the wrapper) plus stream_name,
// group_id and item_id, the keys the SDKs filter on. It is reported by
// the engine that made the change, once, in the trace of the call that
// made it.
func (m *Module) observed(ctx context.Context, streamName, groupID string, id *string, wrapper []byte) {
	var in map[string]json.RawMessage
	if json.Unmarshal(wrapper, &in) != nil || in == nil {
		return
	}
	in["stream_name"], _ = json.Marshal(streamName)
	in["group_id"], _ = json.Marshal(groupID)
	in["item_id"], _ = json.Marshal(id)
	data, err := json.Marshal(in)
	if err != nil {
		return
	}
	ob := engine.Observation{Input: data, Output: data}
	if c, ok := engine.CallFromContext(ctx); ok {
		ob.Traceparent, ob.Baggage = c.Traceparent, c.Baggage
	}
	m.h.Engine.ActivateAll(SourceChanged, ob)
}

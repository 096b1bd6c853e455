// Package state is the State module (iii's StateModule / iii-state): a
// scoped key/value store of JSON values in Redis, the functions
// state::set/get/delete/update/list/list_groups (spec §4.3) and the `state`
// trigger type fired on every change.
//
// Storage: one Redis hash per scope (<prefix>state:<scope>, field = key,
// value = JSON text) and a set of the scopes that hold keys
// (<prefix>state-scopes). Every write is one Lua script, so the scope set
// stays exact; state::update reads, applies the ops in Go and writes back
// with a compare-and-set script, retrying when another writer got in first.
//
// Events: a change fires the matching `state` bindings of this engine, and
// is published on <prefix>state-events so that the other engines on the same
// Redis fire theirs (at most once: an engine cut off from Redis misses the
// events of the others meanwhile).
//
// Config (config.yaml):
//
//	modules:
//	  - class: StateModule         # or iii-state, state
//	    config:
//	      max_value_bytes: 0       # largest stored JSON value; 0 = no limit (VALUE_TOO_LARGE past it)
//	      triggers_enabled: true   # fire `state` triggers
//	      bridge_url: ws://host:49134  # keep state in that engine instead (iii's bridge adapter)
//	      adapter: ...             # iii's adapter block and save_interval_ms: accepted, ignored
//
// With bridge_url the module is a worker of the engine there and each
// function calls the same function of that engine; inputs are still checked
// here, and this engine's `state` triggers still fire on the changes made
// through it.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/modules/internal/bridge"
	"github.com/iii-workbench/iii/engine/modules/internal/updateops"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Names on the engine.
const (
	WorkerName  = "iii-state"
	TriggerType = "state"

	FnSet        = "state::set"
	FnGet        = "state::get"
	FnDelete     = "state::delete"
	FnUpdate     = "state::update"
	FnList       = "state::list"
	FnListGroups = "state::list_groups"
)

// Event types.
const (
	EventCreated = "state:created"
	EventUpdated = "state:updated"
	EventDeleted = "state:deleted"
)

// Error codes (spec §3.1).
const (
	CodeSet           = "SET_ERROR"
	CodeGet           = "GET_ERROR"
	CodeDelete        = "DELETE_ERROR"
	CodeUpdate        = "UPDATE_ERROR"
	CodeList          = "LIST_ERROR"
	CodeListGroups    = "LIST_GROUPS_ERROR"
	CodeValueTooLarge = "VALUE_TOO_LARGE"
)

const (
	// updateAttempts bounds the compare-and-set retries of one update.
	updateAttempts = 64
	// conditionTimeout bounds a condition function call.
	conditionTimeout = 30 * time.Second
	// maxConditionCalls bounds the condition calls in flight; past it event
	// dispatch waits.
	maxConditionCalls = 256
	// eventBuffer is how many events from other engines may wait.
	eventBuffer = 1024
)

// ErrStopped is returned for bindings delivered after Stop.
var ErrStopped = errors.New("state: module stopped")

func init() {
	module.Register(module.Info{ID: "state", New: func() module.Module { return &Module{TriggersEnabled: true} }})
}

// Module is the state module. Its exported fields are its config.yaml keys.
type Module struct {
	// MaxValueBytes limits the JSON size of a stored value (0: no limit).
	MaxValueBytes int `yaml:"max_value_bytes"`
	// TriggersEnabled fires `state` triggers on changes (default true).
	TriggersEnabled bool `yaml:"triggers_enabled"`
	// BridgeURL, when set, keeps the state in the engine at that address
	// (iii's bridge adapter) instead of this engine's store.
	BridgeURL string `yaml:"bridge_url"`
	// Adapter is iii's adapter block (kv, redis, bridge) and
	// SaveIntervalMs its file-store flush interval, accepted for config
	// compatibility and ignored: state always lives in the engine's Redis.
	Adapter        any `yaml:"adapter"`
	SaveIntervalMs any `yaml:"save_interval_ms"`

	eng      *engine.Engine
	redis    redis.UniversalClient
	log      *slog.Logger
	key      func(parts ...string) string
	scopes   string // key of the set of scopes
	channel  string // event channel
	instance string // this engine's id on the event channel

	remote *bridge.Remote // with BridgeURL: where the values are

	ps   *redis.PubSub
	life module.Lifecycle
	ctx  context.Context // lifetime of the module's goroutines (life's)
	sem  chan struct{}   // condition calls in flight

	mu       sync.RWMutex
	bindings map[string]binding // by trigger id
}

var (
	_ module.Module    = (*Module)(nil)
	_ module.Validator = (*Module)(nil)
)

// ID implements module.Module.
func (m *Module) ID() string { return "state" }

// Validate implements module.Validator.
func (m *Module) Validate() error {
	if m.MaxValueBytes < 0 {
		return fmt.Errorf("max_value_bytes must be 0 (no limit) or positive, got %d", m.MaxValueBytes)
	}
	return nil
}

// Start implements module.Module.
func (m *Module) Start(ctx context.Context, h *module.Host) error {
	if h.Redis == nil {
		return errors.New("state: needs the Redis store")
	}
	m.eng, m.redis, m.log, m.key = h.Engine, h.Redis, h.Logger, h.Key
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.scopes = h.Key("state-scopes")
	m.channel = h.Key("state-events")
	m.instance = uuid.NewString()
	m.bindings = make(map[string]binding)
	m.sem = make(chan struct{}, maxConditionCalls)
	if m.Adapter != nil || m.SaveIntervalMs != nil {
		m.log.Info("state: the adapter and save_interval_ms settings are ignored; state is kept in the engine's Redis")
	}
	m.ctx = m.life.Begin(ctx, h.Engine)
	if m.BridgeURL != "" {
		r, err := bridge.Dial(m.BridgeURL, WorkerName+" bridge", m.log, nil)
		if err != nil {
			m.Stop(ctx)
			return fmt.Errorf("state: %w", err)
		}
		m.remote = r
		m.log.Info("state: kept in a remote engine (bridge); connecting", "bridge_url", m.BridgeURL)
	}

	if m.TriggersEnabled {
		ps := h.Redis.Subscribe(ctx, m.channel)
		if _, err := ps.Receive(ctx); err != nil {
			ps.Close()
			m.Stop(ctx)
			return fmt.Errorf("state: subscribe to events: %w", err)
		}
		m.ps = ps
		ch := ps.Channel(redis.WithChannelSize(eventBuffer))
		// Exits when Stop cancels m.ctx or closes the subscription.
		m.life.Go(func() { m.receive(ch) })
	} else {
		m.log.Info("state triggers are disabled (triggers_enabled: false)")
	}

	fns := []engine.Function{
		{ID: FnSet, Description: "Stores value under scope/key; returns {old_value, new_value}", Handler: m.set,
			RequestFormat: json.RawMessage(`{"type":"object","properties":{"scope":{"type":"string"},"key":{"type":"string"},"value":{}},"required":["scope","key","value"]}`)},
		{ID: FnGet, Description: "Returns the value under scope/key, or nothing", Handler: m.get,
			RequestFormat: json.RawMessage(`{"type":"object","properties":{"scope":{"type":"string"},"key":{"type":"string"}},"required":["scope","key"]}`)},
		{ID: FnDelete, Description: "Deletes scope/key; returns the deleted value", Handler: m.delete,
			RequestFormat: json.RawMessage(`{"type":"object","properties":{"scope":{"type":"string"},"key":{"type":"string"}},"required":["scope","key"]}`)},
		{ID: FnUpdate, Description: "Applies update ops (set, merge, increment, decrement, append, remove) to scope/key atomically", Handler: m.update,
			RequestFormat: json.RawMessage(`{"type":"object","properties":{"scope":{"type":"string"},"key":{"type":"string"},"ops":{"type":"array"}},"required":["scope","key","ops"]}`)},
		{ID: FnList, Description: "Lists the values of a scope", Handler: m.list,
			RequestFormat: json.RawMessage(`{"type":"object","properties":{"scope":{"type":"string"}},"required":["scope"]}`)},
		{ID: FnListGroups, Description: "Lists the scopes that hold values", Handler: m.listGroups},
	}
	var err error
	for _, fn := range fns {
		if err = m.life.RegisterFunction(WorkerName, fn); err != nil {
			break
		}
	}
	if err == nil {
		err = h.Engine.RegisterTriggerType(WorkerName, engine.TriggerType{
			ID:                   TriggerType,
			Description:          "Fires on state changes (state:created, state:updated, state:deleted), optionally filtered by scope and key",
			TriggerRequestFormat: json.RawMessage(`{"type":"object","properties":{"scope":{"type":"string"},"key":{"type":"string"},"condition_function_id":{"type":"string"}}}`),
			CallRequestFormat:    json.RawMessage(`{"type":"object","properties":{"type":{"type":"string"},"event_type":{"type":"string"},"scope":{"type":"string"},"key":{"type":"string"},"old_value":{},"new_value":{}}}`),
			Provider:             provider{m},
		})
	}
	if err != nil {
		m.Stop(ctx)
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// Stop implements module.Module: it closes the event subscription and the
// bridge, and waits for the event loop and condition calls in flight.
func (m *Module) Stop(ctx context.Context) error {
	closers := []func() error{module.CloseSubscription(m.ps)}
	if r := m.remote; r != nil {
		closers = append(closers, func() error { return r.Close(ctx) })
	}
	return m.life.Stop(ctx, closers...)
}

// ---- functions ----

type keyArgs struct {
	Scope *string `json:"scope"`
	Key   *string `json:"key"`
}

type setArgs struct {
	keyArgs
	Value json.RawMessage `json:"value"`
	Data  json.RawMessage `json:"data"`
}

type updateArgs struct {
	keyArgs
	Ops json.RawMessage `json:"ops"`
}

// decode reads a function's input; required fields are checked by need.
func decode(fn string, data json.RawMessage, v any, need ...string) error {
	if err := json.Unmarshal(data, v); err != nil {
		return badInput(fn, "%v", err)
	}
	var k *keyArgs
	switch a := v.(type) {
	case *keyArgs:
		k = a
	case *setArgs:
		k = &a.keyArgs
	case *updateArgs:
		k = &a.keyArgs
	}
	for _, f := range need {
		if (f == "scope" && k.Scope == nil) || (f == "key" && k.Key == nil) {
			return badInput(fn, "%s is required", f)
		}
	}
	return nil
}

func badInput(fn, format string, args ...any) error {
	return &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: fn + ": " + fmt.Sprintf(format, args...)}
}

func failed(code, fn string, err error) error {
	return &protocol.ErrorBody{Code: code, Message: fmt.Sprintf("%s: %v", fn, err)}
}

func (m *Module) tooLarge(fn string, v json.RawMessage) error {
	if m.MaxValueBytes > 0 && len(v) > m.MaxValueBytes {
		return &protocol.ErrorBody{Code: CodeValueTooLarge,
			Message: fmt.Sprintf("%s: value is %d bytes, more than max_value_bytes (%d)", fn, len(v), m.MaxValueBytes)}
	}
	return nil
}

// marshal encodes v without escaping <, > and & (stored values come back
// as they were written).
func marshal(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// compact normalises a JSON value for storage.
func compact(v json.RawMessage) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func orNull(v json.RawMessage) json.RawMessage {
	if v == nil {
		return json.RawMessage("null")
	}
	return v
}

type change struct {
	OldValue json.RawMessage     `json:"old_value"`
	NewValue json.RawMessage     `json:"new_value"`
	Errors   []updateops.OpError `json:"errors,omitempty"`
}

var setScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return old`)

func (m *Module) set(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in setArgs
	if err := decode(FnSet, call.Data, &in, "scope", "key"); err != nil {
		return nil, err
	}
	value := in.Value
	if value == nil {
		value = in.Data
	}
	if value == nil {
		return nil, badInput(FnSet, "value is required")
	}
	value, err := compact(value)
	if err != nil {
		return nil, badInput(FnSet, "value: %v", err)
	}
	if err := m.tooLarge(FnSet, value); err != nil {
		return nil, err
	}
	if m.remote != nil {
		return m.remoteChange(ctx, FnSet, CodeSet, *in.Scope, *in.Key, setInput{*in.Scope, *in.Key, value})
	}
	old, err := stringOrNil(setScript.Run(ctx, m.redis, []string{m.key("state", *in.Scope), m.scopes}, *in.Key, string(value), *in.Scope))
	if err != nil {
		return nil, failed(CodeSet, FnSet, err)
	}
	kind := EventUpdated
	if old == nil {
		kind = EventCreated
	}
	m.emit(ctx, event{Type: "state", EventType: kind, Scope: *in.Scope, Key: *in.Key, OldValue: orNull(old), NewValue: value})
	return marshal(change{OldValue: orNull(old), NewValue: value})
}

// stringOrNil turns a script's string reply into JSON, nil for a nil reply.
func stringOrNil(cmd *redis.Cmd) (json.RawMessage, error) {
	s, err := cmd.Text()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(s), nil
}

func (m *Module) get(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in keyArgs
	if err := decode(FnGet, call.Data, &in, "scope", "key"); err != nil {
		return nil, err
	}
	if m.remote != nil {
		v, err := m.remote.Call(ctx, FnGet, keyInput{*in.Scope, *in.Key})
		if err != nil {
			return nil, m.bridgeFailed(CodeGet, FnGet, err)
		}
		return v, nil
	}
	v, err := m.redis.HGet(ctx, m.key("state", *in.Scope), *in.Key).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, failed(CodeGet, FnGet, err)
	}
	return json.RawMessage(v), nil
}

var deleteScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[2])
  end
end
return old`)

func (m *Module) delete(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in keyArgs
	if err := decode(FnDelete, call.Data, &in, "scope", "key"); err != nil {
		return nil, err
	}
	var old json.RawMessage
	var err error
	if m.remote != nil {
		// The remote answers with the value it deleted, as this engine does.
		old, err = m.remote.Call(ctx, FnDelete, keyInput{*in.Scope, *in.Key})
		if err != nil {
			return nil, m.bridgeFailed(CodeDelete, FnDelete, err)
		}
	} else {
		old, err = stringOrNil(deleteScript.Run(ctx, m.redis, []string{m.key("state", *in.Scope), m.scopes}, *in.Key, *in.Scope))
		if err != nil {
			return nil, failed(CodeDelete, FnDelete, err)
		}
	}
	if old != nil {
		m.emit(ctx, event{Type: "state", EventType: EventDeleted, Scope: *in.Scope, Key: *in.Key, OldValue: old, NewValue: json.RawMessage("null")})
	}
	return old, nil
}

// casScript writes ARGV[4] if the field still holds ARGV[3] (ARGV[2] = "1")
// or is still missing (ARGV[2] = "0").
var casScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
return 1`)

func (m *Module) update(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in updateArgs
	if err := decode(FnUpdate, call.Data, &in, "scope", "key"); err != nil {
		return nil, err
	}
	if in.Ops == nil {
		return nil, badInput(FnUpdate, "ops is required")
	}
	ops, err := updateops.ParseOps(in.Ops)
	if err != nil {
		return nil, badInput(FnUpdate, "%v", err)
	}
	if m.remote != nil {
		return m.remoteChange(ctx, FnUpdate, CodeUpdate, *in.Scope, *in.Key, updateInput{*in.Scope, *in.Key, in.Ops})
	}
	hash := m.key("state", *in.Scope)
	for range updateAttempts {
		raw, err := m.redis.HGet(ctx, hash, *in.Key).Result()
		var old json.RawMessage
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, failed(CodeUpdate, FnUpdate, err)
		default:
			old = json.RawMessage(raw)
		}
		value, opErrs, err := updateops.Apply(old, ops)
		if err != nil {
			return nil, failed(CodeUpdate, FnUpdate, err)
		}
		if err := m.tooLarge(FnUpdate, value); err != nil {
			return nil, err
		}
		present := "0"
		if old != nil {
			present = "1"
		}
		ok, err := casScript.Run(ctx, m.redis, []string{hash, m.scopes}, *in.Key, present, raw, string(value), *in.Scope).Int()
		if err != nil {
			return nil, failed(CodeUpdate, FnUpdate, err)
		}
		if ok == 0 {
			continue // another writer changed the value: read it again
		}
		kind := EventUpdated
		if old == nil {
			kind = EventCreated
		}
		m.emit(ctx, event{Type: "state", EventType: kind, Scope: *in.Scope, Key: *in.Key, OldValue: orNull(old), NewValue: value})
		return marshal(change{OldValue: orNull(old), NewValue: value, Errors: opErrs})
	}
	return nil, &protocol.ErrorBody{Code: CodeUpdate,
		Message: fmt.Sprintf("%s: %s/%s kept changing under %d attempts", FnUpdate, *in.Scope, *in.Key, updateAttempts)}
}

func (m *Module) list(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in keyArgs
	if err := decode(FnList, call.Data, &in, "scope"); err != nil {
		return nil, err
	}
	if m.remote != nil {
		v, err := m.remote.Call(ctx, FnList, struct {
			Scope string `json:"scope"`
		}{*in.Scope})
		if err != nil {
			return nil, m.bridgeFailed(CodeList, FnList, err)
		}
		if v == nil {
			v = json.RawMessage("[]")
		}
		return v, nil
	}
	all, err := m.redis.HGetAll(ctx, m.key("state", *in.Scope)).Result()
	if err != nil {
		return nil, failed(CodeList, FnList, err)
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	values := make([]json.RawMessage, len(keys))
	for i, k := range keys {
		values[i] = json.RawMessage(all[k])
	}
	return marshal(values)
}

func (m *Module) listGroups(ctx context.Context, _ *engine.Call) (json.RawMessage, error) {
	if m.remote != nil {
		v, err := m.remote.Call(ctx, FnListGroups, struct{}{})
		if err != nil {
			return nil, m.bridgeFailed(CodeListGroups, FnListGroups, err)
		}
		return v, nil
	}
	groups, err := m.redis.SMembers(ctx, m.scopes).Result()
	if err != nil {
		return nil, failed(CodeListGroups, FnListGroups, err)
	}
	sort.Strings(groups)
	if groups == nil {
		groups = []string{}
	}
	return json.Marshal(map[string][]string{"groups": groups})
}

// ---- bridge ----

// The inputs sent to the remote engine: the same functions' own inputs.
type keyInput struct {
	Scope string `json:"scope"`
	Key   string `json:"key"`
}

type setInput struct {
	Scope string          `json:"scope"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

type updateInput struct {
	Scope string          `json:"scope"`
	Key   string          `json:"key"`
	Ops   json.RawMessage `json:"ops"`
}

// remoteChange runs a set or update on the remote engine and fires this
// engine's triggers with the change it answers ({old_value, new_value}),
// which is passed on unchanged.
func (m *Module) remoteChange(ctx context.Context, fn, code, scope, key string, in any) (json.RawMessage, error) {
	res, err := m.remote.Call(ctx, fn, in)
	if err != nil {
		return nil, m.bridgeFailed(code, fn, err)
	}
	var ch change
	if err := json.Unmarshal(res, &ch); err != nil || len(ch.NewValue) == 0 {
		return nil, failed(code, fn, fmt.Errorf("the bridge's answer is not {old_value, new_value}: %.80s", res))
	}
	old := ch.OldValue
	if bytes.Equal(bytes.TrimSpace(old), []byte("null")) {
		old = nil
	}
	kind := EventUpdated
	if old == nil {
		kind = EventCreated
	}
	m.emit(ctx, event{Type: "state", EventType: kind, Scope: scope, Key: key, OldValue: orNull(old), NewValue: ch.NewValue})
	return res, nil
}

// bridgeFailed is the error of a call to the remote engine: the remote's
// own error as it is (its code and message), anything else (not connected,
// timed out) under code.
func (m *Module) bridgeFailed(code, fn string, err error) error {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		return eb
	}
	return failed(code, fn, fmt.Errorf("through the bridge: %w", err))
}

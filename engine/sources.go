package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/iii-workbench/iii/engine/protocol"
)

// This file makes the built-in trigger types observable: the 0.26 Rust SDK
// has no registertrigger, and a Python 0.25 worker is told to use observe,
// so an HTTP route, a pub/sub subscription, a state reaction, a cron
// schedule or a queue consumer is an observer of an engine-hosted source
// function (http::on-request, publish, state::on-changed, cron::on-tick,
// queue::on-message, ...). Each observer of such a source stands for a
// trigger binding of the matching type: the source translates its args
// into the binding's config and holds the binding from Attach to Detach,
// so the modules serve observers and registertrigger bindings alike (and
// refuse a route taken by either).
//
// A source is installed when its trigger type's in-process provider
// registers (RegisterTriggerType), so only the modules that run have
// sources; an observer of a source whose module is not loaded finds no
// function and stays pending, as the SDKs expect.

// SourceMode says how a built-in source turns its observers into trigger
// bindings and events into activations.
type SourceMode int

const (
	// SourceDirect: one binding per observer, bound to the observer's
	// target. The trigger calls the target with its own payload and uses
	// the target's result: an HTTP response, a queue message's ack. This
	// is the owner delivery of iii's HTTP and queue workers.
	SourceDirect SourceMode = iota
	// SourceKeyed: one binding per distinct config (args), bound to the
	// source function; a firing activates the observers of that config
	// with the payload plus the config's keys (a cron tick carries its
	// expression).
	SourceKeyed
	// SourceShared: one binding (config {}) for every observer, bound to
	// the source function; a firing activates every observer whose on and
	// filters match. The source takes no args.
	SourceShared
	// SourceEvents: no binding; the module reports each event with
	// ActivateAll itself (publish). The source takes no args.
	SourceEvents
)

func (m SourceMode) String() string {
	switch m {
	case SourceDirect:
		return "direct"
	case SourceKeyed:
		return "keyed"
	case SourceShared:
		return "shared"
	case SourceEvents:
		return "events"
	}
	return fmt.Sprintf("SourceMode(%d)", int(m))
}

// BuiltinSource describes an engine-hosted source backed by a trigger type.
type BuiltinSource struct {
	FunctionID  string // the source function observers name
	TriggerType string // the binding type the observers stand for
	Description string
	Mode        SourceMode
	// ArgsFormat is the JSON Schema of the observers' args (nil: no args).
	ArgsFormat json.RawMessage
	// Config turns an observer's args ({} when none) into the binding's
	// config; a *protocol.ErrorBody keeps its code, any other error is
	// INVALID_ARGS. Nil: the source takes no args.
	Config func(args json.RawMessage) (json.RawMessage, error)
	// ConflictCode replaces the provider's refusal of a binding that
	// conflicts with a served one (an HTTP route of the same shape).
	ConflictCode string
	// Existing: the function is the module's own (publish), so the source
	// does not register one.
	Existing bool
}

// builtinSources are the built-in sources, by the trigger type that brings
// them. The args of each are what iii's 0.26 SDKs and docs send.
var builtinSources = map[string][]BuiltinSource{
	"http": {{
		FunctionID: "http::on-request", TriggerType: "http", Mode: SourceDirect,
		Description:  "An HTTP request to a route: observe it with args {method, path} and the target serves the route (it gets the request and returns {status_code, headers, body})",
		ArgsFormat:   json.RawMessage(`{"type":"object","required":["path"],"properties":{"method":{"type":"string"},"path":{"type":"string"},"middleware_function_ids":{"type":"array","items":{"type":"string"}},"condition_function_id":{"type":"string"},"auth":{"type":"object"}}}`),
		Config:       httpRouteConfig,
		ConflictCode: "HTTP_ROUTE_CONFLICT",
	}},
	"durable:subscriber": {{
		FunctionID: "queue::on-message", TriggerType: "durable:subscriber", Mode: SourceDirect,
		Description: "A message of a durable topic (iii::durable::publish): observe it with args {topic} and the target consumes it (an error retries it)",
		ArgsFormat:  json.RawMessage(`{"type":"object","required":["topic"],"properties":{"topic":{"type":"string"},"queue":{"type":"string"},"queue_config":{"type":"object"},"condition_function_id":{"type":"string"}}}`),
		Config:      passArgs("queue::on-message", []string{"topic"}, "topic", "queue", "queue_config", "condition_function_id"),
	}},
	"cron": {{
		FunctionID: "cron::on-tick", TriggerType: "cron", Mode: SourceKeyed,
		Description: "A tick of a cron schedule: observe it with args {expression}; the event is {expression, job_id, scheduled_time, actual_time}",
		ArgsFormat:  json.RawMessage(`{"type":"object","required":["expression"],"properties":{"expression":{"type":"string"},"condition_function_id":{"type":"string"}}}`),
		Config:      passArgs("cron::on-tick", []string{"expression"}, "expression", "condition_function_id"),
	}},
	"state": {{
		FunctionID: "state::on-changed", TriggerType: "state", Mode: SourceShared,
		Description: "A state change: filter on input.scope, input.key, input.event_type (state:created, state:updated, state:deleted); the event has old_value and new_value",
	}},
	"subscribe": {{
		FunctionID: "publish", TriggerType: "subscribe", Mode: SourceEvents, Existing: true,
	}},
	"log": {{
		FunctionID: "observability::on-log", TriggerType: "log", Mode: SourceShared,
		Description: "A log record: filter on input.level, input.message, ...",
	}},
	"trace": {{
		FunctionID: "observability::on-span", TriggerType: "trace", Mode: SourceShared,
		Description: "A finished span: filter on input.name, input.status, ...",
	}},
	"stream": {{
		// The stream module reports each change itself (SourceChanged).
		FunctionID: "stream::on-changed", TriggerType: "stream", Mode: SourceEvents,
		Description: "A stream item changed (set, update, delete, or a custom event): filter on input.stream_name, input.group_id, input.item_id; the input is the stream trigger's payload plus those keys",
	}},
	"stream:join": {{
		FunctionID: "stream::on-join", TriggerType: "stream:join", Mode: SourceShared,
		Description: "A client joined a stream subscription: filter on input.stream_name, input.group_id",
	}},
	"stream:leave": {{
		FunctionID: "stream::on-leave", TriggerType: "stream:leave", Mode: SourceShared,
		Description: "A client left a stream subscription: filter on input.stream_name, input.group_id",
	}},
	TriggerWorkersAvailable: {{
		FunctionID: "engine::on-workers-changed", TriggerType: TriggerWorkersAvailable, Mode: SourceShared,
		Description: "A worker connected, disconnected or updated its metadata: {event, worker_id}",
	}},
	TriggerFunctionsAvailable: {{
		FunctionID: "engine::on-functions-changed", TriggerType: TriggerFunctionsAvailable, Mode: SourceShared,
		Description: "The set of registered functions changed: {functions}",
	}},
}

// Sources of the engine itself that no trigger type stands for: the
// engine reports their events with ActivateAll.
const (
	// SourceObserversChanged: an observer changed state (created, active,
	// suspended, error, disposed): {observer_id, function_id, namespace,
	// target, target_namespace, state, fires, reason?}.
	SourceObserversChanged = "engine::on-observers-changed"
	// SourceConfigurationUpdated: a configuration entry was registered or
	// changed (configuration::register, configuration::set;
	// configuration.go): {type: "configuration", event_type, id, name,
	// description, schema, old_value, new_value, metadata?}.
	SourceConfigurationUpdated = "configuration::on-updated"
)

var engineSources = []BuiltinSource{{
	FunctionID: SourceObserversChanged, TriggerType: "observer", Mode: SourceEvents,
	Description: "An observer changed state: {observer_id, function_id, namespace, target, target_namespace, state, fires, reason?}; filter on input.state, input.function_id, ...",
}, {
	FunctionID: SourceConfigurationUpdated, TriggerType: "configuration", Mode: SourceEvents,
	Description: "A configuration entry was registered or changed (configuration::register, configuration::set): {type, event_type (configuration:registered, configuration:updated), id, name, description, schema, old_value, new_value, metadata?}; filter on input.id, input.event_type",
}}

// installEngineSources makes the engine's own sources observable.
func (e *Engine) installEngineSources() error {
	for _, spec := range engineSources {
		if err := e.InstallSource(BuiltinWorker, spec); err != nil {
			return err
		}
	}
	return nil
}

// BuiltinSources returns the built-in sources, sorted by function id.
func BuiltinSources() []BuiltinSource {
	out := slices.Clone(engineSources)
	for _, ss := range builtinSources {
		out = append(out, ss...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FunctionID < out[j].FunctionID })
	return out
}

// installBuiltinSources makes the sources of a trigger type observable,
// once its in-process provider is registered. A failure is logged: the
// trigger type itself works without them.
func (e *Engine) installBuiltinSources(worker, triggerType string) {
	for _, spec := range builtinSources[triggerType] {
		if err := e.InstallSource(worker, spec); err != nil {
			e.log.Warn("built-in source not installed", "function_id", spec.FunctionID, "err", err)
		}
	}
}

// InstallSource registers spec's source function (unless Existing) on
// behalf of the in-process worker, and makes it observable.
func (e *Engine) InstallSource(worker string, spec BuiltinSource) error {
	if spec.FunctionID == "" || spec.TriggerType == "" {
		return errors.New("engine: install source: function id and trigger type are required")
	}
	s := &triggerSource{e: e, spec: spec, byObserver: map[string]*sourceBinding{}, byKey: map[string]*sourceBinding{}}
	if prev, loaded := e.srcs.LoadOrStore(spec.FunctionID, s); loaded {
		// Its trigger type came back (a module restarted): the source and
		// its observers stay; its function is registered again if it went.
		s = prev.(*triggerSource)
	} else if err := e.RegisterSource(spec.FunctionID, s); err != nil {
		e.srcs.Delete(spec.FunctionID)
		return err
	}
	if spec.Existing || e.HasFunction(spec.FunctionID) {
		return nil
	}
	meta := map[string]any{"source": true, "trigger_type": spec.TriggerType, "private": true}
	if spec.ArgsFormat != nil {
		meta["args_format"] = spec.ArgsFormat
	}
	metadata, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("engine: install source %s: %w", spec.FunctionID, err)
	}
	return e.RegisterFunction(worker, Function{
		ID: spec.FunctionID, Description: spec.Description, Metadata: metadata, Handler: s.handle,
	})
}

// triggerSource is a BuiltinSource at work.
type triggerSource struct {
	e    *Engine
	spec BuiltinSource

	mu         sync.Mutex
	byObserver map[string]*sourceBinding // observer id -> its binding
	byKey      map[string]*sourceBinding // canonical config -> binding (keyed, shared)
	legacy     sync.Map                  // observer id -> *protocol.LegacyTrigger
}

// directBindingPrefix starts the id of a direct binding: the observer's id
// follows. A module that invokes a binding's function passes the binding
// id (Request.Binding), so the call goes through the observer.
const directBindingPrefix = "observer:"

// BindingObserver returns the id of the observer a trigger binding stands
// for (a direct binding of an engine-hosted source: http::on-request,
// queue::on-message), and whether it stands for one. Invoke with
// Request.Binding set to such a binding goes through the observer.
func BindingObserver(bindingID string) (string, bool) {
	return strings.CutPrefix(bindingID, directBindingPrefix)
}

// ObserverBinding is the id of the direct binding observer id stands for
// (BindingObserver's inverse).
func ObserverBinding(observerID string) string { return directBindingPrefix + observerID }

// sourceBinding is one trigger binding a source holds, with the observers
// it serves.
type sourceBinding struct {
	id        string
	key       string
	config    json.RawMessage
	observers []string // in attach order
}

// sourceKeyMeta is the metadata of a keyed or shared binding: it names
// the binding so a firing finds its observers.
type sourceKeyMeta struct {
	SourceKey string `json:"source_key"`
}

// Attach implements ObservableSource: it translates the observer's args
// and registers (or joins) the trigger binding it stands for.
func (s *triggerSource) Attach(ctx context.Context, o SourceObserver) error {
	config, err := s.config(o.Args)
	if err != nil {
		return err
	}
	if s.spec.Mode == SourceEvents {
		s.mu.Lock()
		s.byObserver[o.ID] = &sourceBinding{observers: []string{o.ID}}
		s.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byObserver[o.ID]; old != nil {
		s.detachLocked(o.ID, old) // attached again: its args may have changed
	}
	t := Trigger{Type: s.spec.TriggerType, Config: config}
	var b *sourceBinding
	switch s.spec.Mode {
	case SourceDirect:
		// The binding names the target in its namespace, as a worker's
		// registertrigger does: the functions its config names (an http
		// condition, middleware) resolve there too.
		t.ID, t.FunctionID, t.Metadata = directBindingPrefix+o.ID, fnKey(o.TargetNamespace, o.Target), o.Metadata
		b = &sourceBinding{id: t.ID}
	default:
		key := canonicalJSON(config)
		if b = s.byKey[key]; b != nil {
			b.observers = append(b.observers, o.ID)
			s.byObserver[o.ID] = b
			s.legacy.Store(o.ID, &protocol.LegacyTrigger{TriggerType: s.spec.TriggerType, Config: config})
			return nil
		}
		sum := sha256.Sum256([]byte(key))
		t.ID, t.FunctionID = "source:"+s.spec.FunctionID+":"+hex.EncodeToString(sum[:8]), s.spec.FunctionID
		t.Metadata, _ = json.Marshal(sourceKeyMeta{SourceKey: key})
		b = &sourceBinding{id: t.ID, key: key, config: config}
	}
	if _, err := s.e.RegisterTrigger(ctx, t); err != nil {
		return s.refusal(err)
	}
	b.observers = []string{o.ID}
	s.byObserver[o.ID] = b
	s.legacy.Store(o.ID, &protocol.LegacyTrigger{TriggerType: s.spec.TriggerType, Config: config})
	if b.key != "" {
		s.byKey[b.key] = b
	}
	return nil
}

var _ LegacySource = (*triggerSource)(nil)

// Detach implements ObservableSource: the observer's binding goes when
// its last observer does.
func (s *triggerSource) Detach(observerID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.byObserver[observerID]; b != nil {
		s.detachLocked(observerID, b)
	}
}

func (s *triggerSource) detachLocked(observerID string, b *sourceBinding) {
	delete(s.byObserver, observerID)
	s.legacy.Delete(observerID)
	b.observers = slices.DeleteFunc(b.observers, func(id string) bool { return id == observerID })
	if len(b.observers) > 0 || b.id == "" {
		return
	}
	if b.key != "" {
		delete(s.byKey, b.key)
	}
	s.e.UnregisterTrigger(b.id)
}

// Legacy is the trigger binding an observer stands for: {trigger_type,
// config}, the legacy field of the Python 0.25 SDK's observer view. It
// takes no lock but a sync.Map's (the registry calls it under its own).
func (s *triggerSource) Legacy(observerID string) (*protocol.LegacyTrigger, bool) {
	v, ok := s.legacy.Load(observerID)
	if !ok {
		return nil, false
	}
	return v.(*protocol.LegacyTrigger), true
}

// config checks an observer's args and returns its binding's config.
func (s *triggerSource) config(args json.RawMessage) (json.RawMessage, error) {
	if s.spec.Config == nil {
		if !emptyArgs(args) {
			return nil, &protocol.ErrorBody{Code: protocol.CodeInvalidArgs,
				Message: fmt.Sprintf("%s takes no args (got %s): pick its events with filters on input", s.spec.FunctionID, compactJSON(args))}
		}
		return json.RawMessage(`{}`), nil
	}
	if len(bytes.TrimSpace(args)) == 0 || bytes.Equal(bytes.TrimSpace(args), []byte("null")) {
		args = json.RawMessage(`{}`)
	}
	config, err := s.spec.Config(args)
	if err != nil {
		var eb *protocol.ErrorBody
		if errors.As(err, &eb) {
			return nil, eb
		}
		return nil, &protocol.ErrorBody{Code: protocol.CodeInvalidArgs, Message: fmt.Sprintf("%s args: %v", s.spec.FunctionID, err)}
	}
	return config, nil
}

// refusal turns the provider's refusal of a binding into the observer's
// error: a conflict keeps the source's conflict code, anything else is
// args the source cannot serve.
func (s *triggerSource) refusal(err error) error {
	msg := err.Error()
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		msg = eb.Message
	}
	if s.spec.ConflictCode != "" && strings.Contains(msg, "conflicts with") {
		return &protocol.ErrorBody{Code: s.spec.ConflictCode, Message: msg}
	}
	return &protocol.ErrorBody{Code: protocol.CodeInvalidArgs, Message: fmt.Sprintf("%s: %s", s.spec.FunctionID, msg)}
}

// handle serves the source function. The trigger's own firings (keyed and
// shared bindings) activate the observers; anyone else calling it is
// refused, as iii's sources are private to their host.
func (s *triggerSource) handle(ctx context.Context, call *Call) (json.RawMessage, error) {
	var meta sourceKeyMeta
	if call.CallerWorkerID != "" || s.spec.Mode == SourceDirect || s.spec.Mode == SourceEvents ||
		json.Unmarshal(call.Metadata, &meta) != nil || meta.SourceKey == "" {
		return nil, &protocol.ErrorBody{Code: protocol.CodeForbidden,
			Message: fmt.Sprintf("%s is a source the engine calls for each %s event; observe it instead of calling it", s.spec.FunctionID, s.spec.TriggerType)}
	}
	if s.spec.Mode == SourceShared {
		s.e.ActivateAll(s.spec.FunctionID, Observation{Input: call.Data, Output: call.Data,
			Traceparent: call.Traceparent, Baggage: call.Baggage})
		return call.Data, nil
	}
	s.mu.Lock()
	b := s.byKey[meta.SourceKey]
	var ids []string
	var config json.RawMessage
	if b != nil {
		ids, config = slices.Clone(b.observers), b.config
	}
	s.mu.Unlock()
	input := withConfig(call.Data, config)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		// Each activation waits for its target; the firing ends when all did.
		go func() {
			defer wg.Done()
			_, err := s.e.Activate(ctx, id, Observation{Input: input, Output: input,
				Traceparent: call.Traceparent, Baggage: call.Baggage})
			if err != nil && !errors.Is(err, ErrNotMatched) {
				s.e.log.Debug("source activation failed", "function_id", s.spec.FunctionID, "observer_id", id, "err", err)
			}
		}()
	}
	wg.Wait()
	return input, nil
}

// withConfig adds the keys of config that payload (an object) lacks: a
// cron tick names the expression it is for.
func withConfig(payload, config json.RawMessage) json.RawMessage {
	var p map[string]json.RawMessage
	var c map[string]json.RawMessage
	if json.Unmarshal(payload, &p) != nil || p == nil || json.Unmarshal(config, &c) != nil || len(c) == 0 {
		return payload
	}
	for k, v := range c {
		if _, ok := p[k]; !ok {
			p[k] = v
		}
	}
	out, err := json.Marshal(p)
	if err != nil {
		return payload
	}
	return out
}

func emptyArgs(args json.RawMessage) bool {
	t := bytes.TrimSpace(args)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return true
	}
	var m map[string]json.RawMessage
	return json.Unmarshal(t, &m) == nil && len(m) == 0
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// argsObject decodes args as an object whose keys are all in allowed.
func argsObject(fn string, args json.RawMessage, allowed ...string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(args, &m); err != nil || m == nil {
		return nil, fmt.Errorf("want an object, got %s", compactJSON(args))
	}
	for k := range m {
		if !slices.Contains(allowed, k) {
			return nil, fmt.Errorf("unknown key %q (%s takes %s)", k, fn, strings.Join(allowed, ", "))
		}
	}
	return m, nil
}

// passArgs is the Config of a source whose args are its trigger's config:
// the allowed keys pass through, the required ones must be non-empty
// strings.
func passArgs(fn string, required []string, allowed ...string) func(json.RawMessage) (json.RawMessage, error) {
	return func(args json.RawMessage) (json.RawMessage, error) {
		m, err := argsObject(fn, args, allowed...)
		if err != nil {
			return nil, err
		}
		for _, k := range required {
			var s string
			if json.Unmarshal(m[k], &s) != nil || strings.TrimSpace(s) == "" {
				return nil, fmt.Errorf("%s is required (a non-empty string)", k)
			}
		}
		return json.Marshal(m)
	}
}

// httpRouteConfig turns http::on-request args ({method, path,
// middleware_function_ids?}, as the 0.26 SDKs send them; the 0.22 names
// http_method and api_path are accepted too) into an http trigger config.
func httpRouteConfig(args json.RawMessage) (json.RawMessage, error) {
	const fn = "http::on-request"
	m, err := argsObject(fn, args, "method", "path", "http_method", "api_path",
		"middleware_function_ids", "condition_function_id", "auth")
	if err != nil {
		return nil, err
	}
	str := func(keys ...string) (string, error) {
		for _, k := range keys {
			if raw, ok := m[k]; ok {
				var s string
				if err := json.Unmarshal(raw, &s); err != nil {
					return "", fmt.Errorf("%s must be a string, got %s", k, compactJSON(raw))
				}
				return s, nil
			}
		}
		return "", nil
	}
	path, err := str("path", "api_path")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(path) == "" {
		return nil, errors.New(`path is required (e.g. {"method": "GET", "path": "/users/:id"})`)
	}
	method, err := str("method", "http_method")
	if err != nil {
		return nil, err
	}
	if method == "" {
		method = "GET"
	}
	out := map[string]json.RawMessage{}
	out["api_path"], _ = json.Marshal(path)
	out["http_method"], _ = json.Marshal(strings.ToUpper(method))
	for _, k := range []string{"middleware_function_ids", "condition_function_id", "auth"} {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return json.Marshal(out)
}

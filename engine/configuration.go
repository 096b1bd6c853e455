package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/iii-workbench/iii/engine/observe"
	"github.com/iii-workbench/iii/engine/protocol"
)

// This file is iii's configuration worker (configuration::register, set,
// get, list, schema): named values, each checked against its JSON Schema.
// Every change is an event of the configuration::on-updated source:
// {type: "configuration", event_type: configuration:registered |
// configuration:updated, id, name, description, schema, old_value,
// new_value, metadata?}, as iii's configuration trigger sends it. Entries
// live in memory (iii's fs adapter and TTL are not implemented): they are
// gone when the engine stops, and the workers that own them register them
// again when they connect, as they do with iii.

// Error codes of the configuration functions (iii's).
const (
	CodeConfigNotRegistered = "NOT_REGISTERED"
	CodeConfigInvalidID     = "INVALID_ID"
	CodeConfigSchemaInvalid = "SCHEMA_INVALID"
	CodeConfigNotFound      = "NOT_FOUND"
	CodeConfigExpandFailed  = "EXPAND_FAILED"
)

// configEntry is one configuration.
type configEntry struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Schema      json.RawMessage `json:"schema"`
	Value       json.RawMessage `json:"value"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
}

// configView is an entry without its value (list, schema).
type configView struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Schema      json.RawMessage `json:"schema"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
}

func (c *configEntry) view() configView {
	return configView{ID: c.ID, Name: c.Name, Description: c.Description, Schema: c.Schema, Metadata: c.Metadata}
}

// configEvent is the input of configuration::on-updated.
type configEvent struct {
	Type        string          `json:"type"` // always "configuration"
	EventType   string          `json:"event_type"`
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Schema      json.RawMessage `json:"schema"`
	OldValue    json.RawMessage `json:"old_value"` // null when none
	NewValue    json.RawMessage `json:"new_value"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
}

// Configuration event types.
const (
	ConfigRegistered = "configuration:registered"
	ConfigUpdated    = "configuration:updated"
)

// configStore holds the entries.
type configStore struct {
	e       *Engine
	mu      sync.Mutex
	entries map[string]*configEntry
}

var configIDPattern = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

func checkConfigID(id string) error {
	if !configIDPattern.MatchString(id) {
		return &protocol.ErrorBody{Code: CodeConfigInvalidID,
			Message: fmt.Sprintf("invalid configuration id %q: must match [a-z0-9_-]{1,64}", id)}
	}
	return nil
}

// registerConfiguration registers the configuration::* functions.
func (e *Engine) registerConfiguration() error {
	s := &configStore{e: e, entries: map[string]*configEntry{}}
	for _, f := range []Function{
		{ID: "configuration::register", Description: "Register a configuration id with a name, description and JSON Schema (and an initial value, checked against it); registering again replaces them, and the value when initial_value is given", Handler: s.register},
		{ID: "configuration::set", Description: "Replace the value of a registered configuration, checked against its schema", Handler: s.set},
		{ID: "configuration::get", Description: "Read a configuration's value (${VAR:default} expanded unless raw is true)", Handler: s.get},
		{ID: "configuration::list", Description: "List the registered configurations (without their values)", Handler: s.list},
		{ID: "configuration::schema", Description: "Describe one configuration (without its value)", Handler: s.schema},
	} {
		if err := e.RegisterFunction(BuiltinWorker, f); err != nil {
			return err
		}
	}
	return nil
}

func present(raw json.RawMessage) bool { return len(raw) > 0 }

func (s *configStore) register(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		ID           string          `json:"id"`
		Name         string          `json:"name"`
		Description  string          `json:"description"`
		Schema       json.RawMessage `json:"schema"`
		InitialValue json.RawMessage `json:"initial_value"`
		Metadata     json.RawMessage `json:"metadata"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	if err := checkConfigID(in.ID); err != nil {
		return nil, err
	}
	schema := strings.TrimSpace(string(in.Schema))
	if schema == "" || (schema[0] != '{' && schema != "true" && schema != "false") {
		return nil, badArgs("configuration::register %s: schema is required (a JSON Schema object)", in.ID)
	}
	if string(in.InitialValue) == "null" {
		in.InitialValue = nil // null reads as absent, as iii's Option does
	}
	if string(in.Metadata) == "null" {
		in.Metadata = nil
	}
	if present(in.InitialValue) {
		if err := checkConfigValue(in.Schema, in.InitialValue, "initial_value"); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	prior := s.entries[in.ID]
	entry := &configEntry{ID: in.ID, Name: in.Name, Description: in.Description, Schema: in.Schema,
		Value: json.RawMessage("null"), Metadata: in.Metadata}
	ev := configEvent{EventType: ConfigRegistered, OldValue: json.RawMessage("null")}
	if prior != nil {
		// Registering again keeps the value unless a new one is given; the
		// kept value is not checked against the new schema (set is).
		entry.Value = prior.Value
		ev.EventType = ConfigUpdated
		ev.OldValue = expandedOrRaw(prior.Value)
	}
	if present(in.InitialValue) {
		entry.Value = in.InitialValue
	}
	s.entries[in.ID] = entry
	s.mu.Unlock()
	s.fire(ev, entry)
	return marshal(entry)
}

func (s *configStore) set(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		ID    string          `json:"id"`
		Value json.RawMessage `json:"value"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	if err := checkConfigID(in.ID); err != nil {
		return nil, err
	}
	if !present(in.Value) {
		in.Value = json.RawMessage("null")
	}
	s.mu.Lock()
	prior := s.entries[in.ID]
	if prior == nil {
		s.mu.Unlock()
		return nil, &protocol.ErrorBody{Code: CodeConfigNotRegistered,
			Message: fmt.Sprintf("configuration %q is not registered: call configuration::register first", in.ID)}
	}
	if err := checkConfigValue(prior.Schema, in.Value, "value"); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	entry := *prior
	entry.Value = in.Value
	s.entries[in.ID] = &entry
	s.mu.Unlock()
	s.fire(configEvent{EventType: ConfigUpdated, OldValue: expandedOrRaw(prior.Value)}, &entry)
	return marshal(struct {
		OldValue json.RawMessage `json:"old_value"`
		NewValue json.RawMessage `json:"new_value"`
	}{prior.Value, entry.Value})
}

func (s *configStore) get(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		ID  string `json:"id"`
		Raw bool   `json:"raw"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	entry, err := s.lookup(in.ID)
	if err != nil {
		return nil, err
	}
	value := entry.Value
	if !in.Raw {
		v, missing := expandConfig(entry.Value)
		if len(missing) > 0 {
			return nil, &protocol.ErrorBody{Code: CodeConfigExpandFailed, Message: fmt.Sprintf(
				"configuration %q references unset environment variable(s) with no default: %s", in.ID, strings.Join(missing, ", "))}
		}
		if err := checkConfigValue(entry.Schema, v, "value"); err != nil {
			return nil, err
		}
		value = v
	}
	return marshal(struct {
		ID    string          `json:"id"`
		Value json.RawMessage `json:"value"`
	}{entry.ID, value})
}

func (s *configStore) list(context.Context, *Call) (json.RawMessage, error) {
	s.mu.Lock()
	out := make([]configView, 0, len(s.entries))
	for _, c := range s.entries {
		out = append(out, c.view())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return marshal(struct {
		Configurations []configView `json:"configurations"`
	}{out})
}

func (s *configStore) schema(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		ID string `json:"id"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	entry, err := s.lookup(in.ID)
	if err != nil {
		return nil, err
	}
	return marshal(entry.view())
}

// lookup is the entry registered as id, or CONFIG_NOT_FOUND.
func (s *configStore) lookup(id string) (*configEntry, error) {
	s.mu.Lock()
	entry := s.entries[id]
	s.mu.Unlock()
	if entry == nil {
		return nil, &protocol.ErrorBody{Code: CodeConfigNotFound, Message: fmt.Sprintf("configuration %q not found", id)}
	}
	return entry, nil
}

// fire reports a change to the observers of configuration::on-updated.
func (s *configStore) fire(ev configEvent, entry *configEntry) {
	ev.Type, ev.ID, ev.Name, ev.Description, ev.Schema, ev.Metadata = "configuration", entry.ID, entry.Name, entry.Description, entry.Schema, entry.Metadata
	ev.NewValue = expandedOrRaw(entry.Value)
	data, err := json.Marshal(ev)
	if err != nil {
		s.e.log.Error("configuration event not encoded", "id", entry.ID, "err", err)
		return
	}
	s.e.ActivateAll(SourceConfigurationUpdated, Observation{Input: data, Output: data})
}

// checkConfigValue checks a value (its placeholders expanded, unless one
// has no value yet) against a configuration's schema.
func checkConfigValue(schema, value json.RawMessage, what string) error {
	v, missing := expandConfig(value)
	if len(missing) > 0 {
		return nil // checked when read, once the variables are set
	}
	if err := observe.Validate(schema, v, what); err != nil {
		return &protocol.ErrorBody{Code: CodeConfigSchemaInvalid, Message: "schema validation failed: " + err.Error()}
	}
	return nil
}

// configPlaceholder is ${VAR} or ${VAR:default}, as iii writes them.
var configPlaceholder = regexp.MustCompile(`\$\{([^}:]+)(?::([^}]*))?\}`)

// expandConfig expands the placeholders in the strings of a JSON value
// from the environment; missing lists the variables that have neither a
// value nor a default (left as written).
func expandConfig(raw json.RawMessage) (json.RawMessage, []string) {
	if !strings.Contains(string(raw), "${") {
		return raw, nil
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return raw, nil
	}
	var missing []string
	var walk func(any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case string:
			return configPlaceholder.ReplaceAllStringFunc(t, func(m string) string {
				sub := configPlaceholder.FindStringSubmatch(m)
				if val, ok := os.LookupEnv(sub[1]); ok {
					return val
				}
				if strings.Contains(m, ":") {
					return sub[2]
				}
				missing = append(missing, sub[1])
				return m
			})
		case []any:
			for i := range t {
				t[i] = walk(t[i])
			}
		case map[string]any:
			for k := range t {
				t[k] = walk(t[k])
			}
		}
		return x
	}
	out, err := json.Marshal(walk(v))
	if err != nil {
		return raw, missing
	}
	return out, missing
}

func expandedOrRaw(raw json.RawMessage) json.RawMessage {
	v, _ := expandConfig(raw)
	return v
}

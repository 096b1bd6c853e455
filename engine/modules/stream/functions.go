package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Error codes of the stream functions (iii's, spec §3.1).
const (
	CodeSetError        = "STREAM_SET_ERROR"
	CodeGetError        = "STREAM_GET_ERROR"
	CodeDeleteError     = "STREAM_DELETE_ERROR"
	CodeListError       = "STREAM_GET_GROUP_ERROR"
	CodeListGroupsError = "STREAM_LIST_GROUPS_ERROR"
	CodeListAllError    = "STREAM_LIST_ALL_ERROR"
	CodeSendError       = "STREAM_SEND_ERROR"
	CodeUpdateError     = "STREAM_UPDATE_ERROR"
)

// functions lists the module's functions.
func (m *Module) functions() []engine.Function {
	return []engine.Function{
		{ID: "stream::set", Description: "Set a value in a stream and notify its subscribers", Handler: m.fnSet},
		{ID: "stream::get", Description: "Get a value from a stream", Handler: m.fnGet},
		{ID: "stream::delete", Description: "Delete a value from a stream and notify its subscribers", Handler: m.fnDelete},
		{ID: "stream::list", Description: "List all items in a stream group", Handler: m.fnList},
		{ID: "stream::list_groups", Description: "List all groups in a stream", Handler: m.fnListGroups},
		{ID: "stream::list_all", Description: "List all streams with their groups", Handler: m.fnListAll},
		{ID: "stream::send", Description: "Send a custom event to stream subscribers", Handler: m.fnSend},
		{ID: "stream::update", Description: "Atomically update a stream value with a list of operations", Handler: m.fnUpdate},
	}
}

// itemRef addresses one item; every field is required.
type itemRef struct {
	StreamName *string `json:"stream_name"`
	GroupID    *string `json:"group_id"`
	ItemID     *string `json:"item_id"`
}

func badInput(fn, format string, args ...any) *protocol.ErrorBody {
	return &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: fn + ": " + fmt.Sprintf(format, args...)}
}

func failure(code, what string, err error) *protocol.ErrorBody {
	return &protocol.ErrorBody{Code: code, Message: fmt.Sprintf("Failed to %s: %v", what, err)}
}

// decodeInput decodes a function's input object.
func decodeInput(fn string, data json.RawMessage, v any) *protocol.ErrorBody {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return badInput(fn, "input must be a JSON object, got %s", abbreviate(data))
	}
	if err := json.Unmarshal(data, v); err != nil {
		return badInput(fn, "%v", err)
	}
	return nil
}

func abbreviate(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// required checks that each named string field is present and non-empty.
func required(fn string, fields ...any) *protocol.ErrorBody {
	for i := 0; i+1 < len(fields); i += 2 {
		name, p := fields[i].(string), fields[i+1].(*string)
		if p == nil || *p == "" {
			return badInput(fn, "missing field `%s` (a non-empty string)", name)
		}
	}
	return nil
}

func (r itemRef) check(fn string) *protocol.ErrorBody {
	return required(fn, "stream_name", r.StreamName, "group_id", r.GroupID, "item_id", r.ItemID)
}

// compactValue validates and compacts a value to store. A missing value
// (absent field) is an error; JSON null is a value.
func compactValue(fn, field string, raw json.RawMessage) (json.RawMessage, *protocol.ErrorBody) {
	if len(raw) == 0 {
		return nil, badInput(fn, "missing field `%s`", field)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, badInput(fn, "field `%s`: %v", field, err)
	}
	return buf.Bytes(), nil
}

// changeResult is the output of set and update: {"old_value","new_value"}.
type changeResult struct {
	OldValue json.RawMessage `json:"old_value"`
	NewValue json.RawMessage `json:"new_value"`
	Errors   any             `json:"errors,omitempty"`
}

func (m *Module) fnSet(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	const fn = "stream::set"
	var in struct {
		itemRef
		Data json.RawMessage `json:"data"`
	}
	if eb := decodeInput(fn, call.Data, &in); eb != nil {
		return nil, eb
	}
	if eb := in.check(fn); eb != nil {
		return nil, eb
	}
	value, eb := compactValue(fn, "data", in.Data)
	if eb != nil {
		return nil, eb
	}
	if t, ok := m.override(fn, *in.StreamName); ok {
		return m.setOverride(ctx, t, CodeSetError, "set value", overrideInput{
			StreamName: *in.StreamName, GroupID: *in.GroupID, ItemID: *in.ItemID, Data: value})
	}
	old, err := m.store.set(ctx, *in.StreamName, *in.GroupID, *in.ItemID, value)
	if err != nil {
		return nil, failure(CodeSetError, "set value", err)
	}
	m.changed(ctx, *in.StreamName, *in.GroupID, in.ItemID, createOrUpdate(old), value)
	return mustMarshal(changeResult{OldValue: orNull(old), NewValue: value}), nil
}

func createOrUpdate(old json.RawMessage) string {
	if old == nil {
		return EventCreate
	}
	return EventUpdate
}

func (m *Module) fnGet(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	const fn = "stream::get"
	var in itemRef
	if eb := decodeInput(fn, call.Data, &in); eb != nil {
		return nil, eb
	}
	if eb := in.check(fn); eb != nil {
		return nil, eb
	}
	// A missing item is no result (the Node SDK sees undefined), as in
	// state::get; an override's answer and errors pass through as they are.
	return m.readItem(ctx, *in.StreamName, *in.GroupID, *in.ItemID)
}

func (m *Module) fnDelete(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	const fn = "stream::delete"
	var in itemRef
	if eb := decodeInput(fn, call.Data, &in); eb != nil {
		return nil, eb
	}
	if eb := in.check(fn); eb != nil {
		return nil, eb
	}
	if t, ok := m.override(fn, *in.StreamName); ok {
		return m.deleteOverride(ctx, t, overrideInput{StreamName: *in.StreamName, GroupID: *in.GroupID, ItemID: *in.ItemID})
	}
	old, err := m.store.delete(ctx, *in.StreamName, *in.GroupID, *in.ItemID)
	if err != nil {
		return nil, failure(CodeDeleteError, "delete value", err)
	}
	if old != nil {
		m.changed(ctx, *in.StreamName, *in.GroupID, in.ItemID, EventDelete, old)
	}
	return mustMarshal(struct {
		OldValue json.RawMessage `json:"old_value"`
	}{orNull(old)}), nil
}

func (m *Module) fnList(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	const fn = "stream::list"
	var in struct {
		StreamName *string `json:"stream_name"`
		GroupID    *string `json:"group_id"`
	}
	if eb := decodeInput(fn, call.Data, &in); eb != nil {
		return nil, eb
	}
	if eb := required(fn, "stream_name", in.StreamName, "group_id", in.GroupID); eb != nil {
		return nil, eb
	}
	return m.readGroup(ctx, *in.StreamName, *in.GroupID)
}

func (m *Module) fnListGroups(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	const fn = "stream::list_groups"
	var in struct {
		StreamName *string `json:"stream_name"`
	}
	if eb := decodeInput(fn, call.Data, &in); eb != nil {
		return nil, eb
	}
	if eb := required(fn, "stream_name", in.StreamName); eb != nil {
		return nil, eb
	}
	if t, ok := m.override(fn, *in.StreamName); ok {
		return m.callOverride(ctx, t, struct {
			StreamName string `json:"stream_name"`
		}{*in.StreamName})
	}
	groups, err := m.store.listGroups(ctx, *in.StreamName)
	if err != nil {
		return nil, failure(CodeListGroupsError, "list groups", err)
	}
	if groups == nil {
		groups = []string{}
	}
	return mustMarshal(groups), nil
}

func (m *Module) fnListAll(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	// The input is {} and ignored (null and absent are accepted too).
	if m.remote != nil {
		res, err := m.remote.Call(ctx, "stream::list_all", struct{}{})
		if err != nil {
			return nil, overrideFailed(CodeListAllError, "list streams", err)
		}
		return res, nil
	}
	all, err := m.store.listAll(ctx)
	if err != nil {
		return nil, failure(CodeListAllError, "list streams", err)
	}
	return mustMarshal(struct {
		Stream []streamInfo `json:"stream"`
		Count  int          `json:"count"`
	}{all, len(all)}), nil
}

func (m *Module) fnSend(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	const fn = "stream::send"
	var in struct {
		StreamName *string         `json:"stream_name"`
		GroupID    *string         `json:"group_id"`
		ID         *string         `json:"id"`
		Type       *string         `json:"type"`
		Data       json.RawMessage `json:"data"`
	}
	if eb := decodeInput(fn, call.Data, &in); eb != nil {
		return nil, eb
	}
	if eb := required(fn, "stream_name", in.StreamName, "group_id", in.GroupID, "type", in.Type); eb != nil {
		return nil, eb
	}
	data, eb := compactValue(fn, "data", in.Data)
	if eb != nil {
		return nil, eb
	}
	w := customWrapper(*in.StreamName, *in.GroupID, in.ID, *in.Type, data)
	m.fireStream(ctx, *in.StreamName, *in.GroupID, in.ID, w)
	if err := m.publish(ctx, w); err != nil {
		return nil, failure(CodeSendError, "send event", err)
	}
	if m.remote != nil {
		m.publishBridge(ctx, w)
	}
	return nil, nil
}

// changed announces a stored change: stream triggers on this engine, then
// subscribers on every engine through Redis pub/sub.
func (m *Module) changed(ctx context.Context, streamName, groupID string, itemID *string, kind string, data json.RawMessage) {
	w := dataWrapper(kind, streamName, groupID, itemID, data)
	m.fireStream(ctx, streamName, groupID, itemID, w)
	if err := m.publish(ctx, w); err != nil {
		// The change is stored; only its live notification is lost.
		m.log.ErrorContext(ctx, "stream change not published to subscribers", "stream_name", streamName,
			"group_id", groupID, "event", kind, "err", err)
	}
	if m.remote != nil {
		m.publishBridge(ctx, w)
	}
}

// publish sends a wrapper to every engine's subscribers.
func (m *Module) publish(ctx context.Context, wrapper []byte) error {
	if err := m.h.Redis.Publish(context.WithoutCancel(ctx), m.channel, wrapper).Err(); err != nil {
		return fmt.Errorf("publish to %s: %w", m.channel, err)
	}
	return nil
}

package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Custom stream backends (iii's, spec §4.4): a worker that registers
// stream::get(<name>), stream::set(<name>), stream::delete(<name>),
// stream::list(<name>), stream::list_groups(<name>) or
// stream::update(<name>) serves that operation of stream <name>; the
// module calls it with the same input instead of its store. The SDK helper
// createStream registers the first five. Changes made through an override
// are announced to subscribers and stream triggers as the store's are.

// CodeJSON is the code of an override's answer that is not the expected
// shape.
const CodeJSON = "JSON_ERROR"

// override returns the id of a worker's override of op for a stream, when
// one is registered.
func (m *Module) override(op, streamName string) (string, bool) {
	id := op + "(" + streamName + ")"
	return id, m.h.Engine.HasFunction(id)
}

// callOverride calls an override with in; a JSON null answer is no result.
func (m *Module) callOverride(ctx context.Context, id string, in any) (json.RawMessage, error) {
	res, err := m.h.Engine.Invoke(ctx, engine.Request{FunctionID: id, Data: mustMarshal(in)})
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(res); len(t) == 0 || bytes.Equal(t, jsonNull) {
		return nil, nil
	}
	return res, nil
}

// overrideFailed is the error of a set, delete or update whose override
// failed or answered nothing: code, then "Failed to <what>: ...".
func overrideFailed(code, what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		//lint:ignore ST1005 iii's wire message, which clients may match
		err = fmt.Errorf("Failed to invoke function: %s: %s", eb.Code, eb.Message)
	}
	return failure(code, what, err)
}

//lint:ignore ST1005 iii's wire message, which clients may match
var errNoResult = errors.New("Function returned no result")

// changeFromOverride decodes an override's {old_value?, new_value} answer.
func changeFromOverride(res json.RawMessage) (old, updated json.RawMessage, eb *protocol.ErrorBody) {
	var out struct {
		OldValue json.RawMessage `json:"old_value"`
		NewValue json.RawMessage `json:"new_value"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return nil, nil, &protocol.ErrorBody{Code: CodeJSON, Message: "Failed to convert result to value: " + err.Error()}
	}
	if len(out.NewValue) == 0 {
		return nil, nil, &protocol.ErrorBody{Code: CodeJSON, Message: "Failed to convert result to value: missing field `new_value`"}
	}
	if bytes.Equal(bytes.TrimSpace(out.OldValue), jsonNull) {
		out.OldValue = nil
	}
	return out.OldValue, out.NewValue, nil
}

// overrideInput is what an override of an item operation gets.
type overrideInput struct {
	StreamName string          `json:"stream_name"`
	GroupID    string          `json:"group_id"`
	ItemID     string          `json:"item_id"`
	Data       json.RawMessage `json:"data,omitempty"`
	Ops        json.RawMessage `json:"ops,omitempty"`
}

// setOverride runs a stream::set or stream::update override and announces
// the change.
func (m *Module) setOverride(ctx context.Context, id, code, what string, in overrideInput) (json.RawMessage, error) {
	res, err := m.callOverride(ctx, id, in)
	if err == nil && res == nil {
		err = errNoResult
	}
	if err != nil {
		return nil, overrideFailed(code, what, err)
	}
	old, updated, eb := changeFromOverride(res)
	if eb != nil {
		return nil, eb
	}
	m.changed(ctx, in.StreamName, in.GroupID, &in.ItemID, createOrUpdate(old), updated)
	return mustMarshal(changeResult{OldValue: orNull(old), NewValue: updated}), nil
}

// deleteOverride runs a stream::delete override and announces the delete
// when something was deleted.
func (m *Module) deleteOverride(ctx context.Context, id string, in overrideInput) (json.RawMessage, error) {
	res, err := m.callOverride(ctx, id, in)
	if err == nil && res == nil {
		err = errNoResult
	}
	if err != nil {
		return nil, overrideFailed(CodeDeleteError, "delete value", err)
	}
	var out struct {
		OldValue json.RawMessage `json:"old_value"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return nil, &protocol.ErrorBody{Code: CodeJSON, Message: "Failed to convert result to value: " + err.Error()}
	}
	old := out.OldValue
	if bytes.Equal(bytes.TrimSpace(old), jsonNull) {
		old = nil
	}
	if old != nil {
		m.changed(ctx, in.StreamName, in.GroupID, &in.ItemID, EventDelete, old)
	}
	return mustMarshal(struct {
		OldValue json.RawMessage `json:"old_value"`
	}{orNull(old)}), nil
}

// readItem is stream::get through an override when there is one, else the
// store; nil means no item.
func (m *Module) readItem(ctx context.Context, streamName, groupID, itemID string) (json.RawMessage, error) {
	if id, ok := m.override("stream::get", streamName); ok {
		return m.callOverride(ctx, id, overrideInput{StreamName: streamName, GroupID: groupID, ItemID: itemID})
	}
	v, err := m.store.get(ctx, streamName, groupID, itemID)
	if err != nil {
		return nil, failure(CodeGetError, "get value", err)
	}
	return v, nil
}

// readGroup is stream::list through an override when there is one, else
// the store.
func (m *Module) readGroup(ctx context.Context, streamName, groupID string) (json.RawMessage, error) {
	if id, ok := m.override("stream::list", streamName); ok {
		return m.callOverride(ctx, id, struct {
			StreamName string `json:"stream_name"`
			GroupID    string `json:"group_id"`
		}{streamName, groupID})
	}
	items, err := m.store.list(ctx, streamName, groupID)
	if err != nil {
		return nil, failure(CodeListError, "get group", err)
	}
	return items, nil
}

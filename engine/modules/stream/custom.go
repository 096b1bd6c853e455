package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/modules/internal/bridge"
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

// target is where an operation goes instead of the store: a worker's
// override on this engine (fn is its id), or the same function (fn) of the
// bridge's remote engine.
type target struct {
	fn     string
	remote *bridge.Remote
}

// override returns where op on a stream goes instead of the store: a
// worker's override of it when one is registered, else the bridge's remote
// engine when there is one.
func (m *Module) override(op, streamName string) (target, bool) {
	id := op + "(" + streamName + ")"
	if m.h.Engine.HasFunction(id) {
		return target{fn: id}, true
	}
	if m.remote != nil {
		return target{fn: op, remote: m.remote}, true
	}
	return target{}, false
}

// callOverride calls an override with in; a JSON null answer is no result.
func (m *Module) callOverride(ctx context.Context, t target, in any) (json.RawMessage, error) {
	if t.remote != nil {
		return t.remote.Call(ctx, t.fn, in)
	}
	res, err := m.h.Engine.Invoke(ctx, engine.Request{FunctionID: t.fn, Data: mustMarshal(in)})
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

// changeFromOverride decodes an override's {old_value?, new_value,
// errors?} answer; old_value null is nil.
func changeFromOverride(res json.RawMessage) (changeResult, *protocol.ErrorBody) {
	var out struct {
		OldValue json.RawMessage `json:"old_value"`
		NewValue json.RawMessage `json:"new_value"`
		Errors   json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return changeResult{}, &protocol.ErrorBody{Code: CodeJSON, Message: "Failed to convert result to value: " + err.Error()}
	}
	if len(out.NewValue) == 0 {
		return changeResult{}, &protocol.ErrorBody{Code: CodeJSON, Message: "Failed to convert result to value: missing field `new_value`"}
	}
	if bytes.Equal(bytes.TrimSpace(out.OldValue), jsonNull) {
		out.OldValue = nil
	}
	ch := changeResult{OldValue: out.OldValue, NewValue: out.NewValue}
	if len(out.Errors) > 0 && !bytes.Equal(bytes.TrimSpace(out.Errors), jsonNull) {
		ch.Errors = out.Errors // an update's op errors, passed on
	}
	return ch, nil
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
func (m *Module) setOverride(ctx context.Context, t target, code, what string, in overrideInput) (json.RawMessage, error) {
	res, err := m.callOverride(ctx, t, in)
	if err == nil && res == nil {
		err = errNoResult
	}
	if err != nil {
		return nil, overrideFailed(code, what, err)
	}
	ch, eb := changeFromOverride(res)
	if eb != nil {
		return nil, eb
	}
	m.changed(ctx, in.StreamName, in.GroupID, &in.ItemID, createOrUpdate(ch.OldValue), ch.NewValue)
	ch.OldValue = orNull(ch.OldValue)
	return mustMarshal(ch), nil
}

// deleteOverride runs a stream::delete override and announces the delete
// when something was deleted.
func (m *Module) deleteOverride(ctx context.Context, t target, in overrideInput) (json.RawMessage, error) {
	res, err := m.callOverride(ctx, t, in)
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
	if t, ok := m.override("stream::get", streamName); ok {
		return m.callOverride(ctx, t, overrideInput{StreamName: streamName, GroupID: groupID, ItemID: itemID})
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
	if t, ok := m.override("stream::list", streamName); ok {
		return m.callOverride(ctx, t, struct {
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

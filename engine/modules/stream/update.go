package stream

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/modules/internal/updateops"
)

// fnUpdate is stream::update: {stream_name, group_id, item_id, ops} →
// {"old_value","new_value","errors"?}, like state::update. An op that
// cannot be applied is skipped and reported in errors; the rest apply.
func (m *Module) fnUpdate(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	const fn = "stream::update"
	var in struct {
		itemRef
		Ops json.RawMessage `json:"ops"`
	}
	if eb := decodeInput(fn, call.Data, &in); eb != nil {
		return nil, eb
	}
	if eb := in.check(fn); eb != nil {
		return nil, eb
	}
	if len(in.Ops) == 0 {
		return nil, badInput(fn, "missing field `ops` (a list of update operations)")
	}
	ops, err := updateops.ParseOps(in.Ops)
	if err != nil {
		return nil, badInput(fn, "ops: %v", err)
	}
	if t, ok := m.override(fn, *in.StreamName); ok {
		return m.setOverride(ctx, t, CodeUpdateError, "update value", overrideInput{
			StreamName: *in.StreamName, GroupID: *in.GroupID, ItemID: *in.ItemID, Ops: in.Ops})
	}
	var opErrs []updateops.OpError
	old, updated, err := m.store.update(ctx, *in.StreamName, *in.GroupID, *in.ItemID,
		func(old json.RawMessage) (json.RawMessage, error) {
			doc, errs, err := updateops.Apply(old, ops)
			opErrs = errs
			return doc, err
		})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, failure(CodeUpdateError, "update value", err)
	}
	m.changed(ctx, *in.StreamName, *in.GroupID, in.ItemID, createOrUpdate(old), updated)
	res := changeResult{OldValue: orNull(old), NewValue: updated}
	if len(opErrs) > 0 {
		res.Errors = opErrs
	}
	return mustMarshal(res), nil
}

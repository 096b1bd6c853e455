package stream_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

// TestCustomBackendErrors: an override's failure or malformed answer is
// reported as iii does (the operation's code, or JSON_ERROR), get and list
// errors pass through unchanged, and nothing is announced for a failed
// change. Removing the override returns the stream to the store.
func TestCustomBackendErrors(t *testing.T) {
	ctx := enginetest.Context(t)
	te := startEngine(t, ctx, storetest.Mini(t).URL, "")
	reg := func(id string, h engine.Handler) {
		t.Helper()
		if err := te.eng().RegisterFunction("custom-backend", engine.Function{ID: id, Handler: h}); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	answer := func(s string) engine.Handler {
		return func(context.Context, *engine.Call) (json.RawMessage, error) { return json.RawMessage(s), nil }
	}
	fail := func(code, msg string) engine.Handler {
		return func(context.Context, *engine.Call) (json.RawMessage, error) {
			return nil, &protocol.ErrorBody{Code: code, Message: msg}
		}
	}
	var gotInput json.RawMessage
	reg("stream::set(bad)", fail("DISK_FULL", "no room"))
	reg("stream::update(bad)", answer(`null`))
	reg("stream::delete(bad)", answer(`[1,2]`))
	reg("stream::get(bad)", fail("NOPE", "not today"))
	reg("stream::list(bad)", fail("LIST_NOPE", "no list"))
	reg("stream::set(odd)", answer(`{"old_value":1}`))
	reg("stream::list_groups(odd)", func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
		gotInput = c.Data
		return json.RawMessage(`["x"]`), nil
	})

	item := map[string]any{"stream_name": "bad", "group_id": "g", "item_id": "i"}
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{k: v}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		fn       string
		in       any
		code     string
		contains string
	}{
		{"stream::set", with(item, "data", 1), "STREAM_SET_ERROR", "Failed to set value: Failed to invoke function: DISK_FULL: no room"},
		{"stream::update", with(item, "ops", []any{map[string]any{"type": "set", "path": "a", "value": 1}}), "STREAM_UPDATE_ERROR", "Failed to update value: Function returned no result"},
		{"stream::delete", item, "JSON_ERROR", "Failed to convert result to value"},
		{"stream::get", item, "NOPE", "not today"},
		{"stream::list", map[string]any{"stream_name": "bad", "group_id": "g"}, "LIST_NOPE", "no list"},
		{"stream::set", map[string]any{"stream_name": "odd", "group_id": "g", "item_id": "i", "data": 1}, "JSON_ERROR", "missing field `new_value`"},
	} {
		_, err := te.callErr(ctx, tc.fn, tc.in)
		if errCode(err) != tc.code || !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("%s(%s): error %v, want code %s containing %q", tc.fn, mustJSON(t, tc.in), err, tc.code, tc.contains)
		}
	}
	assertJSON(t, "list_groups through the override", te.call(t, ctx, "stream::list_groups", map[string]any{"stream_name": "odd", "extra": 1}), `["x"]`)
	assertJSON(t, "the override's input", gotInput, `{"stream_name":"odd"}`)

	// Without the override the store serves the stream again.
	te.eng().UnregisterFunction("stream::set(odd)")
	assertJSON(t, "set after the override went", te.call(t, ctx, "stream::set", map[string]any{"stream_name": "odd", "group_id": "g", "item_id": "i", "data": 2}),
		`{"old_value":null,"new_value":2}`)
	assertJSON(t, "nothing stored for bad", te.call(t, ctx, "stream::list_all", nil), `{"stream":[{"id":"odd","groups":["g"]}],"count":1}`)
}

package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// call invokes fn with input and returns its result, or the error code.
func call(ctx context.Context, t *testing.T, eng *engine.Engine, fn, input string) (string, string) {
	t.Helper()
	res, err := eng.Invoke(ctx, engine.Request{FunctionID: fn, Data: json.RawMessage(input)})
	if err != nil {
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) {
			t.Fatalf("%s %s: %v", fn, input, err)
		}
		return "", eb.Code + ": " + eb.Message
	}
	return string(res), ""
}

func TestFunctions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		eng := enginetest.StartModule(t, ctx, b.URL, "iii-state", "").Engine()
		steps := []struct{ fn, in, want string }{
			{FnGet, `{"scope":"users","key":"u1"}`, ``},
			{FnListGroups, `{}`, `{"groups":[]}`},
			{FnSet, `{"scope":"users","key":"u1","value":{"name":"A"}}`, `{"old_value":null,"new_value":{"name":"A"}}`},
			{FnSet, `{"scope":"users","key":"u1","data": {"name" : "B"}}`, `{"old_value":{"name":"A"},"new_value":{"name":"B"}}`},
			{FnGet, `{"scope":"users","key":"u1"}`, `{"name":"B"}`},
			{FnSet, `{"scope":"users","key":"u0","value":[1,"<&>"]}`, `{"old_value":null,"new_value":[1,"<&>"]}`},
			{FnSet, `{"scope":"users","key":"nil","value":null}`, `{"old_value":null,"new_value":null}`},
			{FnSet, `{"scope":"orders","key":"o1","value":5}`, `{"old_value":null,"new_value":5}`},
			{FnList, `{"scope":"users"}`, `[null,[1,"<&>"],{"name":"B"}]`},
			{FnList, `{"scope":"nobody"}`, `[]`},
			{FnListGroups, `{}`, `{"groups":["orders","users"]}`},
			{FnUpdate, `{"scope":"users","key":"u2","ops":[{"type":"set","path":"name","value":"C"},{"type":"increment","path":"visits","by":1}]}`,
				`{"old_value":null,"new_value":{"name":"C","visits":1}}`},
			{FnUpdate, `{"scope":"users","key":"u2","ops":[{"type":"increment","path":"visits","by":2},{"type":"increment","path":"name","by":1},{"type":"append","path":"tags","value":"x"},{"type":"merge","path":"profile","value":{"age":3}},{"type":"remove","path":"name"}]}`,
				`{"old_value":{"name":"C","visits":1},"new_value":{"profile":{"age":3},"tags":"x","visits":3},"errors":[{"op_index":1,"code":"increment.not_number","message":"expected a number at path \"name\", got a string"}]}`},
			{FnUpdate, `{"scope":"users","key":"u2","ops":[{"type":"decrement","path":"profile.age","by":1},{"type":"set","path":"a.b","value":true}]}`,
				`{"old_value":{"profile":{"age":3},"tags":"x","visits":3},"new_value":{"a":{"b":true},"profile":{"age":2},"tags":"x","visits":3}}`},
			{FnGet, `{"scope":"users","key":"u2"}`, `{"a":{"b":true},"profile":{"age":2},"tags":"x","visits":3}`},
			{FnDelete, `{"scope":"users","key":"u1"}`, `{"name":"B"}`},
			{FnDelete, `{"scope":"users","key":"u1"}`, ``},
			{FnGet, `{"scope":"users","key":"u1"}`, ``},
			{FnDelete, `{"scope":"orders","key":"o1"}`, `5`},
			{FnListGroups, `{}`, `{"groups":["users"]}`},
		}
		for i, s := range steps {
			got, code := call(ctx, t, eng, s.fn, s.in)
			if code != "" || got != s.want {
				t.Errorf("step %d: %s %s = %s %s, want %s", i, s.fn, s.in, got, code, s.want)
			}
		}
	})
}

func TestInputErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state", "").Engine()
	tests := []struct{ fn, in, want string }{
		{FnSet, `{"key":"k","value":1}`, "deserialization_error: state::set: scope is required"},
		{FnSet, `{"scope":"s","value":1}`, "deserialization_error: state::set: key is required"},
		{FnSet, `{"scope":"s","key":"k"}`, "deserialization_error: state::set: value is required"},
		{FnSet, `{"scope":1,"key":"k","value":1}`, "deserialization_error: state::set: json: cannot unmarshal"},
		{FnSet, `"s"`, "deserialization_error: state::set: json: cannot unmarshal string"},
		{FnGet, `{"scope":"s"}`, "deserialization_error: state::get: key is required"},
		{FnGet, `null`, "deserialization_error: state::get: scope is required"},
		{FnDelete, `{"key":"k"}`, "deserialization_error: state::delete: scope is required"},
		{FnList, `{}`, "deserialization_error: state::list: scope is required"},
		{FnUpdate, `{"scope":"s","key":"k"}`, "deserialization_error: state::update: ops is required"},
		{FnUpdate, `{"scope":"s","key":"k","ops":{}}`, "deserialization_error: state::update: updateops: invalid op: ops must be a list"},
		{FnUpdate, `{"scope":"s","key":"k","ops":[{"type":"set"},{"type":"bump"}]}`, `deserialization_error: state::update: ops[1]: updateops: invalid op: unknown type "bump"`},
	}
	for _, tt := range tests {
		got, code := call(ctx, t, eng, tt.fn, tt.in)
		if !strings.HasPrefix(code, tt.want) {
			t.Errorf("%s %s = %s %q, want error %q", tt.fn, tt.in, got, code, tt.want)
		}
	}
	// Nothing was written by the failed calls.
	if got, _ := call(ctx, t, eng, FnListGroups, `{}`); got != `{"groups":[]}` {
		t.Errorf("groups after failed calls: %s, want none", got)
	}
}

func TestMaxValueBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state", "{max_value_bytes: 16}").Engine()
	if _, code := call(ctx, t, eng, FnSet, `{"scope":"s","key":"k","value":{"a": "01234567"}}`); code != "" {
		t.Fatalf("set of 16 bytes: %s", code)
	}
	if _, code := call(ctx, t, eng, FnSet, `{"scope":"s","key":"k","value":{"a":"012345678"}}`); !strings.HasPrefix(code, "VALUE_TOO_LARGE: state::set: value is 17 bytes") {
		t.Errorf("set of 17 bytes: %q, want VALUE_TOO_LARGE", code)
	}
	if _, code := call(ctx, t, eng, FnUpdate, `{"scope":"s","key":"k","ops":[{"type":"append","path":"a","value":"x"}]}`); !strings.HasPrefix(code, "VALUE_TOO_LARGE: state::update") {
		t.Errorf("update to 17 bytes: %q, want VALUE_TOO_LARGE", code)
	}
	if got, _ := call(ctx, t, eng, FnGet, `{"scope":"s","key":"k"}`); got != `{"a":"01234567"}` {
		t.Errorf("value after refused writes: %s, want the first one", got)
	}
}

func TestConcurrentUpdatesAreAtomic(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		eng := enginetest.StartModule(t, ctx, b.URL, "iii-state", "").Engine()
		const n = 40
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for i := range n {
			wg.Add(1)
			// Exits when its update returns.
			go func() {
				defer wg.Done()
				_, err := eng.Invoke(ctx, engine.Request{FunctionID: FnUpdate, Data: json.RawMessage(
					fmt.Sprintf(`{"scope":"c","key":"k","ops":[{"type":"increment","path":"n","by":1},{"type":"append","path":"seen","value":%d}]}`, i))})
				if err != nil {
					errs <- err.Error()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("update: %s", e)
		}
		got, _ := call(ctx, t, eng, FnGet, `{"scope":"c","key":"k"}`)
		var v struct {
			N    int   `json:"n"`
			Seen []int `json:"seen"`
		}
		if err := json.Unmarshal([]byte(got), &v); err != nil || v.N != n || len(v.Seen) != n {
			t.Errorf("after %d concurrent updates: %s, want n=%d and %d entries in seen", n, got, n, n)
		}
	})
}

type recorded struct {
	fn   string
	data string
}

// recorders registers in-process functions that report their calls on one
// channel; functions named cond::false / cond::fail are condition functions
// returning false / failing.
func recorders(t *testing.T, eng *engine.Engine, ids ...string) <-chan recorded {
	t.Helper()
	ch := make(chan recorded, 256)
	for _, id := range ids {
		err := eng.RegisterFunction("test", engine.Function{ID: id, Handler: func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
			ch <- recorded{id, string(c.Data)}
			switch id {
			case "cond::false":
				return json.RawMessage(`false`), nil
			case "cond::fail":
				return nil, &protocol.ErrorBody{Code: "boom", Message: "condition failed"}
			}
			return json.RawMessage(`true`), nil
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ch
}

func bind(ctx context.Context, t *testing.T, eng *engine.Engine, fn, cfg string) {
	t.Helper()
	if _, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: fn, Config: json.RawMessage(cfg)}); err != nil {
		t.Fatalf("bind %s %s: %v", fn, cfg, err)
	}
}

// collect waits for want calls and returns them grouped by function (one
// event each, in arrival order).
func collect(ctx context.Context, t *testing.T, ch <-chan recorded, want int) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for range want {
		select {
		case r := <-ch:
			got[r.fn] = append(got[r.fn], r.data)
		case <-ctx.Done():
			t.Fatalf("got %v, want %d calls", got, want)
		}
	}
	return got
}

func TestTriggers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		eng := enginetest.StartModule(t, ctx, b.URL, "iii-state", "").Engine()
		calls := recorders(t, eng, "on::all", "on::users", "on::u1", "on::key-u1", "on::cond-true", "on::cond-false", "on::cond-fail",
			"cond::true", "cond::false", "cond::fail")
		bind(ctx, t, eng, "on::all", `{}`)
		bind(ctx, t, eng, "on::users", `{"scope":"users"}`)
		bind(ctx, t, eng, "on::u1", `{"scope":"users","key":"u1"}`)
		bind(ctx, t, eng, "on::key-u1", `{"key":"u1"}`)
		bind(ctx, t, eng, "on::cond-true", `{"scope":"users","condition_function_id":"cond::true"}`)
		bind(ctx, t, eng, "on::cond-false", `{"scope":"users","condition_function_id":"cond::false"}`)
		bind(ctx, t, eng, "on::cond-fail", `{"scope":"users","condition_function_id":"cond::fail"}`)
		if _, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: "x", Config: json.RawMessage(`{"scope":5}`)}); err == nil {
			t.Error("binding with scope 5 accepted")
		}

		created := `{"type":"state","event_type":"state:created","scope":"users","key":"u1","old_value":null,"new_value":{"n":1}}`
		updated := `{"type":"state","event_type":"state:updated","scope":"users","key":"u1","old_value":{"n":1},"new_value":{"n":2}}`
		deleted := `{"type":"state","event_type":"state:deleted","scope":"users","key":"u1","old_value":{"n":2},"new_value":null}`
		steps := []struct {
			fn, in, event string
			want          []string // functions called with event
		}{
			{FnSet, `{"scope":"users","key":"u1","value":{"n":1}}`, created,
				[]string{"on::all", "on::users", "on::u1", "on::key-u1", "on::cond-true", "cond::true", "cond::false", "cond::fail"}},
			{FnUpdate, `{"scope":"users","key":"u1","ops":[{"type":"increment","path":"n","by":1}]}`, updated,
				[]string{"on::all", "on::users", "on::u1", "on::key-u1", "on::cond-true", "cond::true", "cond::false", "cond::fail"}},
			{FnDelete, `{"scope":"users","key":"u1"}`, deleted,
				[]string{"on::all", "on::users", "on::u1", "on::key-u1", "on::cond-true", "cond::true", "cond::false", "cond::fail"}},
			{FnSet, `{"scope":"orders","key":"u1","value":1}`,
				`{"type":"state","event_type":"state:created","scope":"orders","key":"u1","old_value":null,"new_value":1}`,
				[]string{"on::all", "on::key-u1"}},
			{FnSet, `{"scope":"users","key":"u9","value":true}`,
				`{"type":"state","event_type":"state:created","scope":"users","key":"u9","old_value":null,"new_value":true}`,
				[]string{"on::all", "on::users", "on::cond-true", "cond::true", "cond::false", "cond::fail"}},
		}
		for i, s := range steps {
			if _, code := call(ctx, t, eng, s.fn, s.in); code != "" {
				t.Fatalf("step %d: %s: %s", i, s.fn, code)
			}
			got := collect(ctx, t, calls, len(s.want))
			for _, fn := range s.want {
				if len(got[fn]) != 1 || got[fn][0] != s.event {
					t.Errorf("step %d (%s %s): %s got %v, want the event %s", i, s.fn, s.in, fn, got[fn], s.event)
				}
			}
		}
		// Deleting a missing key fires nothing; then a last event proves
		// nothing else was queued for the filtered or skipped bindings.
		call(ctx, t, eng, FnDelete, `{"scope":"users","key":"nope"}`)
		call(ctx, t, eng, FnSet, `{"scope":"end","key":"end","value":0}`)
		if got := collect(ctx, t, calls, 1); len(got["on::all"]) != 1 || !strings.Contains(got["on::all"][0], `"scope":"end"`) {
			t.Errorf("after the steps: %v, want only on::all with the end event", got)
		}
		select {
		case r := <-calls:
			t.Errorf("unexpected call %s %s", r.fn, r.data)
		default:
		}
	})
}

func TestTriggersDisabled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state", "{triggers_enabled: false}")
	eng := srv.Engine()
	calls := recorders(t, eng, "on::all")
	bind(ctx, t, eng, "on::all", `{}`)
	if _, code := call(ctx, t, eng, FnSet, `{"scope":"s","key":"k","value":1}`); code != "" {
		t.Fatal(code)
	}
	mod, _ := srv.Modules().Get("state")
	if m := mod.(*Module); m.ps != nil {
		t.Error("event subscription open with triggers disabled")
	}
	select {
	case r := <-calls:
		t.Errorf("trigger fired with triggers disabled: %+v", r)
	default:
	}
}

// TestEventsReachOtherEngines: a change on engine A fires the bindings of
// engine B (through Redis) and those of A, each once.
func TestEventsReachOtherEngines(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a, bSrv := enginetest.StartModule(t, ctx, b.URL, "iii-state", "").Engine(), enginetest.StartModule(t, ctx, b.URL, "iii-state", "").Engine()
		onA := recorders(t, a, "on::a")
		onB := recorders(t, bSrv, "on::b")
		bind(ctx, t, a, "on::a", `{"scope":"shared"}`)
		bind(ctx, t, bSrv, "on::b", `{"scope":"shared"}`)
		for i, eng := range []*engine.Engine{a, bSrv, a} {
			if _, code := call(ctx, t, eng, FnSet, fmt.Sprintf(`{"scope":"shared","key":"k","value":%d}`, i)); code != "" {
				t.Fatal(code)
			}
		}
		for name, ch := range map[string]<-chan recorded{"engine A": onA, "engine B": onB} {
			got := collect(ctx, t, ch, 3)
			for _, data := range got[strings.Replace(strings.ToLower(name), "engine ", "on::", 1)] {
				if !strings.Contains(data, `"scope":"shared"`) {
					t.Errorf("%s got %s", name, data)
				}
			}
		}
		// Both engines' lists agree: the store is shared.
		ga, _ := call(ctx, t, a, FnGet, `{"scope":"shared","key":"k"}`)
		gb, _ := call(ctx, t, bSrv, FnGet, `{"scope":"shared","key":"k"}`)
		if ga != "2" || gb != "2" {
			t.Errorf("get on A = %s, on B = %s; want 2 on both", ga, gb)
		}
		// A last change only on B's side proves no event was delivered twice.
		call(ctx, t, bSrv, FnSet, `{"scope":"shared","key":"last","value":0}`)
		for name, ch := range map[string]<-chan recorded{"engine A": onA, "engine B": onB} {
			if got := collect(ctx, t, ch, 1); !strings.Contains(fmt.Sprint(got), `"key":"last"`) {
				t.Errorf("%s: next call %v, want the event of key last (an earlier event was delivered twice)", name, got)
			}
		}
	})
}

func TestConfigAcceptsIIIAdapter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-state", "{adapter: {name: kv, config: {store_method: file_based, file_path: ./data}}, save_interval_ms: 5000}").Engine()
	if got, code := call(ctx, t, eng, FnSet, `{"scope":"s","key":"k","value":1}`); code != "" {
		t.Errorf("set: %s %s", got, code)
	}
}

func TestConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := storetest.Mini(t).URL
	tests := []struct{ config, want string }{
		{"{max_value_byte: 5}", "config.yaml:5"},
		{"{max_value_byte: 5}", "max_value_byte"},
		{"{triggers_enabled: yes please}", "want a boolean"},
		{"{max_value_bytes: -1}", "max_value_bytes must be 0 (no limit) or positive"},
	}
	for _, tt := range tests {
		err := enginetest.TryStart(ctx, enginetest.ModuleConfig(url, "StateModule", tt.config))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("config %s: error %v, want one containing %q", tt.config, err, tt.want)
		}
	}
}

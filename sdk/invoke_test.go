package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
)

type order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

func TestInvoke(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	handlers := map[string]Handler{
		"ok": func(_ context.Context, in json.RawMessage) (any, error) {
			return map[string]json.RawMessage{"echo": in}, nil
		},
		"nil": func(context.Context, json.RawMessage) (any, error) { return nil, nil },
		"fail": func(context.Context, json.RawMessage) (any, error) {
			return nil, errors.New("card declined")
		},
		"coded": func(context.Context, json.RawMessage) (any, error) {
			return nil, fmt.Errorf("charging: %w", Errorf("FORBIDDEN", "not your card"))
		},
		"panic": func(context.Context, json.RawMessage) (any, error) { panic("kaboom") },
		"unencodable": func(context.Context, json.RawMessage) (any, error) {
			return func() {}, nil
		},
		"raw":       func(_ context.Context, in json.RawMessage) (any, error) { return in, nil },
		"rawspaced": func(context.Context, json.RawMessage) (any, error) { return json.RawMessage(` { "a" : [1, 2] } `), nil },
		"rawbad":    func(context.Context, json.RawMessage) (any, error) { return json.RawMessage(`{"a":`), nil },
		"typed": Typed(func(_ context.Context, o order) (order, error) {
			o.Total *= 2
			return o, nil
		}),
	}
	for id, h := range handlers {
		if err := w.RegisterFunction(id, h); err != nil {
			t.Fatalf("RegisterFunction(%s): %v", id, err)
		}
	}

	tests := []struct {
		fn, data   string
		wantResult string // compared when wantCode is ""
		wantCode   string
		wantMsg    string // substring
	}{
		{fn: "ok", data: `{"a":1}`, wantResult: `{"echo":{"a":1}}`},
		{fn: "ok", data: `null`, wantResult: `{"echo":null}`},
		{fn: "nil", data: `{}`, wantResult: ``},
		{fn: "fail", data: `{}`, wantCode: CodeInvocationFailed, wantMsg: "card declined"},
		{fn: "coded", data: `{}`, wantCode: "FORBIDDEN", wantMsg: "not your card"},
		{fn: "panic", data: `{}`, wantCode: CodeInvocationFailed, wantMsg: "panic: kaboom"},
		{fn: "unencodable", data: `{}`, wantCode: CodeSerialization},
		{fn: "raw", data: `{"a":[1,"x"]}`, wantResult: `{"a":[1,"x"]}`},
		{fn: "rawspaced", data: `{}`, wantResult: `{"a":[1,2]}`},
		{fn: "rawbad", data: `{}`, wantCode: CodeSerialization, wantMsg: "invalid JSON"},
		{fn: "typed", data: `{"id":"o1","total":21,"_caller_worker_id":"x"}`, wantResult: `{"id":"o1","total":42}`},
		{fn: "typed", data: `null`, wantResult: `{"id":"","total":0}`},
		{fn: "typed", data: `[1,2]`, wantCode: CodeDeserialization},
		{fn: "missing", data: `{}`, wantCode: CodeFunctionNotFound, wantMsg: "Function missing not found"},
	}
	for _, tt := range tests {
		t.Run(tt.fn+" "+tt.data, func(t *testing.T) {
			id := fc.invoke(tt.fn, tt.data)
			r := resultFor(ctx, t, fc, id)
			if r.FunctionID != tt.fn {
				t.Errorf("result function_id = %q, want %q", r.FunctionID, tt.fn)
			}
			if tt.wantCode == "" {
				if r.Error != nil || string(r.Result) != tt.wantResult {
					t.Errorf("invoke %s(%s): got result %s error %v, want result %s", tt.fn, tt.data, r.Result, r.Error, tt.wantResult)
				}
				return
			}
			if r.Error == nil || r.Error.Code != tt.wantCode || !strings.Contains(r.Error.Message, tt.wantMsg) {
				t.Errorf("invoke %s(%s): got error %+v, want code %s with %q", tt.fn, tt.data, r.Error, tt.wantCode, tt.wantMsg)
			}
			if tt.fn == "panic" && !strings.Contains(r.Error.Stacktrace, "goroutine") {
				t.Errorf("panic result has no stack trace: %q", r.Error.Stacktrace)
			}
		})
	}
}

func TestInvokeContext(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	got := make(chan Invocation, 1)
	err := w.RegisterFunction("inspect", func(ctx context.Context, _ json.RawMessage) (any, error) {
		inv, ok := InvocationFromContext(ctx)
		if !ok {
			return nil, errors.New("no invocation in ctx")
		}
		if FunctionID(ctx) != inv.FunctionID || InvocationID(ctx) != inv.InvocationID ||
			Traceparent(ctx) != inv.Traceparent || Baggage(ctx) != inv.Baggage || string(Metadata(ctx)) != string(inv.Metadata) {
			return nil, errors.New("accessors disagree with InvocationFromContext")
		}
		got <- inv
		return "ok", nil
	})
	if err != nil {
		t.Fatalf("RegisterFunction: %v", err)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	fc.send(protocol.InvokeFunction{
		InvocationID: "6f1c2a9e-2f7c-4a7e-9a52-0d1b1c3e5f70", FunctionID: "inspect", Data: []byte(`{}`),
		Traceparent: tp, Baggage: "k=v", Metadata: []byte(`{"source":"cron"}`),
	})
	r := resultFor(ctx, t, fc, "6f1c2a9e-2f7c-4a7e-9a52-0d1b1c3e5f70")
	if r.Error != nil {
		t.Fatalf("handler failed: %+v", r.Error)
	}
	if r.Traceparent != tp || r.Baggage != "k=v" {
		t.Errorf("result trace context: traceparent %q baggage %q, want %q and k=v", r.Traceparent, r.Baggage, tp)
	}
	inv := <-got
	want := Invocation{FunctionID: "inspect", InvocationID: "6f1c2a9e-2f7c-4a7e-9a52-0d1b1c3e5f70",
		Traceparent: tp, Baggage: "k=v", Metadata: json.RawMessage(`{"source":"cron"}`)}
	if inv.FunctionID != want.FunctionID || inv.InvocationID != want.InvocationID || inv.Traceparent != want.Traceparent ||
		inv.Baggage != want.Baggage || string(inv.Metadata) != string(want.Metadata) {
		t.Errorf("invocation in ctx = %+v, want %+v", inv, want)
	}
	if _, ok := InvocationFromContext(context.Background()); ok {
		t.Errorf("InvocationFromContext(Background) reported an invocation")
	}
}

// Handlers run concurrently: the first call only finishes once the second
// has started.
func TestInvokeConcurrent(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	second := make(chan struct{})
	var once sync.Once
	err := w.RegisterFunction("wait", func(ctx context.Context, in json.RawMessage) (any, error) {
		if string(in) == `"second"` {
			once.Do(func() { close(second) })
			return "second", nil
		}
		select {
		case <-second:
			return "first", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	if err != nil {
		t.Fatalf("RegisterFunction: %v", err)
	}
	first := fc.invoke("wait", `"first"`)
	fc.invoke("wait", `"second"`)
	if r := resultFor(ctx, t, fc, first); string(r.Result) != `"first"` {
		t.Errorf("first call: got %s %v, want \"first\"", r.Result, r.Error)
	}
}

// A frame far above coder/websocket's default 32 KiB read limit.
func TestInvokeLargePayload(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)
	err := w.RegisterFunction("len", Typed(func(_ context.Context, s string) (int, error) { return len(s), nil }))
	if err != nil {
		t.Fatalf("RegisterFunction: %v", err)
	}
	big := strings.Repeat("x", 4<<20)
	id := fc.invoke("len", `"`+big+`"`)
	if r := resultFor(ctx, t, fc, id); string(r.Result) != fmt.Sprint(len(big)) {
		t.Errorf("len of a 4 MiB string: got %s %v, want %d", r.Result, r.Error, len(big))
	}
}

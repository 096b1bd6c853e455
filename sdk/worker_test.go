package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
)

func TestConnectHandshake(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, err := Connect(ctx, fe.url(), WithName("billing"), WithWorkerDescription("charges cards"),
		WithBearerToken("s3cret"), WithHeader("X-Team", "payments"))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer func() {
		if err := w.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	fc := fe.conn(ctx, t)
	if got := w.ID(); got != fc.id {
		t.Errorf("ID() = %q, want the engine's %q", got, fc.id)
	}
	h := <-fe.headers
	if got := h.Get("Authorization"); got != "Bearer s3cret" {
		t.Errorf("Authorization header = %q, want %q", got, "Bearer s3cret")
	}
	if got := h.Get("X-Team"); got != "payments" {
		t.Errorf("X-Team header = %q, want payments", got)
	}

	inv := expect[protocol.InvokeFunction](ctx, t, fc)
	if inv.FunctionID != registerWorkerFunction || inv.InvocationID != "" ||
		inv.Action == nil || inv.Action.Type != protocol.ActionVoid {
		t.Fatalf("metadata call: got %+v, want a void call of %s without invocation ID", inv, registerWorkerFunction)
	}
	var meta struct {
		Runtime, Version, Name, Description, OS string
		PID                                     int
	}
	if err := json.Unmarshal(inv.Data, &meta); err != nil {
		t.Fatalf("metadata %s: %v", inv.Data, err)
	}
	if meta.Runtime != "go" || meta.Version != Version || meta.Name != "billing" ||
		meta.Description != "charges cards" || meta.PID != os.Getpid() || meta.OS == "" {
		t.Errorf("metadata = %s, want runtime go, version %s, name billing, pid %d", inv.Data, Version, os.Getpid())
	}
}

func TestConnectErrors(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	fe.reject.Store(http.StatusUnauthorized)
	tests := []struct {
		name string
		url  string
		opts []Option
		want string
	}{
		{"bad scheme", "ftp://localhost:1", nil, "scheme"},
		{"no host", "ws://", nil, "host"},
		{"bad timeout", fe.url(), []Option{WithInvocationTimeout(-1)}, "timeout"},
		{"bad backoff", fe.url(), []Option{WithReconnectBackoff(time.Second, time.Millisecond)}, "backoff"},
		{"rejected upgrade", fe.url(), nil, "401"},
		{"nothing listening", "ws://127.0.0.1:1", nil, "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Connect(ctx, tt.url, tt.opts...)
			if err == nil {
				_ = w.Close(ctx)
				t.Fatalf("Connect(%q): no error, want one mentioning %q", tt.url, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Connect(%q): error %q, want it to mention %q", tt.url, err, tt.want)
			}
		})
	}
}

func TestConnectWaitsForRegistered(t *testing.T) {
	fe := newFakeEngine(t)
	fe.silent.Store(true)
	ctx, cancel := context.WithTimeout(testctx.New(t), 100*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, fe.url())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to an engine that never registers the worker: got %v, want DeadlineExceeded", err)
	}
}

func TestRegisterMessages(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)
	noop := func(context.Context, json.RawMessage) (any, error) { return nil, nil }

	if err := w.RegisterFunction("orders::create", noop,
		WithDescription("creates an order"),
		WithRequestFormat(map[string]any{"type": "object"}),
		WithMetadata(map[string]any{"internal": true})); err != nil {
		t.Fatalf("RegisterFunction: %v", err)
	}
	rf := expect[protocol.RegisterFunction](ctx, t, fc)
	if rf.ID != "orders::create" || rf.Description != "creates an order" ||
		string(rf.RequestFormat) != `{"type":"object"}` || string(rf.Metadata) != `{"internal":true}` {
		t.Errorf("registerfunction = %+v", rf)
	}

	h, err := w.RegisterTrigger(Trigger{Type: "cron", FunctionID: "orders::create",
		Config: map[string]string{"expression": "* * * * * * *"}, Metadata: map[string]int{"n": 1}})
	if err != nil {
		t.Fatalf("RegisterTrigger: %v", err)
	}
	rt := expect[protocol.RegisterTrigger](ctx, t, fc)
	if rt.ID != h.ID() || rt.TriggerType != "cron" || rt.FunctionID != "orders::create" ||
		string(rt.Config) != `{"expression":"* * * * * * *"}` || string(rt.Metadata) != `{"n":1}` {
		t.Errorf("registertrigger = %+v (handle ID %s)", rt, h.ID())
	}
	if _, err := w.RegisterTrigger(Trigger{Type: "webhook", FunctionID: "orders::create"}); err != nil {
		t.Fatalf("RegisterTrigger without config: %v", err)
	}
	if rt := expect[protocol.RegisterTrigger](ctx, t, fc); string(rt.Config) != `{}` || rt.Metadata != nil {
		t.Errorf("registertrigger without config: config %s metadata %s, want {} and none", rt.Config, rt.Metadata)
	}

	if err := w.RegisterService(Service{ID: "orders", Name: "Orders", ParentServiceID: "shop"}); err != nil {
		t.Fatalf("RegisterService: %v", err)
	}
	if rs := expect[protocol.RegisterService](ctx, t, fc); rs != (protocol.RegisterService{ID: "orders", Name: "Orders", ParentServiceID: "shop"}) {
		t.Errorf("registerservice = %+v", rs)
	}
	if err := w.RegisterTriggerType("webhook", "HTTP webhooks", TriggerProviderFuncs{}); err != nil {
		t.Fatalf("RegisterTriggerType: %v", err)
	}
	if rt := expect[protocol.RegisterTriggerType](ctx, t, fc); rt.ID != "webhook" || rt.Description != "HTTP webhooks" {
		t.Errorf("registertriggertype = %+v", rt)
	}

	if err := h.Unregister(); err != nil {
		t.Fatalf("Unregister trigger: %v", err)
	}
	if ut := expect[protocol.UnregisterTrigger](ctx, t, fc); ut.ID != h.ID() || ut.TriggerType != "cron" {
		t.Errorf("unregistertrigger = %+v, want id %s type cron", ut, h.ID())
	}
	if err := w.UnregisterFunction("orders::create"); err != nil {
		t.Fatalf("UnregisterFunction: %v", err)
	}
	if uf := expect[protocol.UnregisterFunction](ctx, t, fc); uf.ID != "orders::create" {
		t.Errorf("unregisterfunction = %+v", uf)
	}
	if err := w.UnregisterTriggerType("webhook"); err != nil {
		t.Fatalf("UnregisterTriggerType: %v", err)
	}
	if ut := expect[protocol.UnregisterTriggerType](ctx, t, fc); ut.ID != "webhook" {
		t.Errorf("unregistertriggertype = %+v", ut)
	}
}

func TestRegisterErrors(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, _ := connect(ctx, t, fe)
	noop := func(context.Context, json.RawMessage) (any, error) { return nil, nil }
	if err := w.RegisterFunction("a", noop); err != nil {
		t.Fatalf("RegisterFunction(a): %v", err)
	}
	if err := w.RegisterTriggerType("tt", "", TriggerProviderFuncs{}); err != nil {
		t.Fatalf("RegisterTriggerType(tt): %v", err)
	}
	tests := []struct {
		name string
		err  error
		want error // nil: any error
	}{
		{"duplicate function", w.RegisterFunction("a", noop), ErrDuplicate},
		{"empty function id", w.RegisterFunction(" ", noop), nil},
		{"nil handler", w.RegisterFunction("b", nil), nil},
		{"unknown function", w.UnregisterFunction("zzz"), ErrNotRegistered},
		{"duplicate trigger type", w.RegisterTriggerType("tt", "", TriggerProviderFuncs{}), ErrDuplicate},
		{"nil provider", w.RegisterTriggerType("tt2", "", nil), nil},
		{"unknown trigger type", w.UnregisterTriggerType("zzz"), ErrNotRegistered},
		{"unknown trigger", w.UnregisterTrigger("zzz"), ErrNotRegistered},
		{"empty service id", w.RegisterService(Service{}), nil},
		{"bad metadata", w.RegisterFunction("c", noop, WithMetadata(func() {})), nil},
	}
	_, err := w.RegisterTrigger(Trigger{Type: "cron"})
	tests = append(tests, struct {
		name string
		err  error
		want error
	}{"trigger without function", err, nil})
	_, err = w.Trigger(ctx, TriggerRequest{})
	tests = append(tests, struct {
		name string
		err  error
		want error
	}{"trigger without function ID", err, nil})

	for _, tt := range tests {
		if tt.err == nil || (tt.want != nil && !errors.Is(tt.err, tt.want)) {
			t.Errorf("%s: got error %v, want %v", tt.name, tt.err, tt.want)
		}
	}

	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.RegisterFunction("late", noop); !errors.Is(err, ErrClosed) {
		t.Errorf("RegisterFunction after Close: got %v, want ErrClosed", err)
	}
	if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "x"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Trigger after Close: got %v, want ErrClosed", err)
	}
	if _, err := w.Trigger(ctx, TriggerRequest{FunctionID: "x", Action: Void()}); !errors.Is(err, ErrClosed) {
		t.Errorf("void Trigger after Close: got %v, want ErrClosed", err)
	}
	if err := w.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

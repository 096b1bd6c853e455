package sdk

import (
	"context"
	"errors"
	"testing"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/testctx"
)

type providerCall struct {
	op string
	b  TriggerBinding
}

func TestTriggerProvider(t *testing.T) {
	ctx := testctx.New(t)
	fe := newFakeEngine(t)
	w, fc := connect(ctx, t, fe)

	calls := make(chan providerCall, 16)
	p := TriggerProviderFuncs{
		Register: func(_ context.Context, b TriggerBinding) error {
			calls <- providerCall{"register", b}
			switch string(b.Config) {
			case `{"bad":true}`:
				return errors.New("bad config")
			case `{"panic":true}`:
				panic("provider bug")
			}
			return nil
		},
		Unregister: func(_ context.Context, b TriggerBinding) error {
			calls <- providerCall{"unregister", b}
			return nil
		},
	}
	if err := w.RegisterTriggerType("webhook", "webhooks", p); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		msg      protocol.RegisterTrigger
		wantCode string // "" = accepted
	}{
		{"accepted", protocol.RegisterTrigger{ID: "t1", TriggerType: "webhook", FunctionID: "hooks::in",
			Config: []byte(`{"path":"/in"}`), Metadata: []byte(`{"team":"a"}`)}, ""},
		{"rejected", protocol.RegisterTrigger{ID: "t2", TriggerType: "webhook", FunctionID: "hooks::in",
			Config: []byte(`{"bad":true}`)}, CodeTriggerRegistrationFailed},
		{"panicking", protocol.RegisterTrigger{ID: "t3", TriggerType: "webhook", FunctionID: "hooks::in",
			Config: []byte(`{"panic":true}`)}, CodeTriggerRegistrationFailed},
		{"unknown type", protocol.RegisterTrigger{ID: "t4", TriggerType: "smoke-signal", FunctionID: "hooks::in",
			Config: []byte(`{}`)}, CodeTriggerTypeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc.send(tt.msg)
			res := waitFor(ctx, t, fc, func(r protocol.TriggerRegistrationResult) bool { return r.ID == tt.msg.ID })
			if res.TriggerType != tt.msg.TriggerType || res.FunctionID != tt.msg.FunctionID {
				t.Errorf("triggerregistrationresult = %+v, want type %s function %s", res, tt.msg.TriggerType, tt.msg.FunctionID)
			}
			switch {
			case tt.wantCode == "" && res.Error != nil:
				t.Errorf("result error %+v, want success", res.Error)
			case tt.wantCode != "" && (res.Error == nil || res.Error.Code != tt.wantCode):
				t.Errorf("result error %+v, want code %s", res.Error, tt.wantCode)
			}
			if tt.wantCode == CodeTriggerTypeNotFound {
				return
			}
			c := <-calls
			if c.op != "register" || c.b.ID != tt.msg.ID || c.b.Type != "webhook" || c.b.FunctionID != tt.msg.FunctionID ||
				string(c.b.Config) != string(tt.msg.Config) || string(c.b.Metadata) != string(tt.msg.Metadata) {
				t.Errorf("provider got %s %+v, want register of %+v", c.op, c.b, tt.msg)
			}
		})
	}

	// Withdrawing t1 hands the provider the full binding it accepted.
	fc.send(protocol.UnregisterTrigger{ID: "t1", TriggerType: "webhook"})
	select {
	case c := <-calls:
		if c.op != "unregister" || c.b.ID != "t1" || c.b.FunctionID != "hooks::in" || string(c.b.Config) != `{"path":"/in"}` {
			t.Errorf("provider got %s %+v, want unregister of t1 with its config", c.op, c.b)
		}
	case <-ctx.Done():
		t.Fatal("provider not told about unregistertrigger")
	}
}

package memqueue_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/devserver"
	"github.com/iii-workbench/iii/engine/config"
	_ "github.com/iii-workbench/iii/examples/custommodule"
	"github.com/iii-workbench/iii/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCustomModuleServesEnqueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, err := config.Parse("config.yaml", []byte("engine: {port: 0}\nmodules:\n  - class: MemoryQueue\n    config: {capacity: 10}\n"), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := devserver.Start(ctx, devserver.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(ctx)
	w, err := sdk.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	got := make(chan json.RawMessage, 1)
	w.RegisterFunction("mail::send", func(_ context.Context, in json.RawMessage) (any, error) {
		got <- in
		return nil, nil
	})
	receipt, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "mail::send", Payload: map[string]string{"to": "a@b"}, Action: sdk.Enqueue("mail")})
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ MessageReceiptID string }
	if json.Unmarshal(receipt, &r); r.MessageReceiptID == "" {
		t.Errorf("receipt %s", receipt)
	}
	select {
	case in := <-got:
		var m map[string]any
		json.Unmarshal(in, &m)
		if m["to"] != "a@b" {
			t.Errorf("handler got %s", in)
		}
	case <-ctx.Done():
		t.Fatal("queued call never arrived")
	}
}

func TestCustomModuleConfigIsChecked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := config.Parse("config.yaml", []byte("engine: {port: 0}\nmodules:\n  - class: queue.memory\n    config: {capacity: 0}\n"), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if srv, err := devserver.Start(ctx, devserver.Options{Config: cfg}); err == nil {
		srv.Stop(ctx)
		t.Fatal("capacity 0 accepted")
	} else if want := "config.yaml:3: module queue.memory: invalid config: capacity must be at least 1, got 0"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

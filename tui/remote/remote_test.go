package remote

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/watch"
	"github.com/iii-workbench/iii/sdk"
	"github.com/iii-workbench/iii/tui"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRemoteSource attaches to a real engine that requires a token: the
// snapshot and the event stream show another worker and its calls, the
// source's own queries are labelled so the views leave them out, its
// events function is never shown, and a read-only source refuses to
// invoke or control.
func TestRemoteSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eng, err := engine.New(engine.Options{AuthToken: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(eng.Handler())
	defer func() {
		srv.Close()
		eng.Shutdown(context.Background())
	}()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := Dial(dctx, Options{URL: url, Token: "wrong"}); err == nil {
		t.Fatal("a wrong token attached")
	}
	dcancel()
	src, err := Dial(ctx, Options{URL: url, Token: "tok", BatchMS: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	sub := src.Subscribe(1024)
	defer sub.Close()

	w, err := sdk.Connect(ctx, url, sdk.WithName("svc"), sdk.WithBearerToken("tok"), sdk.WithTelemetry(false))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	if err := w.RegisterFunction("svc::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		snap := src.Snapshot()
		found := false
		for _, f := range snap.Functions {
			if strings.HasPrefix(f.ID, FunctionPrefix) {
				t.Fatalf("the snapshot lists the source's own function %s", f.ID)
			}
			found = found || f.ID == "svc::echo"
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("svc::echo never showed in a snapshot: %+v", snap.Functions)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if _, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "svc::echo", Payload: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Query(ctx, tui.FnLogsList, nil); err == nil {
		t.Error("engine::logs::list answered without the observability module")
	}
	var sawCall, sawQuery bool
	for !sawCall || !sawQuery {
		select {
		case ev := <-sub.C():
			switch e := ev.(type) {
			case event.InvocationFinished:
				sawCall = sawCall || e.FunctionID == "svc::echo" && e.Trigger != tui.TriggerQuery
				sawQuery = sawQuery || e.FunctionID == tui.FnLogsList && e.Trigger == tui.TriggerQuery
			case event.FunctionRegistered:
				if strings.HasPrefix(e.FunctionID, FunctionPrefix) {
					t.Errorf("the source's own function was delivered: %+v", e)
				}
			}
		case <-ctx.Done():
			t.Fatalf("events: call %v, labelled query %v", sawCall, sawQuery)
		}
	}
	if _, err := src.Invoke(ctx, "svc::echo", json.RawMessage(`1`)); !errors.Is(err, tui.ErrReadOnly) {
		t.Errorf("read-only Invoke: %v; want ErrReadOnly", err)
	}
	if _, err := src.Control(ctx, "engine::breakpoints::set", json.RawMessage(`{"function_ids":["svc::echo"]}`)); !errors.Is(err, tui.ErrReadOnly) {
		t.Errorf("read-only Control: %v; want ErrReadOnly", err)
	}
	if err := src.Restart(ctx, "svc"); !errors.Is(err, ErrNoProcessControl) {
		t.Errorf("Restart: %v; want ErrNoProcessControl", err)
	}
}

// TestResubscribeResyncs: a batch whose sequence starts again (the engine
// subscribed anew after a reconnect) counts as a drop, so the TUI resyncs.
func TestResubscribeResyncs(t *testing.T) {
	sub := &subscription{ch: make(chan event.Event, 8)}
	deliver := func(seq, dropped uint64) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"seq": seq, "dropped": dropped, "events": []any{}})
		if _, err := sub.deliverAs(b, ""); err != nil {
			t.Fatal(err)
		}
	}
	deliver(1, 0)
	deliver(2, 3)
	if got := sub.Dropped(); got != 3 {
		t.Fatalf("dropped = %d; want the engine's 3", got)
	}
	deliver(1, 0) // a new subscription
	if got := sub.Dropped(); got != 4 {
		t.Fatalf("dropped = %d after a resubscription; want 4", got)
	}
	deliver(2, 2)
	if got := sub.Dropped(); got != 6 {
		t.Fatalf("dropped = %d; want 6 (the new subscription's 2 added)", got)
	}
}

// TestConvertKeepsNamespaces: engine::snapshot's namespaces reach the
// TUI's snapshot (its NAMESPACE columns after a resync).
func TestConvertKeepsNamespaces(t *testing.T) {
	snap := Convert(watch.Snapshot{
		Workers:   []watch.Worker{{ID: "w1", Name: "ledger", Namespace: "accounts"}},
		Functions: []watch.Function{{ID: "ledger::post", WorkerIDs: []string{"w1"}, Workers: []string{"ledger"}, Namespace: "accounts"}},
	})
	if len(snap.Workers) != 1 || snap.Workers[0].Namespace != "accounts" || len(snap.Functions) != 1 || snap.Functions[0].Namespace != "accounts" {
		t.Errorf("Convert = %+v; want the worker and the function in namespace accounts", snap)
	}
}

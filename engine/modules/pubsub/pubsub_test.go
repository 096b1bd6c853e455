package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type received struct {
	data     string
	metadata string
}

// subscribe registers fn on w, bound to topic, recording what it gets.
func subscribe(t *testing.T, w *sdk.Worker, fn, topic string, metadata any) <-chan received {
	t.Helper()
	ch := make(chan received, 16)
	if err := w.RegisterFunction(fn, func(ctx context.Context, in json.RawMessage) (any, error) {
		ch <- received{string(in), string(sdk.Metadata(ctx))}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.RegisterTrigger(sdk.Trigger{Type: TriggerType, FunctionID: fn,
		Config: map[string]any{"topic": topic}, Metadata: metadata}); err != nil {
		t.Fatal(err)
	}
	return ch
}

func expect(ctx context.Context, t *testing.T, ch <-chan received, who, want string) received {
	t.Helper()
	select {
	case r := <-ch:
		if r.data != want {
			t.Errorf("%s got %s, want %s", who, r.data, want)
		}
		return r
	case <-ctx.Done():
		t.Fatalf("%s got nothing, want %s", who, want)
		return received{}
	}
}

// waitBound waits until engine srv has n subscribe bindings delivered to
// the module (SDK registrations are asynchronous).
func waitBound(ctx context.Context, t *testing.T, srv *enginetest.Server, n int) {
	t.Helper()
	mod, _ := srv.Modules().Get("pubsub")
	m := mod.(*Module)
	for {
		m.mu.RLock()
		got := len(m.byID)
		m.mu.RUnlock()
		if got >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d subscribe bindings, want %d", got, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestPublishReachesSubscribersOnBothEngines(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a, bEng := enginetest.StartModule(t, ctx, b.URL, "iii-pubsub", ""), enginetest.StartModule(t, ctx, b.URL, "iii-pubsub", "")
		wa := enginetest.Connect(t, ctx, a.URL(), "sub-a")
		wb := enginetest.Connect(t, ctx, bEng.URL(), "sub-b")
		onA := subscribe(t, wa, "sub::a", "orders", map[string]any{"who": "a"})
		other := subscribe(t, wa, "sub::other", "other", nil)
		onB := subscribe(t, wb, "sub::b", "orders", nil)
		waitBound(ctx, t, a, 2)
		waitBound(ctx, t, bEng, 1)

		pub := enginetest.Connect(t, ctx, a.URL(), "publisher")
		for _, data := range []string{`{"id":1,"items":["x"]}`, `"text"`, `[1,2]`, `null`} {
			res, err := pub.Trigger(ctx, sdk.TriggerRequest{FunctionID: PublishFunction,
				Payload: map[string]any{"topic": "orders", "data": json.RawMessage(data)}})
			if err != nil || (len(res) > 0 && string(res) != "null") {
				t.Fatalf("publish %s: result %s, err %v; want no result", data, res, err)
			}
			r := expect(ctx, t, onA, "engine A subscriber", data)
			if r.metadata != `{"who":"a"}` {
				t.Errorf("metadata %s, want the binding's {\"who\":\"a\"}", r.metadata)
			}
			expect(ctx, t, onB, "engine B subscriber", data)
		}
		// Published on engine B, with data omitted: null reaches A.
		pubB := enginetest.Connect(t, ctx, bEng.URL(), "publisher-b")
		if _, err := pubB.Trigger(ctx, sdk.TriggerRequest{FunctionID: PublishFunction, Payload: map[string]any{"topic": "orders"}}); err != nil {
			t.Fatal(err)
		}
		expect(ctx, t, onA, "engine A subscriber (from B)", "null")
		expect(ctx, t, onB, "engine B subscriber (from B)", "null")
		// The other topic got none of the above: its first message is its own.
		if _, err := pub.Trigger(ctx, sdk.TriggerRequest{FunctionID: PublishFunction, Payload: map[string]any{"topic": "other", "data": 7}}); err != nil {
			t.Fatal(err)
		}
		expect(ctx, t, other, "other-topic subscriber", "7")
	})
}

func TestPublishErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-pubsub", "")
	w := enginetest.Connect(t, ctx, srv.URL(), "publisher")
	tests := []struct {
		payload any
		code    string
	}{
		{map[string]any{"data": 1}, CodeTopicNotSet},
		{map[string]any{"topic": "", "data": 1}, CodeTopicNotSet},
		{nil, CodeTopicNotSet},
		{"orders", engine.CodeDeserialization},
		{map[string]any{"topic": 5}, engine.CodeDeserialization},
	}
	for _, tt := range tests {
		_, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: PublishFunction, Payload: tt.payload})
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != tt.code {
			t.Errorf("publish %v: %v, want code %s", tt.payload, err, tt.code)
		}
	}
	for _, cfg := range []string{`{}`, `{"topic":""}`, `{"topic":3}`} {
		_, err := srv.Engine().RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: "f", Config: json.RawMessage(cfg)})
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != engine.CodeTriggerRegFailed || !strings.Contains(eb.Message, "topic") {
			t.Errorf("subscribe %s: %v, want trigger_registration_failed about the topic", cfg, err)
		}
	}
}

func TestUnsubscribe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-pubsub", "")
	eng := srv.Engine()
	id, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: "f", Config: json.RawMessage(`{"topic":"t"}`)})
	if err != nil {
		t.Fatal(err)
	}
	// Re-registering the id on another topic moves it.
	if _, err := eng.RegisterTrigger(ctx, engine.Trigger{ID: id, Type: TriggerType, FunctionID: "f", Config: json.RawMessage(`{"topic":"u"}`)}); err != nil {
		t.Fatal(err)
	}
	mod, _ := srv.Modules().Get("pubsub")
	m := mod.(*Module)
	m.mu.RLock()
	topics := fmt.Sprintf("%d %d %s", len(m.topics), len(m.topics["u"]), m.byID[id])
	m.mu.RUnlock()
	if topics != "1 1 u" {
		t.Errorf("after moving the binding: topics, bindings on u, topic of id = %s; want 1 1 u", topics)
	}
	eng.UnregisterTrigger(id)
	m.mu.RLock()
	n := len(m.topics) + len(m.byID)
	m.mu.RUnlock()
	if n != 0 {
		t.Errorf("%d entries left after unregister, want 0", n)
	}
}

// TestResubscribesAfterRedisRestart stops and restarts redis-server: the
// engine's subscription comes back by itself.
func TestResubscribesAfterRedisRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs := storetest.StartServer(t)
	srv := enginetest.StartModule(t, ctx, rs.URL(), "iii-pubsub", "")
	eng := srv.Engine()
	got := make(chan json.RawMessage, 64)
	if err := eng.RegisterFunction("test", engine.Function{ID: "test::sub", Handler: func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
		select {
		case got <- c.Data:
		default:
		}
		return nil, nil
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: "test::sub", Config: json.RawMessage(`{"topic":"t"}`)}); err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	if _, err := eng.Invoke(ctx, engine.Request{FunctionID: PublishFunction, Data: json.RawMessage(`{"topic":"t","data":0}`)}); err == nil {
		t.Error("publish with Redis down succeeded")
	} else if eb := (*protocol.ErrorBody)(nil); !errors.As(err, &eb) || eb.Code != CodePublishFailed {
		t.Errorf("publish with Redis down: %v, want code %s", err, CodePublishFailed)
	}
	rs.Restart()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 1; ; i++ {
		eng.Invoke(ctx, engine.Request{FunctionID: PublishFunction, Data: json.RawMessage(fmt.Sprintf(`{"topic":"t","data":%d}`, i))})
		select {
		case d := <-got:
			t.Logf("received %s after the restart", d)
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no message received after Redis came back")
		}
	}
}

func TestConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct{ config, want string }{
		{"\n      topics: [a]\n", "config.yaml:5: modules[0].config.topics: unknown key (known: adapter)"},
		// iii's adapter block is accepted (and ignored).
		{"\n      adapter: {name: redis, config: {redis_url: redis://x}}\n", ""},
	}
	for _, tt := range tests {
		yaml := "engine: {host: 127.0.0.1, port: 0}\nmodules:\n  - class: PubSubModule\n    config:" + tt.config
		err := enginetest.TryStart(ctx, yaml)
		if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
			t.Errorf("config %q: error %v, want %q", tt.config, err, tt.want)
		}
	}
}

// TestHandOverKeepsOneSubscription: a replacement worker subscribing the
// same function to the same topic (a hot reload) shares the subscription:
// each message is delivered once while both are connected, and the
// subscription stays when the old worker leaves.
func TestHandOverKeepsOneSubscription(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-pubsub", "")
	mod, _ := srv.Modules().Get("pubsub")
	m := mod.(*Module)
	bindings := func() int {
		m.mu.RLock()
		defer m.mu.RUnlock()
		return len(m.byID)
	}
	claims := func() int {
		for _, tr := range srv.Engine().Snapshot().Triggers {
			if tr.Type == TriggerType {
				return len(tr.ClaimIDs)
			}
		}
		return 0
	}
	oldW := enginetest.Connect(t, ctx, srv.URL(), "sub-old")
	fromOld := subscribe(t, oldW, "sub::orders", "orders", nil)
	newW := enginetest.Connect(t, ctx, srv.URL(), "sub-new")
	fromNew := subscribe(t, newW, "sub::orders", "orders", nil)
	for claims() != 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("subscription has %d registrations, want 2", claims())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if n := bindings(); n != 1 {
		t.Fatalf("%d subscriptions in the module for two identical registrations, want 1", n)
	}
	pub := enginetest.Connect(t, ctx, srv.URL(), "publisher")
	publish := func(data int) {
		t.Helper()
		if _, err := pub.Trigger(ctx, sdk.TriggerRequest{FunctionID: PublishFunction,
			Payload: map[string]any{"topic": "orders", "data": data}}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	receive := func(who string) {
		t.Helper()
		select {
		case r := <-fromOld:
			got[r.data]++
		case r := <-fromNew:
			got[r.data]++
		case <-ctx.Done():
			t.Fatalf("%s: no delivery; got %v", who, got)
		}
	}
	for i := range 10 {
		publish(i)
		receive(fmt.Sprint("message ", i))
	}
	oldW.Close(ctx)
	for claims() != 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("subscription has %d registrations after the old worker left, want 1", claims())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if n := bindings(); n != 1 {
		t.Fatalf("%d subscriptions in the module after the old worker left, want 1", n)
	}
	publish(10)
	receive("message after the hand-over")
	for i := range 11 {
		if got[fmt.Sprint(i)] != 1 {
			t.Errorf("message %d delivered %d times, want once; all: %v", i, got[fmt.Sprint(i)], got)
		}
	}
}

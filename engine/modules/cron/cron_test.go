package cron

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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

func cronModule(t *testing.T, srv *enginetest.Server) *Module {
	t.Helper()
	m, ok := srv.Modules().Get("cron")
	if !ok {
		t.Fatal("cron module not started")
	}
	return m.(*Module)
}

type firing struct {
	data, metadata json.RawMessage
	trigger        string
}

// recorder registers an in-process function that records its calls.
func recorder(t *testing.T, eng *engine.Engine, id string, result json.RawMessage, fail bool) <-chan firing {
	t.Helper()
	ch := make(chan firing, 64)
	err := eng.RegisterFunction("test", engine.Function{ID: id, Handler: func(_ context.Context, c *engine.Call) (json.RawMessage, error) {
		select {
		case ch <- firing{c.Data, c.Metadata, c.Trigger}:
		default:
		}
		if fail {
			return nil, &protocol.ErrorBody{Code: "nope", Message: "condition failed"}
		}
		return result, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func next(ctx context.Context, t *testing.T, ch <-chan firing, what string) firing {
	t.Helper()
	select {
	case f := <-ch:
		return f
	case <-ctx.Done():
		t.Fatalf("no %s before the deadline", what)
		return firing{}
	}
}

type payload struct {
	Trigger       string `json:"trigger"`
	JobID         string `json:"job_id"`
	ScheduledTime string `json:"scheduled_time"`
	ActualTime    string `json:"actual_time"`
}

func TestFiresWithPayload(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv := enginetest.StartModule(t, ctx, b.URL, "iii-cron", "{lock_ttl_ms: 5000}")
		eng := srv.Engine()
		calls := recorder(t, eng, "test::tick", nil, false)
		id, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: "test::tick",
			Config: json.RawMessage(`{"expression":"* * * * * *"}`), Metadata: json.RawMessage(`{"team":"ops"}`)})
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		f := next(ctx, t, calls, "cron firing")
		var p payload
		if err := json.Unmarshal(f.data, &p); err != nil {
			t.Fatalf("payload %s: %v", f.data, err)
		}
		sched, err1 := time.Parse(time.RFC3339, p.ScheduledTime)
		actual, err2 := time.Parse(time.RFC3339Nano, p.ActualTime)
		if p.Trigger != "cron" || p.JobID != id || err1 != nil || err2 != nil || sched.Nanosecond() != 0 ||
			actual.Before(sched) || actual.Sub(sched) > 2*time.Second || !strings.HasSuffix(p.ScheduledTime, "Z") {
			t.Errorf("payload %s, want trigger cron, job_id %s, whole-second UTC scheduled_time <= actual_time", f.data, id)
		}
		if f.trigger != "cron" {
			t.Errorf("call trigger %q, want cron (what the TUI and iii dev show)", f.trigger)
		}
		if string(f.metadata) != `{"team":"ops"}` {
			t.Errorf("metadata %s, want the binding's {\"team\":\"ops\"}", f.metadata)
		}
		// The firing's lock is in Redis with the configured TTL.
		rc := b.Client(t)
		keys, err := rc.Keys(ctx, "iii:cron:lock:*").Result()
		if err != nil || len(keys) == 0 {
			t.Fatalf("lock keys %v (%v), want at least one", keys, err)
		}
		if ttl, err := rc.PTTL(ctx, keys[0]).Result(); err != nil || ttl <= 0 || ttl > 5*time.Second {
			t.Errorf("lock %s TTL %v (%v), want within (0, 5s]", keys[0], ttl, err)
		}
		if !strings.HasSuffix(keys[0], fmt.Sprint(":", sched.Unix())) && len(keys) == 1 {
			t.Errorf("lock key %s does not name the scheduled time %d", keys[0], sched.Unix())
		}

		// Unregistering stops the schedule.
		if !eng.UnregisterTrigger(id) {
			t.Fatal("unregister: binding not found")
		}
		m := cronModule(t, srv)
		m.mu.Lock()
		n := len(m.jobs)
		m.mu.Unlock()
		if n != 0 {
			t.Errorf("%d jobs after unregister, want 0", n)
		}
	})
}

func TestRegisterRejectsBadConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-cron", "")
	tests := []struct{ config, want string }{
		{`{"expression":"* * * *"}`, `cron: invalid expression "* * * *": found 4 fields`},
		{`{"expression":"61 * * * * *"}`, `above maximum (59)`},
		{`{}`, `config.expression is required`},
		{`{"expression":5}`, `cron: invalid config`},
	}
	for _, tt := range tests {
		_, err := srv.Engine().RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: "f", Config: json.RawMessage(tt.config)})
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != engine.CodeTriggerRegFailed || !strings.Contains(eb.Message, tt.want) {
			t.Errorf("register %s: %v, want trigger_registration_failed containing %q", tt.config, err, tt.want)
		}
	}
	if n := len(srv.Engine().Bindings(TriggerType)); n != 0 {
		t.Errorf("%d bindings kept after rejections, want 0", n)
	}
}

func TestReplaceByID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-cron", "")
	eng := srv.Engine()
	for _, expr := range []string{"0 0 * * * *", "@daily"} {
		if _, err := eng.RegisterTrigger(ctx, engine.Trigger{ID: "t1", Type: TriggerType, FunctionID: "f",
			Config: json.RawMessage(`{"expression":"` + expr + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	m := cronModule(t, srv)
	m.mu.Lock()
	n, j := len(m.jobs), m.jobs["t1"]
	m.mu.Unlock()
	if n != 1 || j == nil || j.sched.canonical != "@daily" {
		t.Errorf("after re-registering t1: %d jobs, t1 %+v; want one job on @daily", n, j)
	}
}

// TestNewMetadataKeepsJob: the engine hands a binding over to a worker
// with other metadata by registering it again under its id; the schedule
// keeps running (no missed or doubled tick) and firings carry the new
// metadata.
func TestNewMetadataKeepsJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-cron", "")
	eng := srv.Engine()
	fired := recorder(t, eng, "tick::fn", nil, false)
	register := func(meta string) {
		t.Helper()
		if _, err := eng.RegisterTrigger(ctx, engine.Trigger{ID: "t1", Type: TriggerType, FunctionID: "tick::fn",
			Config: json.RawMessage(`{"expression":"* * * * * *"}`), Metadata: json.RawMessage(meta)}); err != nil {
			t.Fatal(err)
		}
	}
	job := func() *job {
		m := cronModule(t, srv)
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.jobs["t1"]
	}
	register(`{"v":1}`)
	before := job()
	if f := next(ctx, t, fired, "first firing"); string(f.metadata) != `{"v":1}` {
		t.Fatalf("metadata %s, want {\"v\":1}", f.metadata)
	}
	register(`{"v":2}`)
	if after := job(); after != before {
		t.Fatalf("the job was replaced (%p -> %p); want the running one kept", before, after)
	}
	for {
		f := next(ctx, t, fired, "a firing with the new metadata")
		if string(f.metadata) == `{"v":2}` {
			break
		}
	}
	// Another schedule under the same id does replace the job.
	if _, err := eng.RegisterTrigger(ctx, engine.Trigger{ID: "t1", Type: TriggerType, FunctionID: "tick::fn",
		Config: json.RawMessage(`{"expression":"*/2 * * * * *"}`)}); err != nil {
		t.Fatal(err)
	}
	if job() == before {
		t.Fatal("a new schedule kept the old job")
	}
}

func TestConditionFunction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-cron", "")
	eng := srv.Engine()
	condFalse := recorder(t, eng, "test::cond-false", json.RawMessage(`false`), false)
	condTrue := recorder(t, eng, "test::cond-true", json.RawMessage(`{"ok":1}`), false)
	condErr := recorder(t, eng, "test::cond-err", nil, true)
	skipped := recorder(t, eng, "test::skipped", nil, false)
	skippedErr := recorder(t, eng, "test::skipped-err", nil, false)
	ran := recorder(t, eng, "test::ran", nil, false)
	for fn, cond := range map[string]string{"test::skipped": "test::cond-false", "test::ran": "test::cond-true", "test::skipped-err": "test::cond-err"} {
		if _, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: fn,
			Config: json.RawMessage(`{"expression":"* * * * * *","condition_function_id":"` + cond + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	f := next(ctx, t, condTrue, "condition call")
	var p payload
	if err := json.Unmarshal(f.data, &p); err != nil || p.Trigger != "cron" {
		t.Errorf("condition got %s, want the cron payload", f.data)
	}
	next(ctx, t, ran, "firing with a true condition")
	// Two ticks' condition calls each for the false and failing conditions:
	// their functions must not have run for either.
	for range 2 {
		next(ctx, t, condFalse, "false condition call")
		next(ctx, t, condErr, "failing condition call")
	}
	select {
	case f := <-skipped:
		t.Errorf("function ran although its condition returned false: %s", f.data)
	case f := <-skippedErr:
		t.Errorf("function ran although its condition failed: %s", f.data)
	default:
	}
}

// TestTwoEnginesFireOnce runs the same Go SDK worker code against two
// engines on one redis-server: each registers its own cron trigger (a
// different trigger id), and every tick runs the function once in total.
func TestTwoEnginesFireOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	redisSrv := storetest.StartServer(t)
	var (
		mu    sync.Mutex
		ticks = map[string][]string{} // scheduled_time -> engines that ran it
		seen  = make(chan struct{}, 64)
	)
	for _, name := range []string{"A", "B"} {
		srv := enginetest.StartModule(t, ctx, redisSrv.URL(), "iii-cron", "")
		w := enginetest.Connect(t, ctx, srv.URL(), "ticker")
		err := w.RegisterFunction("jobs::tick", func(_ context.Context, in json.RawMessage) (any, error) {
			var p payload
			json.Unmarshal(in, &p)
			mu.Lock()
			ticks[p.ScheduledTime] = append(ticks[p.ScheduledTime], name)
			mu.Unlock()
			seen <- struct{}{}
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.RegisterTrigger(sdk.Trigger{Type: TriggerType, FunctionID: "jobs::tick",
			Config: map[string]any{"expression": "* * * * * *"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for four distinct ticks; judge the first three (a duplicate of
	// those would have arrived within the following second).
	for {
		select {
		case <-seen:
		case <-ctx.Done():
			t.Fatalf("fewer than 4 ticks before the deadline: %v", ticks)
		}
		mu.Lock()
		n := len(ticks)
		mu.Unlock()
		if n >= 4 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var times []string
	for ts := range ticks {
		times = append(times, ts)
	}
	slices.Sort(times)
	for _, ts := range times[:3] {
		if got := ticks[ts]; len(got) != 1 {
			t.Errorf("tick %s ran on %v, want exactly one engine", ts, got)
		}
	}
}

func TestAdapterLockTTL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := enginetest.StartModule(t, ctx, storetest.Mini(t).URL, "iii-cron", "{adapter: {name: redis, config: {lock_ttl_ms: 1234, redis_url: x}}}")
	if got := cronModule(t, srv).lockTTL; got != 1234*time.Millisecond {
		t.Errorf("lock TTL %v, want adapter.config.lock_ttl_ms 1.234s", got)
	}
}

func TestConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := storetest.Mini(t).URL
	tests := []struct{ config, want string }{
		{"{lock_ttl: 5}", "config.yaml:5"},
		{"{lock_ttl: 5}", "lock_ttl"},
		{"{lock_ttl_ms: soon}", "want an integer"},
		{"{lock_ttl_ms: 0}", "lock_ttl_ms must be at least 1"},
		{"{adapter: {name: kv, config: {lock_ttl_ms: soon}}}", "adapter.config.lock_ttl_ms must be an integer"},
	}
	for _, tt := range tests {
		err := enginetest.TryStart(ctx, enginetest.ModuleConfig(url, "CronModule", tt.config))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("config %s: error %v, want one containing %q", tt.config, err, tt.want)
		}
	}
}

// TestFireNow: engine::cron::fire fires a yearly binding at once, with the
// cron payload; an unknown binding is not_found.
func TestFireNow(t *testing.T) {
	storetest.Each(t, func(t *testing.T, b storetest.Backend) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv := enginetest.StartModule(t, ctx, b.URL, "iii-cron", "")
		eng := srv.Engine()
		calls := recorder(t, eng, "test::yearly", nil, false)
		id, err := eng.RegisterTrigger(ctx, engine.Trigger{Type: TriggerType, FunctionID: "test::yearly",
			Config: json.RawMessage(`{"expression":"0 0 0 1 1 *"}`)})
		if err != nil {
			t.Fatal(err)
		}
		res, err := eng.Invoke(ctx, engine.Request{FunctionID: FunctionFire, Data: json.RawMessage(`{"trigger_id":"` + id + `"}`)})
		if err != nil || !strings.Contains(string(res), `"fired":true`) {
			t.Fatalf("fire: %s, %v", res, err)
		}
		f := next(ctx, t, calls, "the fired call")
		var p payload
		if err := json.Unmarshal(f.data, &p); err != nil || p.JobID != id || f.trigger != "cron" {
			t.Errorf("fired with %s (trigger %q); want the cron payload of %s", f.data, f.trigger, id)
		}
		_, err = eng.Invoke(ctx, engine.Request{FunctionID: FunctionFire, Data: json.RawMessage(`{"trigger_id":"nope"}`)})
		var eb *protocol.ErrorBody
		if !errors.As(err, &eb) || eb.Code != "not_found" {
			t.Errorf("unknown binding: %v; want not_found", err)
		}
	})
}

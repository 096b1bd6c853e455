package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
)

// These tests drive the built-in sources through their seam (Attach,
// Detach, the source function) against a real engine, with recording
// in-process providers standing in for the modules; engine/compat runs
// them with the modules and the real SDKs.

// recProvider records the bindings a trigger type is given. refuse, if
// set, refuses a registration.
type recProvider struct {
	mu     sync.Mutex
	live   map[string]Trigger
	refuse func(Trigger) error
}

func (p *recProvider) RegisterTrigger(_ context.Context, t Trigger) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refuse != nil {
		if err := p.refuse(t); err != nil {
			return err
		}
	}
	if p.live == nil {
		p.live = map[string]Trigger{}
	}
	p.live[t.ID] = t
	return nil
}

func (p *recProvider) UnregisterTrigger(_ context.Context, t Trigger) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.live, t.ID)
	return nil
}

func (p *recProvider) bindings() map[string]Trigger {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]Trigger{}
	for k, v := range p.live {
		out[k] = v
	}
	return out
}

func newSourceEngine(t *testing.T) *Engine {
	t.Helper()
	e, err := New(Options{})
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e
}

// sourceOf installs the built-in sources of triggerType by registering a
// recording provider for it, and returns the provider and the source.
func sourceOf(t *testing.T, e *Engine, triggerType, fn string) (*recProvider, *triggerSource) {
	t.Helper()
	p := &recProvider{}
	if err := e.RegisterTriggerType("iii-test", TriggerType{ID: triggerType, Provider: p}); err != nil {
		t.Fatalf("register trigger type %s: %v", triggerType, err)
	}
	s, ok := e.srcs.Load(fn)
	if !ok {
		t.Fatalf("no source %s after trigger type %s registered", fn, triggerType)
	}
	if !e.HasFunction(fn) {
		t.Fatalf("source function %s is not registered", fn)
	}
	return p, s.(*triggerSource)
}

func wantCode(t *testing.T, err error, code, mentions string) {
	t.Helper()
	var eb *protocol.ErrorBody
	if !errors.As(err, &eb) {
		t.Fatalf("error %v (%T), want a *protocol.ErrorBody %s", err, err, code)
	}
	if eb.Code != code || !strings.Contains(eb.Message, mentions) {
		t.Fatalf("error %s: %q, want %s mentioning %q", eb.Code, eb.Message, code, mentions)
	}
}

func ctx5(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBuiltinSourcesOfTheEngineItself(t *testing.T) {
	e := newSourceEngine(t)
	for _, fn := range []string{"engine::on-workers-changed", "engine::on-functions-changed", SourceObserversChanged, SourceConfigurationUpdated} {
		if !e.HasFunction(fn) {
			t.Errorf("%s is not a function", fn)
		}
		if err := e.RegisterSource(fn, &triggerSource{}); !errors.Is(err, ErrSourceExists) {
			t.Errorf("RegisterSource(%s) again: %v, want ErrSourceExists", fn, err)
		}
	}
	seen := map[string]bool{}
	for _, s := range BuiltinSources() {
		if seen[s.FunctionID] {
			t.Errorf("source %s listed twice", s.FunctionID)
		}
		seen[s.FunctionID] = true
	}
	for _, fn := range []string{"http::on-request", "queue::on-message", "cron::on-tick", "state::on-changed", "publish"} {
		if !seen[fn] {
			t.Errorf("no built-in source %s", fn)
		}
	}
}

func TestHTTPSourceBindsTheTargetToTheRoute(t *testing.T) {
	e := newSourceEngine(t)
	p, s := sourceOf(t, e, "http", "http::on-request")
	ctx := ctx5(t)

	o := SourceObserver{ID: "o1", FunctionID: "http::on-request", Target: "app::get-user",
		Args:     json.RawMessage(`{"method":"post","path":"/users/:id","middleware_function_ids":["app::auth"]}`),
		Metadata: json.RawMessage(`{"team":"api"}`)}
	if err := s.Attach(ctx, o); err != nil {
		t.Fatalf("attach: %v", err)
	}
	b, ok := p.bindings()["observer:o1"]
	if !ok {
		t.Fatalf("no binding for the observer: %v", p.bindings())
	}
	if b.FunctionID != "app::get-user" {
		t.Errorf("binding calls %s, want the target", b.FunctionID)
	}
	if string(b.Metadata) != `{"team":"api"}` {
		t.Errorf("binding metadata %s, want the observer's (the target's sidecar)", b.Metadata)
	}
	want := `{"api_path":"/users/:id","http_method":"POST","middleware_function_ids":["app::auth"]}`
	if canonicalJSON(b.Config) != canonicalJSON(json.RawMessage(want)) {
		t.Errorf("config %s, want %s", b.Config, want)
	}
	lt, ok := s.Legacy("o1")
	if !ok || lt.TriggerType != "http" || canonicalJSON(lt.Config) != canonicalJSON(json.RawMessage(want)) {
		t.Errorf("legacy view %+v %v, want http %s", lt, ok, want)
	}
	// The 0.22 names are accepted too.
	if err := s.Attach(ctx, SourceObserver{ID: "o2", Target: "app::list",
		Args: json.RawMessage(`{"http_method":"GET","api_path":"users"}`)}); err != nil {
		t.Fatalf("attach with 0.22 names: %v", err)
	}

	s.Detach("o1")
	s.Detach("o1") // twice is harmless
	if _, ok := p.bindings()["observer:o1"]; ok {
		t.Errorf("binding kept after detach")
	}
	if _, ok := p.bindings()["observer:o2"]; !ok {
		t.Errorf("the other observer's binding went too")
	}
	if _, ok := s.Legacy("o1"); ok {
		t.Errorf("legacy view of a detached observer")
	}

	// A source is private to the engine: a direct call is refused.
	_, err := e.Invoke(ctx, Request{FunctionID: "http::on-request", Data: json.RawMessage(`{}`)})
	wantCode(t, err, protocol.CodeForbidden, "observe it")
}

func TestHTTPSourceRefusesBadArgsAndConflicts(t *testing.T) {
	e := newSourceEngine(t)
	p, s := sourceOf(t, e, "http", "http::on-request")
	ctx := ctx5(t)
	for _, tc := range []struct{ args, mentions string }{
		{`{"method":"GET"}`, "path is required"},
		{``, "path is required"},
		{`{"path":"/a","verb":"GET"}`, `unknown key "verb"`},
		{`{"path":7}`, "path must be a string"},
		{`["GET","/a"]`, "want an object"},
	} {
		err := s.Attach(ctx, SourceObserver{ID: "bad", Target: "app::t", Args: json.RawMessage(tc.args)})
		wantCode(t, err, protocol.CodeInvalidArgs, tc.mentions)
	}
	if n := len(p.bindings()); n != 0 {
		t.Fatalf("bad args left %d bindings", n)
	}

	// The module's refusal: a conflict keeps the source's code, anything
	// else is args it cannot serve.
	p.refuse = func(tr Trigger) error {
		if strings.Contains(string(tr.Config), "taken") {
			return fmt.Errorf("Route 'GET /taken' conflicts with already-registered route 'GET /taken': %w", ErrTriggerConflict)
		}
		if strings.Contains(string(tr.Config), "PATCHY") {
			return errors.New(`http trigger: http_method "PATCHY" is not one of GET POST`)
		}
		return nil
	}
	err := s.Attach(ctx, SourceObserver{ID: "c", Target: "app::t", Args: json.RawMessage(`{"path":"/taken"}`)})
	wantCode(t, err, "HTTP_ROUTE_CONFLICT", "conflicts with")
	err = s.Attach(ctx, SourceObserver{ID: "m", Target: "app::t", Args: json.RawMessage(`{"path":"/a","method":"patchy"}`)})
	wantCode(t, err, protocol.CodeInvalidArgs, "PATCHY")
	if bs := e.Bindings("http"); len(bs) != 0 {
		t.Fatalf("refused observers left bindings: %+v", bs)
	}
}

func TestCronSourceSharesOneBindingPerExpression(t *testing.T) {
	e := newSourceEngine(t)
	p, s := sourceOf(t, e, "cron", "cron::on-tick")
	ctx := ctx5(t)
	every := json.RawMessage(`{"expression":"* * * * * *"}`)
	for _, id := range []string{"a", "b"} {
		if err := s.Attach(ctx, SourceObserver{ID: id, Target: "app::" + id, Args: every}); err != nil {
			t.Fatalf("attach %s: %v", id, err)
		}
	}
	if err := s.Attach(ctx, SourceObserver{ID: "c", Target: "app::c", Args: json.RawMessage(`{"expression":"0 0 * * * *"}`)}); err != nil {
		t.Fatalf("attach c: %v", err)
	}
	bs := p.bindings()
	if len(bs) != 2 {
		t.Fatalf("%d bindings, want one per expression: %+v", len(bs), bs)
	}
	for _, b := range bs {
		if b.FunctionID != "cron::on-tick" {
			t.Errorf("binding %s calls %s, want the source function", b.ID, b.FunctionID)
		}
	}
	lt, _ := s.Legacy("b")
	if lt == nil || canonicalJSON(lt.Config) != canonicalJSON(every) {
		t.Errorf("legacy view of b: %+v", lt)
	}

	// A firing of the binding: the source's input is the tick plus the
	// expression it is for.
	var everyBinding Trigger
	for _, b := range bs {
		if strings.Contains(string(b.Config), `"* * * * * *"`) {
			everyBinding = b
		}
	}
	out, err := e.Invoke(ctx, Request{FunctionID: "cron::on-tick", Metadata: everyBinding.Metadata,
		Data: json.RawMessage(`{"trigger":"cron","job_id":"j1","scheduled_time":"t"}`)})
	if err != nil {
		t.Fatalf("firing: %v", err)
	}
	want := `{"expression":"* * * * * *","job_id":"j1","scheduled_time":"t","trigger":"cron"}`
	if canonicalJSON(out) != canonicalJSON(json.RawMessage(want)) {
		t.Errorf("tick %s, want %s", out, want)
	}
	// Without the binding's metadata it is a stranger's call.
	_, err = e.Invoke(ctx, Request{FunctionID: "cron::on-tick", Data: json.RawMessage(`{}`)})
	wantCode(t, err, protocol.CodeForbidden, "observe it")

	s.Detach("a")
	if n := len(p.bindings()); n != 2 {
		t.Fatalf("detaching one of two observers of an expression left %d bindings, want 2", n)
	}
	s.Detach("b")
	s.Detach("c")
	if n := len(p.bindings()); n != 0 {
		t.Fatalf("%d bindings after every observer left", n)
	}
	err = s.Attach(ctx, SourceObserver{ID: "d", Target: "app::d", Args: json.RawMessage(`{"expression":""}`)})
	wantCode(t, err, protocol.CodeInvalidArgs, "expression is required")
}

func TestStateSourceTakesNoArgsAndSharesOneBinding(t *testing.T) {
	e := newSourceEngine(t)
	p, s := sourceOf(t, e, "state", "state::on-changed")
	ctx := ctx5(t)
	err := s.Attach(ctx, SourceObserver{ID: "x", Target: "app::x", Args: json.RawMessage(`{"scope":"s"}`)})
	wantCode(t, err, protocol.CodeInvalidArgs, "filters on input")
	for _, id := range []string{"a", "b"} {
		if err := s.Attach(ctx, SourceObserver{ID: id, Target: "app::" + id, Args: json.RawMessage(`{}`)}); err != nil {
			t.Fatalf("attach %s: %v", id, err)
		}
	}
	bs := p.bindings()
	if len(bs) != 1 {
		t.Fatalf("%d bindings, want 1: %+v", len(bs), bs)
	}
	for _, b := range bs {
		if b.FunctionID != "state::on-changed" || canonicalJSON(b.Config) != "{}" {
			t.Errorf("binding %+v, want state::on-changed with config {}", b)
		}
	}
	s.Detach("a")
	if len(p.bindings()) != 1 {
		t.Fatalf("binding went with one of two observers")
	}
	s.Detach("b")
	if len(p.bindings()) != 0 {
		t.Fatalf("binding kept after the last observer")
	}
}

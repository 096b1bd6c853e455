package engine_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
)

func TestParseFunctionFilter(t *testing.T) {
	f, err := engine.ParseFunctionFilter(`match("api::*")`)
	if err != nil || !f.Matches("api::x", nil) || f.Matches("apx::x", nil) {
		t.Fatalf("match filter: %+v %v", f, err)
	}
	if f, err = engine.ParseFunctionFilter(`match('x')`); err != nil || f.Match != "x" {
		t.Fatalf("single-quoted match: %+v %v", f, err)
	}
	f, err = engine.ParseFunctionFilter(map[string]any{"metadata": map[string]any{"public": true, "tier": `match("gold*")`, "n": 3}})
	if err != nil {
		t.Fatal(err)
	}
	for meta, want := range map[string]bool{
		`{"public":true,"tier":"golden","n":3}`: true,
		`{"public":true,"tier":"silver","n":3}`: false,
		`{"public":false,"tier":"gold","n":3}`:  false,
		`{"public":true,"tier":"gold"}`:         false,
		`{"public":true,"tier":7,"n":3}`:        false,
		`[]`:                                    false,
	} {
		if got := f.Matches("any", json.RawMessage(meta)); got != want {
			t.Errorf("metadata filter on %s = %v, want %v", meta, got, want)
		}
	}
	if f.Matches("any", nil) {
		t.Error("metadata filter matched a function without metadata")
	}
	// The map forms, with a namespace.
	if f, err = engine.ParseFunctionFilter(map[string]any{"match": "orders::*", "namespace": "orders"}); err != nil || f.Match != "orders::*" || f.Namespace != "orders" {
		t.Errorf("{match, namespace}: %+v %v", f, err)
	}
	if f, err = engine.ParseFunctionFilter(map[string]any{"match": `match("x::*")`}); err != nil || f.Match != "x::*" || f.Namespace != "" {
		t.Errorf("{match: match(...)}: %+v %v", f, err)
	}
	if f, err = engine.ParseFunctionFilter(map[string]any{"metadata": map[string]any{"public": true}, "namespace": "billing"}); err != nil ||
		f.Namespace != "billing" || !f.Matches("any", json.RawMessage(`{"public":true}`)) {
		t.Errorf("{metadata, namespace}: %+v %v", f, err)
	}
	for _, bad := range []any{"api::*", map[string]any{"other": 1}, map[string]any{"metadata": map[string]any{}}, 42,
		map[string]any{"match": "x", "namesapce": "orders"}, map[string]any{"match": "x", "metadata": map[string]any{"a": 1}},
		map[string]any{"namespace": "orders"}, map[string]any{"match": "x", "namespace": " "}, map[string]any{"match": 3}} {
		if _, err := engine.ParseFunctionFilter(bad); err == nil {
			t.Errorf("ParseFunctionFilter(%v): no error", bad)
		}
	}
}

// rbacEngine is an engine whose primary listener has opts, with in-process
// functions standing in for the auth function and hooks.
func rbacEngine(t *testing.T, opts engine.ListenerOptions, fns map[string]engine.Handler) (*engine.Engine, string) {
	t.Helper()
	eng, err := engine.New(engine.Options{Listener: opts})
	if err != nil {
		t.Fatal(err)
	}
	for id, h := range fns {
		if err := eng.RegisterFunction("test", engine.Function{ID: id, Handler: h}); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(eng.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := eng.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		srv.Close()
	})
	return eng, "ws" + strings.TrimPrefix(srv.URL, "http")
}

func fixed(v string) engine.Handler {
	return func(context.Context, *engine.Call) (json.RawMessage, error) { return json.RawMessage(v), nil }
}

// refusal dials url and expects the AUTH_ERROR frame, then a close.
func refusal(t *testing.T, url string) string {
	t.Helper()
	ws, _, err := enginetest.DialRaw(t, url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, data, err := ws.Read(ctx)
	if err != nil || typ != websocket.MessageText {
		t.Fatalf("read refusal frame: %v %v", typ, err)
	}
	var m struct {
		Type  string             `json:"type"`
		Error protocol.ErrorBody `json:"error"`
	}
	if err := json.Unmarshal(data, &m); err != nil || m.Type != "error" || m.Error.Code != "AUTH_ERROR" {
		t.Fatalf("refusal frame %s: %v", data, err)
	}
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("after the refusal frame: %v, want close 1008", err)
	}
	return m.Error.Message
}

func TestAuthFunctionRefusals(t *testing.T) {
	hang := func(ctx context.Context, _ *engine.Call) (json.RawMessage, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	throw := func(context.Context, *engine.Call) (json.RawMessage, error) {
		return nil, &protocol.ErrorBody{Code: "denied", Message: "bad token"}
	}
	for _, c := range []struct {
		name string
		fn   engine.Handler
		want string
	}{
		{"throws", throw, "denied: bad token"},
		{"hangs", hang, "did not answer within 300ms"},
		{"null", fixed("null"), "returned no result"},
		{"garbage", fixed(`"yes please"`), "invalid AuthResult"},
		{"wrong field type", fixed(`{"allowed_functions":"all"}`), "invalid AuthResult"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, url := rbacEngine(t, engine.ListenerOptions{CallTimeout: 300 * time.Millisecond,
				RBAC: &engine.RBAC{AuthFunctionID: "auth"}}, map[string]engine.Handler{"auth": c.fn})
			start := time.Now()
			if msg := refusal(t, url); !strings.Contains(msg, c.want) {
				t.Errorf("refusal message %q, want it to contain %q", msg, c.want)
			}
			if msg := refusal(t, url+"/otel"); !strings.Contains(msg, c.want) {
				t.Errorf("/otel refusal message %q, want it to contain %q", msg, c.want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("refusals took %v", d)
			}
		})
	}
}

func TestAuthInputAndSession(t *testing.T) {
	inputs := make(chan map[string]any, 8)
	auth := func(_ context.Context, call *engine.Call) (json.RawMessage, error) {
		var in map[string]any
		if err := json.Unmarshal(call.Data, &in); err != nil {
			return nil, err
		}
		inputs <- in
		return json.RawMessage(`{"allowed_functions":["secret::allowed"],"forbidden_functions":["engine::log::info","pub::nope"],
			"context":{"tenant":"acme"},"function_registration_prefix":"acme"}`), nil
	}
	var mwMu sync.Mutex
	var mwIn map[string]any
	mw := func(_ context.Context, call *engine.Call) (json.RawMessage, error) {
		mwMu.Lock()
		defer mwMu.Unlock()
		json.Unmarshal(call.Data, &mwIn)
		return json.RawMessage(`{"via":"middleware"}`), nil
	}
	eng, url := rbacEngine(t, engine.ListenerOptions{MiddlewareFunctionID: "mw",
		RBAC: &engine.RBAC{AuthFunctionID: "auth", ExposeFunctions: []engine.FunctionFilter{{Match: "pub::*"}}}},
		map[string]engine.Handler{"auth": auth, "mw": mw, "pub::x": fixed(`1`), "secret::allowed": fixed(`2`), "secret::other": fixed(`3`)})

	ws, _, err := enginetest.DialRaw(t, url+"/?token=a&token=b", &websocket.DialOptions{HTTPHeader: map[string][]string{"X-Api-Key": {"k1"}}})
	if err != nil {
		t.Fatal(err)
	}
	ws.CloseNow()
	got := <-inputs
	hdrs, _ := got["headers"].(map[string]any)
	q, _ := got["query_params"].(map[string]any)
	if got["ip_address"] != "127.0.0.1" || hdrs["x-api-key"] != "k1" || hdrs["upgrade"] != "websocket" || hdrs["host"] != strings.TrimPrefix(url, "ws://") || len(q["token"].([]any)) != 2 {
		t.Fatalf("auth input %v", got)
	}
	w := enginetest.Dial(t, url)

	for fn, want := range map[string]string{
		"secret::other":     "FORBIDDEN",
		"pub::nope":         "FORBIDDEN",
		"engine::log::info": "FORBIDDEN",
	} {
		if code := enginetest.ErrCode(w.Call(fn, map[string]any{}, uuid.NewString())); code != want {
			t.Errorf("call %s: code %q, want %q", fn, code, want)
		}
	}
	// Allowed calls outside engine:: go to the middleware.
	res := w.Call("pub::x", map[string]any{"a": 1}, uuid.NewString())
	if r, _ := res["result"].(map[string]any); r["via"] != "middleware" || res["function_id"] != "pub::x" {
		t.Fatalf("middleware result %v", res)
	}
	mwMu.Lock()
	defer mwMu.Unlock()
	if mwIn["function_id"] != "pub::x" || mwIn["context"].(map[string]any)["tenant"] != "acme" || mwIn["payload"].(map[string]any)["a"] != 1.0 {
		t.Fatalf("middleware input %v", mwIn)
	}
	if res := w.Call("engine::functions::list", map[string]any{}, uuid.NewString()); enginetest.ErrCode(res) != "FORBIDDEN" {
		t.Fatalf("engine::functions::list not exposed: %v", res)
	}

	// The prefix: registered as acme::mine, invoked under the worker's own id.
	w.Register("mine")
	enginetest.WaitFor(t, "acme::mine", func() bool {
		for _, f := range eng.Snapshot().Functions {
			if f.ID == "acme::mine" {
				return true
			}
		}
		return false
	})
	done := make(chan error, 1)
	go func() {
		_, err := eng.Invoke(context.Background(), engine.Request{FunctionID: "acme::mine"})
		done <- err
	}()
	if inv := w.ServeOnce("ok", nil); inv["function_id"] != "mine" {
		t.Fatalf("worker invoked as %v, want mine", inv["function_id"])
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Trigger type registration is opt-in with an auth function.
	w.Send(map[string]any{"type": "registertriggertype", "id": "tt", "description": "x"})
	w.Quiet()
	for _, tt := range eng.Snapshot().TriggerTypes {
		if tt.ID == "tt" {
			t.Fatal("trigger type registered without allow_trigger_type_registration")
		}
	}
}

func TestRegistrationHooks(t *testing.T) {
	fnHook := func(_ context.Context, call *engine.Call) (json.RawMessage, error) {
		var in map[string]any
		json.Unmarshal(call.Data, &in)
		switch in["function_id"] {
		case "deny":
			return json.RawMessage(`null`), nil
		case "rename":
			return json.RawMessage(`{"function_id":"renamed","metadata":{"by":"hook"}}`), nil
		}
		return call.Data, nil
	}
	trHook := func(_ context.Context, call *engine.Call) (json.RawMessage, error) {
		var in map[string]any
		json.Unmarshal(call.Data, &in)
		if in["function_id"] == "deny" {
			return nil, &protocol.ErrorBody{Code: "no", Message: "not this one"}
		}
		return json.RawMessage(`{"config":{"rewritten":true}}`), nil
	}
	eng, url := rbacEngine(t, engine.ListenerOptions{RBAC: &engine.RBAC{
		OnFunctionRegistrationFunctionID: "fnhook", OnTriggerRegistrationFunctionID: "trhook",
		ExposeFunctions: []engine.FunctionFilter{{Match: "*"}}}},
		map[string]engine.Handler{"fnhook": fnHook, "trhook": trHook})
	w := enginetest.Dial(t, url)
	w.Register("deny")
	w.Register("rename")
	w.Register("keep")
	fns := map[string]engine.FunctionInfo{}
	for _, f := range eng.Snapshot().Functions {
		fns[f.ID] = f
	}
	if _, ok := fns["deny"]; ok {
		t.Error("hook denial ignored")
	}
	if f, ok := fns["renamed"]; !ok || string(f.Metadata) != `{"by":"hook"}` {
		t.Errorf("hook rewrite: %+v", fns)
	}
	if _, ok := fns["keep"]; !ok {
		t.Error("accepted registration missing")
	}
	if res := w.Call("deny", nil, uuid.NewString()); enginetest.ErrCode(res) != "function_not_found" ||
		!strings.Contains(res["error"].(map[string]any)["message"].(string), "refused") {
		t.Errorf("call of a refused function: %v", res)
	}

	// No auth function: trigger types may be registered.
	w.Send(map[string]any{"type": "registertriggertype", "id": "tt", "description": "x"})
	w.Send(map[string]any{"type": "registertrigger", "id": "t1", "trigger_type": "tt", "function_id": "deny", "config": map[string]any{}})
	res := w.Expect("triggerregistrationresult")
	if enginetest.ErrCode(res) != "trigger_registration_failed" || !strings.Contains(res["error"].(map[string]any)["message"].(string), "not this one") {
		t.Fatalf("trigger hook denial: %v", res)
	}
	w.Send(map[string]any{"type": "registertrigger", "id": "t2", "trigger_type": "tt", "function_id": "keep", "config": map[string]any{}})
	reg := w.Expect("registertrigger")
	if c, _ := reg["config"].(map[string]any); c["rewritten"] != true {
		t.Fatalf("trigger hook rewrite: %v", reg)
	}
}

func TestExtraListener(t *testing.T) {
	eng, plain := rbacEngine(t, engine.ListenerOptions{}, map[string]engine.Handler{
		"auth": fixed(`{"allowed_functions":["a::one"]}`), "a::one": fixed(`1`), "a::two": fixed(`2`)})
	ln := httptest.NewUnstartedServer(nil).Listener
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- eng.ServeListener(ctx, ln, engine.ListenerOptions{Name: "restricted", RBAC: &engine.RBAC{AuthFunctionID: "auth"}})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	}()
	r := enginetest.Dial(t, "ws://"+ln.Addr().String())
	p := enginetest.Dial(t, plain)
	if enginetest.ErrCode(r.Call("a::two", nil, uuid.NewString())) != "FORBIDDEN" || enginetest.ErrCode(r.Call("a::one", nil, uuid.NewString())) != "" {
		t.Error("restricted listener: wrong rights")
	}
	if enginetest.ErrCode(p.Call("a::two", nil, uuid.NewString())) != "" {
		t.Error("plain listener: a::two refused")
	}
}

func TestSessionTriggerTypes(t *testing.T) {
	eng, url := rbacEngine(t, engine.ListenerOptions{RBAC: &engine.RBAC{AuthFunctionID: "auth",
		ExposeFunctions: []engine.FunctionFilter{{Match: "engine::register_trigger"}}}},
		map[string]engine.Handler{"auth": fixed(`{"allowed_trigger_types":["ok"],"function_registration_prefix":"p"}`)})
	w := enginetest.Dial(t, url)
	if res := w.Call("engine::register_trigger", map[string]any{"trigger_type": "other", "function_id": "fn", "config": map[string]any{}}, uuid.NewString()); enginetest.ErrCode(res) != "FORBIDDEN" {
		t.Errorf("engine::register_trigger of a type outside allowed_trigger_types: %v", res)
	}
	if res := w.Call("engine::register_trigger", map[string]any{"trigger_type": "ok", "function_id": "fn", "config": map[string]any{}}, uuid.NewString()); enginetest.ErrCode(res) != "" {
		t.Fatalf("engine::register_trigger of an allowed type: %v", res)
	}
	w.Send(map[string]any{"type": "registertrigger", "id": "t-other", "trigger_type": "other", "function_id": "fn", "config": map[string]any{}})
	if res := w.Expect("triggerregistrationresult"); enginetest.ErrCode(res) != "trigger_registration_failed" {
		t.Errorf("registertrigger of a type outside allowed_trigger_types: %v", res)
	}
	w.Send(map[string]any{"type": "registertrigger", "id": "t-ok", "trigger_type": "ok", "function_id": "fn", "config": map[string]any{}})
	w.Quiet()
	var fns []string
	for _, tr := range eng.Snapshot().Triggers {
		fns = append(fns, tr.Type+"->"+tr.FunctionID)
	}
	// Both registrations name the same (type, function, config): one
	// shared binding, on the prefixed function.
	if strings.Join(fns, ",") != "ok->p::fn" {
		t.Errorf("triggers %v, want the binding of ok to p::fn", fns)
	}
}

// engine::functions::list through an RBAC listener lists only what the
// session may call (its allowed_functions, the expose_functions filters,
// by id or metadata), as iii filters it; the plain listener lists all.
func TestFunctionsListFilteredBySession(t *testing.T) {
	auth := func(_ context.Context, call *engine.Call) (json.RawMessage, error) {
		return json.RawMessage(`{"allowed_functions":["secret::allowed"]}`), nil
	}
	meta, err := engine.ParseFunctionFilter(map[string]any{"metadata": map[string]any{"public": true}})
	if err != nil {
		t.Fatal(err)
	}
	eng, url := rbacEngine(t, engine.ListenerOptions{
		RBAC: &engine.RBAC{AuthFunctionID: "auth", ExposeFunctions: []engine.FunctionFilter{
			{Match: "pub::*"}, {Match: "engine::functions::list"}, meta}}},
		map[string]engine.Handler{"auth": auth, "pub::x": fixed(`1`), "secret::allowed": fixed(`2`), "secret::other": fixed(`3`)})
	if err := eng.RegisterFunction("test", engine.Function{ID: "tagged::y", Metadata: json.RawMessage(`{"public":true}`), Handler: fixed(`4`)}); err != nil {
		t.Fatal(err)
	}
	w := enginetest.Dial(t, url)
	res := w.Call("engine::functions::list", map[string]any{}, uuid.NewString())
	r, _ := res["result"].(map[string]any)
	fns, _ := r["functions"].([]any)
	got := map[string]bool{}
	for _, f := range fns {
		got[f.(map[string]any)["function_id"].(string)] = true
	}
	for _, id := range []string{"pub::x", "secret::allowed", "tagged::y"} {
		if !got[id] {
			t.Errorf("%s missing from the session's list %v", id, res)
		}
	}
	for _, id := range []string{"secret::other", "auth"} {
		if got[id] {
			t.Errorf("%s listed to a session that may not call it: %v", id, res)
		}
	}
	// In-process, without a session: everything.
	out, err := eng.Invoke(context.Background(), engine.Request{FunctionID: "engine::functions::list", Data: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"secret::other"`) {
		t.Errorf("unfiltered list lacks secret::other: %s", out)
	}
}

// Worker sockets accepted by Serve and by ServeListener alike reach their
// connection as cork.Conns, so its writer can send a batch of frames in
// one write (what corking does is cork's own tests').
func TestEveryListenerCorks(t *testing.T) {
	eng, err := engine.New(engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	main, extra := httptest.NewUnstartedServer(nil).Listener, httptest.NewUnstartedServer(nil).Listener
	done := make(chan error, 2)
	go func() { done <- eng.Serve(ctx, main) }()
	go func() { done <- eng.ServeListener(ctx, extra, engine.ListenerOptions{Name: "extra"}) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	}()
	a := enginetest.Dial(t, "ws://"+main.Addr().String())
	b := enginetest.Dial(t, "ws://"+extra.Addr().String())
	a.Register("x::a")
	b.Register("x::b")
	if corked, total := eng.CorkedWorkersForTest(); corked != 2 || total != 2 {
		t.Fatalf("%d of %d workers corked, want 2 of 2", corked, total)
	}
}

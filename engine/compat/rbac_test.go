package compat_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/protocol"
)

// rbacFleet is an engine with an unrestricted listener (the admin worker
// that serves the auth function and middleware connects there) and
// several RBAC listeners on their own ports.
type rbacFleet struct {
	testEngine
	lns map[string]string // listener name -> ws:// URL
}

// startRBACEngine serves eng's primary listener (full rights) and one
// listener per entry of listeners.
func startRBACEngine(t *testing.T, listeners map[string]engine.ListenerOptions, fns map[string]engine.Handler) *rbacFleet {
	t.Helper()
	e := enginetest.New(t, engine.Options{})
	eng := e.Engine
	for id, h := range fns {
		if err := eng.RegisterFunction("compat-rbac", engine.Function{ID: id, Handler: h,
			Metadata: json.RawMessage(`{"public":true}`)}); err != nil {
			t.Fatal(err)
		}
	}
	f := &rbacFleet{testEngine: testEngine{eng: eng, url: e.URL, logs: e.Logs}, lns: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	for name, opts := range listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		opts.Name = name
		f.lns[name] = "ws://" + ln.Addr().String()
		d := make(chan error, 1)
		done = append(done, d)
		// Exits when cancel is called at cleanup.
		go func() { d <- eng.ServeListener(ctx, ln, opts) }()
	}
	// Runs before enginetest shuts the engine down.
	t.Cleanup(func() {
		cancel()
		for _, d := range done {
			if err := <-d; err != nil {
				t.Errorf("ServeListener: %v", err)
			}
		}
	})
	return f
}

func (f *rbacFleet) hasFunction(id string) bool {
	for _, fn := range f.eng.Snapshot().Functions {
		if fn.ID == id {
			return true
		}
	}
	return false
}

// functionHook is the on_function_registration hook: it refuses ids
// ending in ::deny, renames ::rename to ::renamed and accepts the rest.
func functionHook(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var in struct {
		FunctionID string          `json:"function_id"`
		Context    json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(call.Data, &in); err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(in.FunctionID, "::deny"):
		return nil, &protocol.ErrorBody{Code: "denied", Message: "no functions called deny"}
	case strings.HasSuffix(in.FunctionID, "::rename"):
		return json.Marshal(map[string]any{"function_id": in.FunctionID + "d", "metadata": map[string]any{"tenant_ctx": in.Context}})
	}
	return call.Data, nil
}

// triggerHook is the on_trigger_registration hook: config {deny: true}
// is refused, config {rewrite: true} becomes {rewritten: true}.
func triggerHook(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var in struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(call.Data, &in); err != nil {
		return nil, err
	}
	switch {
	case in.Config["deny"] == true:
		return json.RawMessage(`"no"`), nil
	case in.Config["rewrite"] == true:
		return json.RawMessage(`{"config":{"rewritten":true}}`), nil
	}
	return json.RawMessage(`{}`), nil
}

// TestRBACListeners drives Node and Python iii-sdk workers through two
// listeners with different RBAC: one with an SDK-served auth function,
// expose_functions, registration hooks and a registration prefix, one with
// a middleware; and listeners whose auth function throws, hangs, answers
// null or garbage.
func TestRBACListeners(t *testing.T) {
	requireSDKs(t)
	ctx := testContext(t)
	const callTimeout = 500 * time.Millisecond
	rbac := func(auth string) engine.ListenerOptions {
		return engine.ListenerOptions{CallTimeout: callTimeout, RBAC: &engine.RBAC{AuthFunctionID: auth}}
	}
	metaFilter, err := engine.ParseFunctionFilter(map[string]any{"metadata": map[string]any{"public": true}})
	if err != nil {
		t.Fatal(err)
	}
	f := startRBACEngine(t, map[string]engine.ListenerOptions{
		"tenants": {CallTimeout: 2 * time.Second, RBAC: &engine.RBAC{
			AuthFunctionID:                   "admin::auth",
			ExposeFunctions:                  []engine.FunctionFilter{{Match: "admin::pub*"}, {Match: "t1::*"}, metaFilter},
			OnFunctionRegistrationFunctionID: "hooks::function",
			OnTriggerRegistrationFunctionID:  "hooks::trigger",
		}},
		"middleware": {MiddlewareFunctionID: "admin::mw"},
		"throws":     rbac("admin::fail"),
		"hangs":      rbac("admin::hang"),
		"null":       rbac("admin::sink"),
		"garbage":    rbac("admin::garbage"),
	}, map[string]engine.Handler{"hooks::function": functionHook, "hooks::trigger": triggerHook,
		"gofn::meta": func(context.Context, *engine.Call) (json.RawMessage, error) {
			return json.RawMessage(`"by metadata"`), nil
		}})

	admin := startWorker(t, node, f.url, "admin")
	admin.ready(t, ctx)
	authResult := map[string]any{
		"allowed_functions":               []string{"admin::secret"},
		"forbidden_functions":             []string{"admin::pub_forbidden"},
		"allow_trigger_type_registration": true,
		"context":                         map[string]any{"tenant": "t1"},
		"function_registration_prefix":    "t1",
	}
	for id, result := range map[string]any{"admin::auth": authResult, "admin::garbage": "not an AuthResult",
		"admin::pub_x": "public", "admin::secret": "secret", "admin::pub_forbidden": "nope"} {
		admin.do(t, ctx, map[string]any{"op": "register_function", "ref": id, "function_id": id, "result": result}, "function_registered")
	}
	admin.do(t, ctx, map[string]any{"op": "register_function", "ref": "mw", "function_id": "admin::mw", "call": "admin::echo"}, "function_registered")

	// Refusals: the AUTH_ERROR frame, then a close, within the call timeout.
	for name, want := range map[string]string{"throws": "compat failure: boom", "hangs": "did not answer within",
		"null": "returned no result", "garbage": "invalid AuthResult"} {
		for _, path := range []string{"/", "/otel"} {
			start := time.Now()
			code, msg := authRefusal(t, ctx, f.lns[name]+path)
			if code != "AUTH_ERROR" || !strings.Contains(msg, want) {
				t.Errorf("%s%s: refusal %s %q, want AUTH_ERROR containing %q", name, path, code, msg, want)
			}
			if d := time.Since(start); d > callTimeout+2*time.Second {
				t.Errorf("%s%s: refusal took %v", name, path, d)
			}
		}
	}

	clients := map[lang]*workerProc{}
	mwClients := map[lang]*workerProc{}
	refused := map[lang]*workerProc{}
	for _, l := range langs {
		clients[l] = startWorker(t, l, f.lns["tenants"]+"/?team=blue&team=red", "c"+string(l),
			`COMPAT_HEADERS={"X-Compat-Tenant":"t1"}`, "COMPAT_READY=barrier")
		mwClients[l] = startWorker(t, l, f.lns["middleware"], "m"+string(l), "COMPAT_READY=barrier")
		refused[l] = startWorker(t, l, f.lns["hangs"], "r"+string(l), "COMPAT_READY=none")
	}

	// The auth function got the upgrade request's headers, query and address.
	in := admin.invoked(t, ctx, "admin::auth", func(d map[string]any) bool {
		h, _ := d["headers"].(map[string]any)
		return h["x-compat-tenant"] == "t1"
	}).obj("data")
	if q, _ := in["query_params"].(map[string]any); in["ip_address"] != "127.0.0.1" || len(q["team"].([]any)) != 2 {
		t.Errorf("auth input %v", in)
	}

	for _, l := range langs {
		c := clients[l]
		c.ready(t, ctx)
		// Registered under the session's prefix; called without it.
		if !f.hasFunction("t1::" + c.fn("echo")) {
			t.Errorf("%s: %s not registered under the prefix t1", l, c.fn("echo"))
		}
		out := admin.call(t, ctx, "t1::"+c.fn("echo"), map[string]any{"x": 1})
		if out.str("event") != "result" || out.obj("result")["x"] != 1.0 {
			t.Errorf("%s: admin calling t1::%s: %v", l, c.fn("echo"), out)
		}
		c.invoked(t, ctx, c.fn("echo"), func(d map[string]any) bool { return d["x"] == 1.0 })

		for fn, want := range map[string]string{
			"admin::pub_x":          "result",
			"admin::secret":         "result",
			"gofn::meta":            "result",
			"engine::log::info":     "", // infrastructure: allowed (any outcome but FORBIDDEN)
			"admin::echo":           "FORBIDDEN",
			"admin::pub_forbidden":  "FORBIDDEN",
			"engine::workers::list": "FORBIDDEN",
		} {
			out := c.call(t, ctx, fn, map[string]any{})
			switch {
			case want == "result" && out.str("event") != "result":
				t.Errorf("%s calling %s: %v, want a result", l, fn, out)
			case want == "FORBIDDEN" && (out.str("code") != "FORBIDDEN" || !strings.Contains(out.str("message"), "not allowed")):
				t.Errorf("%s calling %s: %v, want FORBIDDEN", l, fn, out)
			case want == "" && out.str("code") == "FORBIDDEN":
				t.Errorf("%s calling %s: %v, want it allowed", l, fn, out)
			}
		}

		// Registration hooks: refused, rewritten.
		c.do(t, ctx, map[string]any{"op": "register_function", "ref": "deny", "function_id": c.fn("deny"), "result": 1}, "function_registered")
		c.do(t, ctx, map[string]any{"op": "register_function", "ref": "rename", "function_id": c.fn("rename"), "result": 2}, "function_registered")
		if f.hasFunction("t1::" + c.fn("deny")) {
			t.Errorf("%s: the hook's refusal of %s was ignored", l, c.fn("deny"))
		}
		out = c.call(t, ctx, "t1::"+c.fn("deny"), nil)
		if out.str("code") != "function_not_found" || !strings.Contains(out.str("message"), "no functions called deny") {
			t.Errorf("%s calling its refused function: %v, want function_not_found naming the hook's reason", l, out)
		}
		var renamed bool
		for _, fn := range f.eng.Snapshot().Functions {
			if fn.ID == "t1::"+c.fn("renamed") {
				renamed = strings.Contains(string(fn.Metadata), `"tenant":"t1"`)
			}
		}
		if !renamed {
			t.Errorf("%s: the hook's rewrite of %s is missing (or lacks the session context)", l, c.fn("rename"))
		}
		if out := admin.call(t, ctx, "t1::"+c.fn("renamed"), nil); out.str("event") != "result" || out["result"] != 2.0 {
			t.Errorf("%s: calling the renamed function: %v", l, out)
		}

		tt := "tt-" + string(l)
		c.do(t, ctx, map[string]any{"op": "register_type", "type_id": tt}, "type_registered")
		c.do(t, ctx, map[string]any{"op": "bind", "ref": "denied", "type_id": tt, "function_id": c.fn("echo"), "config": map[string]any{"deny": true}}, "bound")
		c.do(t, ctx, map[string]any{"op": "bind", "ref": "rewritten", "type_id": tt, "function_id": c.fn("echo"), "config": map[string]any{"rewrite": true}}, "bound")
		reg := c.waitEvent(t, ctx, "register_trigger of the rewritten binding", func(e event) bool {
			return e.str("event") == "register_trigger" && e.str("type_id") == tt
		})
		if reg.obj("config")["rewritten"] != true || reg.str("function_id") != "t1::"+c.fn("echo") {
			t.Errorf("%s: rewritten binding reached its provider as %v", l, reg)
		}
		waitUntil(t, ctx, "the SDK logging the refused trigger", func() (bool, string) {
			out := c.output.String()
			return strings.Contains(out, "Trigger registration failed") && strings.Contains(out, "on_trigger_registration hook"), out
		})

		// Middleware: the caller's call is answered by admin::mw, which
		// calls admin::echo with what it got.
		m := mwClients[l]
		m.ready(t, ctx)
		out = m.call(t, ctx, "admin::pub_x", map[string]any{"q": "v"})
		res := out.obj("result")
		if out.str("event") != "result" || res["function_id"] != "admin::pub_x" || res["by"] != "node" ||
			res["payload"].(map[string]any)["q"] != "v" {
			t.Errorf("%s through the middleware: %v", l, out)
		}
		if out := m.call(t, ctx, "engine::functions::list", map[string]any{}); out.str("event") != "result" || out.obj("result")["functions"] == nil {
			t.Errorf("%s: engine:: calls bypass the middleware: %v", l, out)
		}
	}

	// The refused workers keep trying (their auth hangs) and never get in;
	// their processes stay healthy.
	admin.waitEvents(t, ctx, 4, "auth attempts of the refused workers", func(e event) bool {
		return e.str("event") == "invoked" && e.str("function_id") == "admin::hang"
	})
	for _, l := range langs {
		if f.hasFunction(refused[l].fn("echo")) {
			t.Errorf("%s: a refused worker's functions were registered", l)
		}
		select {
		case <-refused[l].exited:
			t.Errorf("%s: refused worker exited: %v", l, refused[l].waitErr)
		default:
		}
	}
	if !strings.Contains(f.logs.String(), "refused by the auth function") {
		t.Error("engine log does not mention the refusals")
	}
}

// authRefusal dials url and returns the AUTH_ERROR frame's code and
// message, checking the socket is closed after it.
func authRefusal(t *testing.T, ctx context.Context, url string) (code, msg string) {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer ws.CloseNow()
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("%s: no refusal frame: %v", url, err)
	}
	var m struct {
		Type  string             `json:"type"`
		Error protocol.ErrorBody `json:"error"`
	}
	if err := json.Unmarshal(data, &m); err != nil || m.Type != "error" {
		t.Fatalf("%s: refusal frame %s: %v", url, data, err)
	}
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) == -1 {
		t.Errorf("%s: socket not closed after the refusal: %v", url, err)
	}
	return m.Error.Code, m.Error.Message
}

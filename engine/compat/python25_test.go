package compat_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// The Python iii-sdk 0.25 (testdata/python25/worker.py) against the engine:
// features, namespaces, registration rejections, the caller a handler
// sees, large messages. The 0.22 SDKs keep their own suites.

// startEngine25 is startEngine with options, and extra advertised features.
func startEngine25(t *testing.T, opts engine.Options, features ...string) *testEngine {
	t.Helper()
	e := enginetest.New(t, opts)
	e.Advertise(features...) // before any worker connects
	return &testEngine{eng: e.Engine, url: e.URL, logs: e.Logs}
}

// start25 starts a 0.25 worker named name in namespace ns ("" for none),
// registering prefix::echo, ::relay, ::big and the extra function ids. It
// does not wait (Python starts slowly; start them together, then wait with
// registered).
func start25(t *testing.T, te *testEngine, prefix, name, ns string, extra ...string) *workerProc {
	t.Helper()
	w := startWorker(t, python25, te.url, prefix, "COMPAT_NAME="+name, "COMPAT_NAMESPACE="+ns,
		"COMPAT_FUNCTIONS="+strings.Join(extra, ","))
	w.name = name
	return w
}

// registered waits until the engine lists a worker named name in
// namespace ns (default for "") serving fn, and returns it.
func registered(t *testing.T, ctx context.Context, te *testEngine, name, ns, fn string) engine.WorkerInfo {
	t.Helper()
	if ns == "" {
		ns = engine.DefaultNamespace
	}
	for {
		for _, w := range te.eng.Snapshot().Workers {
			if w.Name == name && w.Namespace == ns && slices.Contains(w.Functions, fn) {
				return w
			}
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("worker %s never listed in namespace %s with %s: %v", name, ns, fn, ctx.Err())
		}
	}
}

func (w *workerProc) call25(t *testing.T, ctx context.Context, fn, ns string, payload any) event {
	t.Helper()
	opts := map[string]any{}
	if ns != "" {
		opts["namespace"] = ns
	}
	return w.outcome(t, ctx, w.startCall(t, fn, payload, opts))
}

func wantResult(t *testing.T, what string, ev event) map[string]any {
	t.Helper()
	if ev.str("event") != "result" {
		t.Fatalf("%s: %v, want a result", what, ev)
	}
	return ev.obj("result")
}

func wantError(t *testing.T, what string, ev event, code string, contains ...string) {
	t.Helper()
	if ev.str("event") != "error" || ev.str("code") != code {
		t.Errorf("%s: %v, want error %s", what, ev, code)
		return
	}
	for _, s := range contains {
		if !strings.Contains(ev.str("message"), s) {
			t.Errorf("%s: message %q does not say %q", what, ev.str("message"), s)
		}
	}
}

func TestPython25Namespaces(t *testing.T) {
	command(t, python25)
	ctx := testContext(t)
	te := startEngine25(t, engine.Options{})
	orders := start25(t, te, "nsa", "state", "orders")
	billing := start25(t, te, "nsb", "state", "billing")
	plain := start25(t, te, "nsc", "plain", "")
	wa := registered(t, ctx, te, "state", "orders", "nsa::echo")
	registered(t, ctx, te, "state", "billing", "nsb::echo")
	wc := registered(t, ctx, te, "plain", "", "nsc::echo")

	t.Run("features declared", func(t *testing.T) {
		for _, f := range []string{engine.FeatureObserveV1, engine.FeatureLocalDispatchV1, engine.FeatureLargeMessagesV1} {
			if !slices.Contains(wa.Features, f) {
				t.Errorf("worker features %v, want %s among them", wa.Features, f)
			}
		}
	})
	t.Run("calls within and across namespaces", func(t *testing.T) {
		// Without a namespace the SDK names its worker's.
		if r := wantResult(t, "nsa::echo from orders", orders.call25(t, ctx, "nsa::echo", "", 1)); r["by"] != "state" {
			t.Errorf("nsa::echo from orders: %v", r)
		}
		if r := wantResult(t, "nsa::echo from default, naming orders", plain.call25(t, ctx, "nsa::echo", "orders", 2)); r["by"] != "state" {
			t.Errorf("nsa::echo from default: %v", r)
		}
		wantError(t, "nsa::echo from default without a namespace", plain.call25(t, ctx, "nsa::echo", "", 3),
			"function_not_found", "orders")
		wantError(t, "nsc::echo from orders without a namespace", orders.call25(t, ctx, "nsc::echo", "", 4),
			"function_not_found", "namespace orders", "default")
		wantResult(t, "nsc::echo from orders naming default", orders.call25(t, ctx, "nsc::echo", "default", 5))
		wantError(t, "nsb::echo from orders", orders.call25(t, ctx, "nsb::echo", "", 6), "function_not_found", "billing")
		wantResult(t, "nsb::echo from orders naming billing", orders.call25(t, ctx, "nsb::echo", "billing", 7))
	})
	t.Run("listings name the namespace", func(t *testing.T) {
		// engine::* calls go to default (the SDK says so) and see every namespace.
		r := wantResult(t, "functions list", billing.call25(t, ctx, "engine::functions::list", "", map[string]any{}))
		got := map[string]string{}
		for _, f := range r["functions"].([]any) {
			m := f.(map[string]any)
			got[m["function_id"].(string)] = m["namespace"].(string)
		}
		if got["nsa::echo"] != "orders" || got["nsb::echo"] != "billing" || got["nsc::echo"] != "default" {
			t.Errorf("functions list namespaces: %v", got)
		}
		r = wantResult(t, "workers info", plain.call25(t, ctx, "engine::workers::info", "", map[string]any{"name": "state", "namespace": "billing"}))
		if w := r["worker"].(map[string]any); w["namespace"] != "billing" || len(r["functions"].([]any)) != 3 {
			t.Errorf("workers info: %v", r)
		}
		wantError(t, "workers info of a name in two namespaces", plain.call25(t, ctx, "engine::workers::info", "", map[string]any{"name": "state"}),
			"INVALID_ARGUMENTS", "billing, orders")
	})
	t.Run("the handler sees its caller", func(t *testing.T) {
		// plain -> nsa::relay (orders) -> nsb::echo (billing)
		r := wantResult(t, "relay", plain.call25(t, ctx, "nsa::relay", "orders",
			map[string]any{"function_id": "nsb::echo", "namespace": "billing", "payload": "hi"}))
		relayCaller, _ := r["caller"].(map[string]any)
		if relayCaller["worker_id"] != wc.ID || relayCaller["worker_name"] != "plain" {
			t.Errorf("nsa::relay saw caller %v, want worker %s (plain)", relayCaller, wc.ID)
		}
		got, _ := r["got"].(map[string]any)
		echoCaller, _ := got["caller"].(map[string]any)
		if echoCaller["worker_id"] != wa.ID || echoCaller["worker_name"] != "state" {
			t.Errorf("nsb::echo saw caller %v, want worker %s (state)", echoCaller, wa.ID)
		}
	})
}

// With observe.v1 advertised the SDK asserts the handler it calls from
// (function_id, invocation_id, parent); the engine stamps the worker.
func TestPython25CallerChain(t *testing.T) {
	command(t, python25)
	ctx := testContext(t)
	te := startEngine25(t, engine.Options{}, engine.FeatureObserveV1)
	start25(t, te, "cha", "chain-a", "")
	start25(t, te, "chb", "chain-b", "")
	c := start25(t, te, "chc", "chain-c", "")
	wa := registered(t, ctx, te, "chain-a", "", "cha::relay")
	registered(t, ctx, te, "chain-b", "", "chb::relay")
	registered(t, ctx, te, "chain-c", "", "chc::echo")

	// c -> cha::relay -> chb::relay -> chc::echo
	r := wantResult(t, "chain", c.call25(t, ctx, "cha::relay", "", map[string]any{"function_id": "chb::relay",
		"payload": map[string]any{"function_id": "chc::echo", "payload": "end"}}))
	inner, _ := r["got"].(map[string]any)
	innermost, _ := inner["got"].(map[string]any)
	seen, _ := innermost["caller"].(map[string]any)
	parent, _ := seen["parent"].(map[string]any)
	if seen["worker_name"] != "chain-b" || seen["function_id"] != "chb::relay" || seen["invocation_id"] == nil ||
		parent["function_id"] != "cha::relay" || parent["worker_id"] != wa.ID {
		t.Errorf("chc::echo saw caller %v, want chb::relay of chain-b with parent cha::relay of %s", seen, wa.ID)
	}
}

func TestPython25RegistrationRejected(t *testing.T) {
	command(t, python25)
	ctx := testContext(t)
	te := startEngine25(t, engine.Options{})
	owner := start25(t, te, "rx", "dup", "orders", "shared::fn")
	registered(t, ctx, te, "dup", "orders", "shared::fn")

	t.Run("function conflict: one function refused, the worker serves the rest", func(t *testing.T) {
		second := start25(t, te, "ry", "other", "orders", "shared::fn")
		ev := second.waitEvent(t, ctx, "function rejection", func(e event) bool { return e.str("event") == "rejected" })
		if msg := ev.str("message"); !strings.Contains(msg, "FUNCTION_NAMESPACE_CONFLICT") || !strings.Contains(msg, "shared::fn") {
			t.Errorf("rejection logged %q", msg)
		}
		registered(t, ctx, te, "other", "orders", "ry::echo")
		for i := range 3 {
			if r := wantResult(t, "shared::fn", second.call25(t, ctx, "shared::fn", "", i)); r["by"] != "dup" {
				t.Errorf("shared::fn served by %v, want the first owner (dup)", r["by"])
			}
		}
		if r := wantResult(t, "ry::echo", owner.call25(t, ctx, "ry::echo", "", 1)); r["by"] != "other" {
			t.Errorf("ry::echo: %v", r)
		}
	})
	t.Run("worker name conflict: fatal, no reconnect", func(t *testing.T) {
		third := start25(t, te, "rz", "dup", "orders")
		ev := third.waitEvent(t, ctx, "worker rejection", func(e event) bool { return e.str("event") == "rejected" })
		if msg := ev.str("message"); !strings.Contains(msg, "WORKER_NAMESPACE_CONFLICT") || !strings.Contains(msg, "dup") {
			t.Errorf("rejection logged %q", msg)
		}
		wantError(t, "a call after the rejection", third.call25(t, ctx, "rx::echo", "", 1), "WORKER_NAMESPACE_CONFLICT", "dup")
		// Its socket is gone and stays gone; the owner is untouched.
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			for _, w := range te.eng.Snapshot().Workers {
				if slices.Contains(w.Functions, "rz::echo") {
					t.Fatalf("the refused worker is connected: %+v", w)
				}
			}
			waitTick(ctx, 100*time.Millisecond)
		}
		wantResult(t, "the owner still serves", owner.call25(t, ctx, "rx::echo", "", 2))
	})
}

func TestPython25LargeMessages(t *testing.T) {
	command(t, python25)
	ctx := testContext(t)
	te := startEngine25(t, engine.Options{})
	a := start25(t, te, "lma", "large-a", "")
	start25(t, te, "lmb", "large-b", "")
	registered(t, ctx, te, "large-a", "", "lma::big")
	registered(t, ctx, te, "large-b", "", "lmb::big")

	// 20 MiB each way: over the 16 MiB past which the SDK and the engine
	// send fragments. Under the race detector (about 15 s per 20 MiB on a
	// loaded machine) the payload is 17 MiB and the result 3 MiB.
	in, out := 20<<20, 20<<20
	if raceEnabled {
		in, out = 17<<20, 3<<20
	}
	start := time.Now()
	r := wantResult(t, "large payload", a.outcome(t, ctx, a.startCall(t, "lmb::big", nil, map[string]any{"size": in})))
	if r["length"] != float64(in) || r["by"] != "large-b" {
		t.Errorf("%d-byte payload: %v", in, r)
	}
	t.Logf("%d-byte payload through the engine in %v", in, time.Since(start))
	start = time.Now()
	r = wantResult(t, "large result", a.call25(t, ctx, "lmb::big", "", map[string]any{"size": out}))
	if r["string_length"] != float64(out) {
		t.Errorf("%d-byte result: %v", out, r)
	}
	t.Logf("%d-byte result through the engine in %v", out, time.Since(start))

	// Over 64 MiB the SDK refuses before sending; the engine's own refusal
	// of 64 MiB + 1 is tested with raw sockets (engine/largemsg_test.go).
	wantError(t, "64 MiB + 1", a.outcome(t, ctx, a.startCall(t, "lmb::big", nil, map[string]any{"size": 64<<20 + 1})),
		"payload_too_large", fmt.Sprint(64<<20))
	wantResult(t, "still connected", a.call25(t, ctx, "lmb::echo", "", 1))
}

// Trigger types per namespace with the deprecated trigger API of Python
// 0.25: two projects each provide a "hook" type; a worker's
// register_trigger reaches its own namespace's provider (or the one its
// trigger_namespace names), the provider's handler gets the target's
// namespace and fires the function there; a worker in a namespace without
// a provider falls back to the default namespace's.
func TestPython25TriggerNamespaces(t *testing.T) {
	command(t, python25)
	ctx := testContext(t)
	te := startEngine25(t, engine.Options{})
	pOrders := startWorker(t, python25, te.url, "tpo", "COMPAT_NAME=hooks", "COMPAT_NAMESPACE=orders", "COMPAT_TRIGGER_TYPE=hook")
	pBilling := startWorker(t, python25, te.url, "tpb", "COMPAT_NAME=hooks", "COMPAT_NAMESPACE=billing", "COMPAT_TRIGGER_TYPE=hook")
	pDefault := startWorker(t, python25, te.url, "tpd", "COMPAT_NAME=hooks", "COMPAT_TRIGGER_TYPE=hook")
	orders := start25(t, te, "tno", "app", "orders")
	analytics := start25(t, te, "tna", "app", "analytics")
	registered(t, ctx, te, "hooks", "orders", "tpo::echo")
	registered(t, ctx, te, "hooks", "billing", "tpb::echo")
	registered(t, ctx, te, "hooks", "", "tpd::echo")
	registered(t, ctx, te, "app", "orders", "tno::echo")
	registered(t, ctx, te, "app", "analytics", "tna::echo")
	for {
		n := 0
		for _, tt := range te.eng.Snapshot().TriggerTypes {
			if tt.ID == "hook" {
				n++
			}
		}
		if n == 3 {
			break
		}
		if !waitTick(ctx, 20*time.Millisecond) {
			t.Fatalf("three hook trigger types never listed: %v", te.eng.Snapshot().TriggerTypes)
		}
	}

	bound := func(p *workerProc, fn string) event {
		t.Helper()
		return p.waitEvent(t, ctx, "trigger of "+fn, func(e event) bool {
			return e.str("event") == "trigger_registered" && e.str("function_id") == fn
		})
	}
	bind := func(w *workerProc, fn, tns string) {
		t.Helper()
		cmd := map[string]any{"op": "bind", "ref": fn, "trigger_type": "hook", "function_id": fn, "config": map[string]any{"fn": fn}}
		if tns != "" {
			cmd["trigger_namespace"] = tns
		}
		w.do(t, ctx, cmd, "sent")
	}

	t.Run("its own namespace's provider, which fires it there", func(t *testing.T) {
		bind(orders, "tno::echo", "")
		ev := bound(pOrders, "tno::echo")
		if ev.str("namespace") != "orders" {
			t.Errorf("the orders provider was given %v, want namespace orders", ev)
		}
		r := pOrders.do(t, ctx, map[string]any{"op": "fire", "ref": "fire-1", "trigger_id": ev.str("trigger_id")}, "fired").obj("result")
		if r["by"] != "app" || r["data"].(map[string]any)["fired_by"] != "hooks" {
			t.Errorf("fired: %v", r)
		}
	})
	t.Run("trigger_namespace names the provider's namespace", func(t *testing.T) {
		bind(orders, "tno::relay", "billing")
		if ev := bound(pBilling, "tno::relay"); ev.str("namespace") != "orders" {
			t.Errorf("the billing provider was given %v, want the target's namespace orders", ev)
		}
	})
	t.Run("a namespace without a provider falls back to the default one's", func(t *testing.T) {
		bind(analytics, "tna::echo", "")
		if ev := bound(pDefault, "tna::echo"); ev.str("namespace") != "analytics" {
			t.Errorf("the default provider was given %v, want namespace analytics", ev)
		}
	})
	// None of the bindings reached a provider it was not meant for.
	for _, p := range []*workerProc{pOrders, pBilling, pDefault} {
		p.mu.Lock()
		n := 0
		for _, e := range p.events {
			if e.str("event") == "trigger_registered" {
				n++
			}
		}
		p.mu.Unlock()
		if n != 1 {
			t.Errorf("provider %s got %d bindings, want 1", p.prefix, n)
		}
	}
}

package engine_test

import (
	"strings"
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// provider dials a 0.25 worker in namespace ns that provides trigger type
// typ. before: it registers the type before declaring itself (as the SDKs
// replay registrations), else after.
func provider(t *testing.T, url, name, ns, typ string, before bool) *enginetest.Worker {
	t.Helper()
	w := enginetest.Dial(t, url)
	reg := map[string]any{"type": "registertriggertype", "id": typ, "description": typ + " in " + ns}
	if before {
		w.Send(reg)
	}
	data := map[string]any{"name": name, "runtime": "python", "features": []string{"large-messages.v1"}}
	if ns != "" {
		data["namespace"] = ns
	}
	w.Declare(data)
	if !before {
		w.Send(reg) // the test reads what it is handed
	}
	return w
}

func bindTrigger(w *enginetest.Worker, id, typ, fn, ns, tns string) {
	w.T().Helper()
	m := map[string]any{"type": "registertrigger", "id": id, "trigger_type": typ, "function_id": fn, "config": map[string]any{"id": id}}
	if ns != "" {
		m["namespace"] = ns
	}
	if tns != "" {
		m["trigger_namespace"] = tns
	}
	w.Send(m)
	w.Quiet()
}

// expectBind reads the registertrigger a provider gets and checks the
// namespaces it carries ("" = absent), and acks it.
func expectBind(t *testing.T, p *enginetest.Worker, id, ns, tns string) {
	t.Helper()
	m := p.Expect("registertrigger")
	got := func(k string) string { s, _ := m[k].(string); return s }
	if got("id") != id || got("namespace") != ns || got("trigger_namespace") != tns {
		t.Errorf("provider got %v, want id %s namespace %q trigger_namespace %q", m, id, ns, tns)
	}
	p.Send(map[string]any{"type": "triggerregistrationresult", "id": m["id"], "trigger_type": m["trigger_type"], "function_id": m["function_id"]})
}

func triggerInfo(te *enginetest.Engine, id string) (engine.TriggerInfo, bool) {
	for _, tr := range te.Snapshot().Triggers {
		for _, c := range tr.ClaimIDs {
			if c == id {
				return tr, true
			}
		}
	}
	return engine.TriggerInfo{}, false
}

func TestTriggerTypesPerNamespace(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	// Two projects provide a type of the same name; one registers it
	// before its declaration, the other after.
	pOrders := provider(t, te.URL, "hooks", "orders", "webhook", true)
	pBilling := provider(t, te.URL, "hooks", "billing", "webhook", false)
	orders := declared(t, te.URL, "app", "orders", "orders::on-hook")
	billing := declared(t, te.URL, "app", "billing", "billing::on-hook")

	t.Run("both are listed, each in its namespace", func(t *testing.T) {
		// registertriggertype has no answer: wait until the engine has read
		// both (billing's comes last, after its declaration).
		var got []string
		enginetest.WaitFor(t, "two webhook trigger types", func() bool {
			got = got[:0]
			for _, tt := range te.Snapshot().TriggerTypes {
				if tt.ID == "webhook" {
					got = append(got, tt.Namespace+"/"+tt.Description)
				}
			}
			return len(got) >= 2
		})
		if strings.Join(got, ",") != "billing/webhook in billing,orders/webhook in orders" {
			t.Errorf("webhook types: %v", got)
		}
	})

	t.Run("a trigger finds the provider of its worker's namespace", func(t *testing.T) {
		bindTrigger(orders, "t-orders", "webhook", "orders::on-hook", "orders", "")
		expectBind(t, pOrders, "t-orders", "orders", "orders")
		bindTrigger(billing, "t-billing", "webhook", "billing::on-hook", "billing", "")
		expectBind(t, pBilling, "t-billing", "billing", "billing")
		pOrders.Quiet()
		pBilling.Quiet()
	})

	t.Run("a named trigger_namespace is where its provider is", func(t *testing.T) {
		bindTrigger(orders, "t-cross", "webhook", "orders::on-hook", "orders", "billing")
		expectBind(t, pBilling, "t-cross", "orders", "billing")
		pOrders.Quiet()
	})

	t.Run("unknown trigger_namespace: parked until a provider registers there", func(t *testing.T) {
		bindTrigger(orders, "t-nowhere", "webhook", "orders::on-hook", "orders", "nowhere")
		pOrders.Quiet()
		pBilling.Quiet()
		if tr, ok := triggerInfo(te, "t-nowhere"); !ok || tr.Active {
			t.Fatalf("t-nowhere: listed %v (found %v), want parked", tr, ok)
		}
		if !strings.Contains(te.Logs.String(), "trigger_namespace=nowhere") {
			t.Errorf("the engine did not log why t-nowhere is parked")
		}
		late := provider(t, te.URL, "hooks", "nowhere", "webhook", false)
		expectBind(t, late, "t-nowhere", "orders", "nowhere")
		late.Quiet()
		if tr, _ := triggerInfo(te, "t-nowhere"); !tr.Active {
			t.Errorf("t-nowhere still parked after its provider came: %v", tr)
		}
	})

	t.Run("a blank namespace or trigger_namespace is refused with INVALID_NAMESPACE", func(t *testing.T) {
		for _, f := range []string{"namespace", "trigger_namespace"} {
			m := map[string]any{"type": "registertrigger", "id": "t-blank-" + f, "trigger_type": "webhook",
				"function_id": "orders::on-hook", "config": map[string]any{}, f: "  "}
			orders.Send(m)
			res := orders.Expect("triggerregistrationresult")
			msg, _ := res["error"].(map[string]any)["message"].(string)
			if enginetest.ErrCode(res) != "INVALID_NAMESPACE" || res["id"] != "t-blank-"+f || !strings.Contains(msg, f+" is blank") {
				t.Errorf("blank %s: %v", f, res)
			}
			if _, ok := triggerInfo(te, "t-blank-"+f); ok {
				t.Errorf("blank %s: the trigger was stored", f)
			}
		}
	})

	t.Run("unregistertriggertype names its namespace; the bindings it served are parked", func(t *testing.T) {
		pBilling.Send(map[string]any{"type": "unregistertriggertype", "id": "webhook", "namespace": "orders"})
		pBilling.Quiet() // not its type in orders: ignored
		if tr, _ := triggerInfo(te, "t-orders"); !tr.Active {
			t.Fatalf("t-orders lost its provider to another namespace's unregister")
		}
		pBilling.Send(map[string]any{"type": "unregistertriggertype", "id": "webhook"}) // its own namespace
		pBilling.Quiet()
		for _, id := range []string{"t-billing", "t-cross"} {
			if tr, _ := triggerInfo(te, id); tr.Active {
				t.Errorf("%s still active after its provider withdrew the type", id)
			}
		}
		if tr, _ := triggerInfo(te, "t-orders"); !tr.Active {
			t.Errorf("t-orders was parked by billing's unregister")
		}
	})
}

// A binding whose worker's namespace has no provider falls back to the
// default namespace's, and moves to its own namespace's provider when one
// registers (as in iii); when that one leaves, it falls back again. A
// 0.22 provider (no declaration) serves the default namespace and sees
// no namespace fields.
func TestTriggerProviderFallback(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	def := enginetest.Dial(t, te.URL) // a 0.22 provider
	def.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "default"})
	def.Quiet()
	app := declared(t, te.URL, "app", "analytics", "report")

	bindTrigger(app, "t-1", "webhook", "report", "analytics", "")
	m := def.Expect("registertrigger")
	if m["id"] != "t-1" || m["namespace"] != "analytics" || m["trigger_namespace"] != nil {
		t.Fatalf("default provider got %v", m)
	}

	own := provider(t, te.URL, "hooks", "analytics", "webhook", false)
	if m := def.Expect("unregistertrigger"); m["id"] != "t-1" {
		t.Errorf("the fallback provider was not told to let go: %v", m)
	}
	expectBind(t, own, "t-1", "analytics", "analytics")
	own.Quiet()

	own.Conn.CloseNow()
	if m := def.Expect("registertrigger"); m["id"] != "t-1" || m["namespace"] != "analytics" {
		t.Errorf("the binding did not fall back to the default provider: %v", m)
	}
	def.Quiet()
}

// A worker that registers its trigger type and its triggers before it
// declares its namespace (the SDKs' replay order) does not take the
// default namespace's provider over, even for a moment: the type waits
// for the declaration and lands in the worker's namespace.
func TestTriggerTypeBeforeDeclaration(t *testing.T) {
	te := enginetest.New(t, engine.Options{})
	def := enginetest.Dial(t, te.URL)
	def.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "default"})
	def.Quiet()

	w := enginetest.Dial(t, te.URL)
	w.Send(map[string]any{"type": "registertriggertype", "id": "webhook", "description": "mine"})
	w.Send(map[string]any{"type": "registerfunction", "id": "on-hook"})
	bindTrigger(w, "t-early", "webhook", "on-hook", "proj", "")
	// Before the declaration its home is the default namespace.
	if m := def.Expect("registertrigger"); m["id"] != "t-early" {
		t.Fatalf("default provider got %v", m)
	}
	w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
		"data": map[string]any{"name": "proj-worker", "namespace": "proj", "features": []string{"large-messages.v1"}}})
	if m := def.Expect("unregistertrigger"); m["id"] != "t-early" {
		t.Errorf("default provider: %v", m)
	}
	expectBind(t, w, "t-early", "proj", "proj")
	w.Quiet()
	def.Quiet()
	types := map[string]string{}
	for _, tt := range te.Snapshot().TriggerTypes {
		types[tt.Namespace] = tt.Description
	}
	if types["default"] != "default" || types["proj"] != "mine" {
		t.Errorf("trigger types after the declaration: %v", types)
	}
}

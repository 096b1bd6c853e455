package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/cluster"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/engine/watch"
)

// nsWorker dials a worker of a 0.25 SDK: it registers fns, then declares
// its name and namespace ("" for none), as the SDK replays them.
func nsWorker(t *testing.T, url, name, ns string, fns ...string) *enginetest.Worker {
	t.Helper()
	w := enginetest.Dial(t, url)
	for _, fn := range fns {
		w.Send(map[string]any{"type": "registerfunction", "id": fn})
	}
	data := map[string]any{"name": name, "runtime": "python", "features": []string{"large-messages.v1"}}
	if ns != "" {
		data["namespace"] = ns
	}
	w.Declare(data)
	return w
}

// sendIn sends an invokefunction of fn in namespace ns ("" for none) and
// returns its invocation id.
func sendIn(w *enginetest.Worker, fn, ns string, data any, action map[string]any) string {
	id := uuid.NewString()
	m := map[string]any{"type": "invokefunction", "invocation_id": id, "function_id": fn, "data": data}
	if ns != "" {
		m["namespace"] = ns
	}
	if action != nil {
		m["action"] = action
	}
	w.Send(m)
	return id
}

// served makes a call from caller that host must serve: it returns the
// invokefunction the host got and the result the caller got.
func served(t *testing.T, caller, host *enginetest.Worker, fn, ns string, data any) (inv, res map[string]any) {
	t.Helper()
	id := sendIn(caller, fn, ns, data, nil)
	inv = host.ServeOnce(map[string]any{"echo": data}, nil)
	res = caller.Expect("invocationresult")
	if res["invocation_id"] != id {
		t.Fatalf("result %v is not that of call %s", res, id)
	}
	return inv, res
}

// listing is engine e's engine::functions::list: "namespace/id" -> the
// engines serving it.
func listing(ctx context.Context, e *engine.Engine) map[string][]string {
	res, err := invoke(ctx, e, "engine::functions::list", map[string]any{})
	if err != nil {
		return nil
	}
	var fl struct {
		Functions []struct {
			ID        string   `json:"function_id"`
			Namespace string   `json:"namespace"`
			Engines   []string `json:"engines"`
		} `json:"functions"`
	}
	json.Unmarshal(res, &fl)
	out := map[string][]string{}
	for _, f := range fl.Functions {
		out[f.Namespace+"/"+f.ID] = f.Engines
	}
	return out
}

// lists reports whether engine e lists each "namespace/id" as served by
// the engine named in want (and, for an empty name, not at all).
func lists(ctx context.Context, e *engine.Engine, want map[string]string) bool {
	got := listing(ctx, e)
	for k, eng := range want {
		engines, ok := got[k]
		if eng == "" && ok || eng != "" && (len(engines) != 1 || engines[0] != eng) {
			return false
		}
	}
	return true
}

// TestNamespacesAcrossEngines: three engines; the same function id is
// served in namespace orders on engine B, in namespace billing and in the
// default namespace on engine C. A call made on engine A reaches the
// worker of the namespace it names and never another.
func TestNamespacesAcrossEngines(t *testing.T) {
	storetest.Each(t, func(t *testing.T, rb storetest.Backend) {
		ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
		defer cancel()
		name := fmt.Sprintf("ns%d", time.Now().UnixNano())
		a := enginetest.Start(t, ctx, clusterYAML(rb.URL, name))
		b := enginetest.Start(t, ctx, clusterYAML(rb.URL, name))
		c := enginetest.Start(t, ctx, clusterYAML(rb.URL, name))
		orders := nsWorker(t, b.URL(), "state", "orders", "state::get")
		billing := nsWorker(t, c.URL(), "state", "billing", "state::get")
		plain := enginetest.Dial(t, c.URL()) // a 0.22 SDK: the default namespace
		plain.Register("state::get")
		caller := enginetest.Dial(t, a.URL())
		bName, cName := b.Cluster().EngineName(), c.Cluster().EngineName()
		waitFor(t, ctx, "engine A to list state::get in every namespace", func() bool {
			return lists(ctx, a.Engine(), map[string]string{"orders/state::get": bName, "billing/state::get": cName,
				"default/state::get": cName})
		})
		quiet := func() {
			t.Helper()
			orders.Quiet()
			billing.Quiet()
			plain.Quiet()
		}

		t.Run("a call reaches the worker of its namespace", func(t *testing.T) {
			for _, tc := range []struct {
				ns   string
				host *enginetest.Worker
			}{{"orders", orders}, {"billing", billing}, {"", plain}, {"default", plain}} {
				inv, res := served(t, caller, tc.host, "state::get", tc.ns, "in "+tc.ns)
				if inv["data"] != "in "+tc.ns || res["error"] != nil || res["result"].(map[string]any)["echo"] != "in "+tc.ns {
					t.Errorf("namespace %q: host got %v, caller got %v", tc.ns, inv, res)
				}
				switch {
				case tc.host != plain && inv["namespace"] != tc.ns:
					t.Errorf("namespace %q: the 0.25 host on the other engine was not told the namespace: %v", tc.ns, inv)
				case tc.host == plain && inv["namespace"] != nil:
					t.Errorf("a 0.22 host got a namespace field: %v", inv)
				}
			}
			quiet()
		})

		t.Run("the same id in two namespaces: no cross-talk", func(t *testing.T) {
			// Keyed by the bare id, round-robin over B and C would send
			// about half of each namespace's calls to the wrong worker.
			const n = 20
			ids := map[string]string{}
			for i := range n {
				for _, ns := range []string{"orders", "billing"} {
					tag := fmt.Sprintf("%s-%d", ns, i)
					ids[sendIn(caller, "state::get", ns, tag, nil)] = tag
				}
			}
			for _, h := range []struct {
				ns   string
				host *enginetest.Worker
			}{{"orders", orders}, {"billing", billing}} {
				for range n {
					inv := h.host.ServeOnce("served in "+h.ns, nil)
					if tag, _ := inv["data"].(string); !strings.HasPrefix(tag, h.ns+"-") || inv["namespace"] != h.ns {
						t.Errorf("the %s worker got %v", h.ns, inv)
					}
				}
			}
			for range 2 * n {
				res := caller.Expect("invocationresult")
				tag := ids[res["invocation_id"].(string)]
				ns, _, _ := strings.Cut(tag, "-")
				if res["result"] != "served in "+ns {
					t.Errorf("call %s: %v", tag, res)
				}
			}
			quiet()
		})

		t.Run("a namespace nobody serves", func(t *testing.T) {
			sendIn(caller, "state::get", "analytics", nil, nil)
			res := caller.Expect("invocationresult")
			msg, _ := res["error"].(map[string]any)["message"].(string)
			// The namespaces named are the other engines' (A serves none).
			if enginetest.ErrCode(res) != engine.CodeFunctionNotFound || !strings.Contains(msg, "namespace analytics") ||
				!strings.Contains(msg, "registered in namespace(s): billing, default, orders") {
				t.Errorf("a call in analytics: %v, want function_not_found naming the namespaces where the id is", res)
			}
			quiet()
		})

		t.Run("in-process callers name the namespace too", func(t *testing.T) {
			got := make(chan error, 1)
			go func() {
				_, err := a.Engine().Invoke(ctx, engine.Request{FunctionID: "state::get", Namespace: "billing", Data: json.RawMessage(`"engine"`)})
				got <- err
			}()
			if inv := billing.ServeOnce("ok", nil); inv["data"] != "engine" {
				t.Errorf("billing got %v", inv)
			}
			if err := <-got; err != nil {
				t.Error(err)
			}
			quiet()
		})

		t.Run("an enqueued call keeps its namespace", func(t *testing.T) {
			sendIn(caller, "state::get", "orders", "queued", map[string]any{"type": "enqueue", "queue": "default"})
			if res := caller.Expect("invocationresult"); res["error"] != nil {
				t.Fatalf("enqueue: %v", res)
			}
			if inv := orders.ServeOnce("done", nil); inv["data"] != "queued" || inv["namespace"] != "orders" {
				t.Errorf("orders got %v", inv)
			}
			quiet()
		})

		t.Run("a durable topic reaches a namespaced subscriber on another engine", func(t *testing.T) {
			orders.Send(map[string]any{"type": "registertrigger", "id": "sub-orders", "trigger_type": "durable:subscriber",
				"function_id": "state::get", "namespace": "orders", "config": map[string]any{"topic": "ns-topic"}})
			waitFor(t, ctx, "engine A to learn the subscriber", func() bool {
				return len(a.Engine().ClusterBindings("durable:subscriber")) == 1
			})
			if _, err := invoke(ctx, a.Engine(), "iii::durable::publish", map[string]any{"topic": "ns-topic", "data": "published"}); err != nil {
				t.Fatal(err)
			}
			if inv := orders.ServeOnce(nil, nil); inv["namespace"] != "orders" || inv["function_id"] != "state::get" {
				t.Errorf("the subscriber got %v", inv)
			}
			quiet()
		})

		t.Run("listings and advertisements name the namespace", func(t *testing.T) {
			res, err := invoke(ctx, a.Engine(), "engine::workers::list", map[string]any{})
			if err != nil {
				t.Fatal(err)
			}
			var wl struct {
				Workers []struct {
					ID        string `json:"id"`
					Namespace string `json:"namespace"`
					Engine    string `json:"engine"`
				} `json:"workers"`
			}
			json.Unmarshal(res, &wl)
			found := map[string]string{}
			for _, w := range wl.Workers {
				found[w.ID] = w.Namespace + "@" + w.Engine
			}
			for id, want := range map[string]string{orders.ID: "orders@" + bName, billing.ID: "billing@" + cName, plain.ID: "default@" + cName} {
				if found[id] != want {
					t.Errorf("worker %s listed on engine A as %q, want %q (%s)", id, found[id], want, res)
				}
			}
			// The info functions find other engines' entries by namespace.
			res, err = invoke(ctx, a.Engine(), "engine::functions::info", map[string]any{"function_id": "state::get", "namespace": "orders"})
			if err != nil || !strings.Contains(string(res), `"namespace":"orders"`) || !strings.Contains(string(res), `"worker_name":"state"`) {
				t.Errorf("engine::functions::info of state::get in orders on engine A: %s, %v", res, err)
			}
			res, err = invoke(ctx, a.Engine(), "engine::workers::info", map[string]any{"name": "state", "namespace": "billing"})
			if err != nil || !strings.Contains(string(res), `"namespace":"billing"`) || !strings.Contains(string(res), `"function_id":"state::get"`) {
				t.Errorf("engine::workers::info of state in billing on engine A: %s, %v", res, err)
			}
			if _, err = invoke(ctx, a.Engine(), "engine::workers::info", map[string]any{"name": "state"}); errCode(err) != "INVALID_ARGUMENTS" ||
				!strings.Contains(err.Error(), "billing, orders") {
				t.Errorf("engine::workers::info of state in no namespace: %v, want INVALID_ARGUMENTS naming both namespaces", err)
			}
			// engine::snapshot, which the TUI reads, alike.
			res, err = invoke(ctx, a.Engine(), "engine::snapshot", map[string]any{})
			if err != nil {
				t.Fatal(err)
			}
			var snap watch.Snapshot
			json.Unmarshal(res, &snap)
			found = map[string]string{}
			for _, w := range snap.Workers {
				found[w.ID] = w.Namespace + "@" + w.Engine
			}
			fns := map[string]string{}
			for _, f := range snap.Functions {
				if f.ID == "state::get" {
					fns[f.Namespace] = strings.Join(f.Engines, ",")
				}
			}
			if found[orders.ID] != "orders@"+bName || found[billing.ID] != "billing@"+cName ||
				fns["orders"] != bName || fns["billing"] != cName || fns["default"] != cName {
				t.Errorf("engine::snapshot: workers %v, state::get by namespace %v", found, fns)
			}
			// In Redis: the namespace on namespaced entries only; a
			// default-namespace entry reads as before namespaces.
			rdb := rb.Client(t)
			for _, tc := range []struct {
				srv  *enginetest.Server
				want []string
				not  []string
			}{
				{b, []string{`{"id":"state::get","namespace":"orders",`, `"name":"state","namespace":"orders",`}, nil},
				{c, []string{`{"id":"state::get","namespace":"billing",`, `{"id":"state::get","workers":`}, []string{`"namespace":"default"`}},
			} {
				key := "iii:cluster:" + name + ":engine:" + tc.srv.Cluster().ID()
				ad, err := rdb.Get(ctx, key).Result()
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				for _, s := range tc.want {
					if !strings.Contains(ad, s) {
						t.Errorf("advertisement %s has no %s", ad, s)
					}
				}
				for _, s := range tc.not {
					if strings.Contains(ad, s) {
						t.Errorf("advertisement %s has %s", ad, s)
					}
				}
			}
		})
	})
}

// TestNamespaceAdvertisementExpiry: when the engine serving a function in
// a namespace lapses (or its worker leaves), the others drop that
// namespace's entry, and a call in that namespace ends with
// function_not_found instead of reaching the same id in another
// namespace.
func TestNamespaceAdvertisementExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	rs := storetest.StartServer(t)
	name := fmt.Sprintf("nsx%d", time.Now().UnixNano())
	a := enginetest.Start(t, ctx, clusterYAML(rs.URL(), name))
	b := enginetest.Start(t, ctx, clusterYAML(rs.URL(), name))
	c := enginetest.Start(t, ctx, clusterYAML(rs.URL(), name))
	orders := nsWorker(t, b.URL(), "state", "orders", "state::get")
	billing := nsWorker(t, c.URL(), "state", "billing", "state::get")
	audit := nsWorker(t, c.URL(), "audit", "audit", "state::get")
	caller := enginetest.Dial(t, a.URL())
	bName, cName := b.Cluster().EngineName(), c.Cluster().EngineName()
	waitFor(t, ctx, "engine A to list both namespaces", func() bool {
		return lists(ctx, a.Engine(), map[string]string{"orders/state::get": bName, "billing/state::get": cName,
			"audit/state::get": cName})
	})
	if _, res := served(t, caller, orders, "state::get", "orders", 1); res["error"] != nil {
		t.Fatalf("before the lapse: %v", res)
	}

	frozeAt := time.Now()
	cluster.Freeze(b.Cluster())
	waitFor(t, ctx, "engine A to drop orders/state::get", func() bool {
		return lists(ctx, a.Engine(), map[string]string{"orders/state::get": "", "billing/state::get": cName})
	})
	if d := time.Since(frozeAt); d > ttl+heartbeat+time.Second {
		t.Errorf("orders/state::get was listed %v after engine B's last heartbeat; want at most ttl+heartbeat (%v)", d, ttl+heartbeat)
	}
	sendIn(caller, "state::get", "orders", 2, nil)
	res := caller.Expect("invocationresult")
	msg, _ := res["error"].(map[string]any)["message"].(string)
	if enginetest.ErrCode(res) != engine.CodeFunctionNotFound || !strings.Contains(msg, "namespace orders") {
		t.Errorf("a call in orders after engine B lapsed: %v, want function_not_found", res)
	}
	if _, res := served(t, caller, billing, "state::get", "billing", 3); res["error"] != nil {
		t.Errorf("billing after engine B lapsed: %v", res)
	}

	// A namespaced worker that leaves is withdrawn from the advertisement
	// at once; the same id in the other namespace on its engine stays.
	billing.Conn.CloseNow()
	waitFor(t, ctx, "engine A to drop billing/state::get", func() bool {
		return lists(ctx, a.Engine(), map[string]string{"billing/state::get": "", "audit/state::get": cName})
	})
	sendIn(caller, "state::get", "billing", 4, nil)
	if res := caller.Expect("invocationresult"); enginetest.ErrCode(res) != engine.CodeFunctionNotFound {
		t.Errorf("a call in billing after its worker left: %v, want function_not_found", res)
	}
	if inv, res := served(t, caller, audit, "state::get", "audit", 5); res["error"] != nil || inv["namespace"] != "audit" {
		t.Errorf("audit: %v, %v", inv, res)
	}
	orders.Quiet()
	audit.Quiet()
}

// TestRBACMetadataAcrossEngines: an expose_functions metadata rule of a
// namespace, on engine A's RBAC listener, reads the metadata of the
// function the call reaches on engine B (A serves none of it).
func TestRBACMetadataAcrossEngines(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	mr := storetest.Mini(t)
	name := fmt.Sprintf("nsr%d", time.Now().UnixNano())
	cfg, err := config.Parse("config.yaml", []byte(clusterYAML(mr.URL, name)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listeners = []config.Listener{{Host: "127.0.0.1"}, {Host: "127.0.0.1", RBAC: &config.RBAC{ExposeFunctions: []config.FunctionFilter{
		{Metadata: map[string]config.MetadataMatcher{"public": {Value: true}}, Namespace: "orders"}}}}}
	a := enginetest.StartConfig(t, ctx, cfg)
	b := enginetest.Start(t, ctx, clusterYAML(mr.URL, name))
	host := enginetest.Dial(t, b.URL())
	host.Send(map[string]any{"type": "registerfunction", "id": "state::get", "metadata": map[string]any{"public": true}})
	host.Send(map[string]any{"type": "registerfunction", "id": "state::put", "metadata": map[string]any{"public": false}})
	host.Declare(map[string]any{"name": "state", "namespace": "orders", "features": []string{"large-messages.v1"}})
	waitFor(t, ctx, "engine A to list orders/state::get and state::put", func() bool {
		return lists(ctx, a.Engine(), map[string]string{"orders/state::get": b.Cluster().EngineName(), "orders/state::put": b.Cluster().EngineName()})
	})
	caller := enginetest.Dial(t, "ws://"+a.ListenerAddrs()[0])
	if inv, res := served(t, caller, host, "state::get", "orders", 1); res["error"] != nil || inv["namespace"] != "orders" {
		t.Errorf("state::get (public) in orders from A's RBAC listener: %v, %v", inv, res)
	}
	sendIn(caller, "state::put", "orders", 2, nil)
	if res := caller.Expect("invocationresult"); enginetest.ErrCode(res) != "FORBIDDEN" {
		t.Errorf("state::put (not public) in orders: %v, want FORBIDDEN", res)
	}
	sendIn(caller, "state::get", "", 3, nil)
	if res := caller.Expect("invocationresult"); enginetest.ErrCode(res) != "FORBIDDEN" {
		t.Errorf("state::get in default (the rule is orders'): %v, want FORBIDDEN", res)
	}
	host.Quiet()
}

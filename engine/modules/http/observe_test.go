package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine/enginetest"
)

// A route served by an observer of http::on-request goes through the
// observer: each request is an activation of its target (counted in its
// fires), and max_fires withdraws the route after the last one.
func TestObserverRouteHonoursMaxFires(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "")
	w := enginetest.Dial(t, f.srv.URL())
	w.Send(map[string]any{"type": "registerfunction", "id": "web::twice"})
	w.Declare(map[string]any{"name": "web", "features": []string{"observe.v1"}})
	id := uuid.NewString()
	w.Send(map[string]any{"type": "observe", "id": id, "max_fires": 2,
		"source": map[string]any{"function_id": "http::on-request", "args": map[string]any{"method": "GET", "path": "/twice"}},
		"target": map[string]any{"function_id": "web::twice"}})
	for {
		m := w.Next(enginetest.FrameTimeout)
		if m["type"] == "observeresult" {
			if m["state"] != "active" {
				t.Fatalf("observe: %v", m)
			}
			break
		}
	}
	var disposed map[string]any // max_fires disposes it when it admits the last activation
	for n := 1; n <= 2; n++ {
		got := make(chan reply, 1)
		go func() { got <- f.do(t, ctx, http.MethodGet, "/twice", nil) }()
		var inv map[string]any
		for inv == nil {
			switch m := w.Next(enginetest.FrameTimeout); m["type"] {
			case "invokefunction":
				inv = m
			case "observerstatechanged":
				disposed = m
			}
		}
		act, _ := inv["activation"].(map[string]any)
		if inv["function_id"] != "web::twice" || act["observer_id"] != id {
			t.Errorf("request %d reached the target as %v, want an activation of observer %s", n, inv, id)
		}
		w.Send(map[string]any{"type": "invocationresult", "invocation_id": inv["invocation_id"], "function_id": inv["function_id"],
			"result": map[string]any{"status_code": 200, "body": map[string]any{"n": n}}})
		if r := <-got; r.status != 200 {
			t.Errorf("request %d: %v", n, r)
		}
	}
	for disposed == nil {
		if m := w.Next(enginetest.FrameTimeout); m["type"] == "observerstatechanged" {
			disposed = m
		}
	}
	if r, _ := disposed["reason"].(map[string]any); disposed["state"] != "disposed" || r["code"] != "MAX_FIRES" || disposed["fires"] != float64(2) {
		t.Errorf("after two requests: %v, want disposed MAX_FIRES after 2 fires", disposed)
	}
	f.waitStatus(t, ctx, http.MethodGet, "/twice", http.StatusNotFound)
}

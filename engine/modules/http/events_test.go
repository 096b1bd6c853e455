package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/enginetest"
	"github.com/iii-workbench/iii/engine/event"
)

func TestRequestServedEvents(t *testing.T) {
	ctx := enginetest.Context(t)
	f := startServer(t, ctx, "")
	sub := f.srv.Engine().Events().Subscribe(256)
	defer sub.Close()
	w, _ := f.connect(t, ctx, "events")
	must(t, w.RegisterFunction("ev::get", func(context.Context, json.RawMessage) (any, error) {
		return map[string]any{"status_code": 201}, nil
	}))
	route(w, t, "ev::get", "GET", "items/:id", nil)
	f.waitStatus(t, ctx, "GET", "/items/7", http.StatusCreated)
	f.do(t, ctx, "GET", "/nowhere", nil)

	want := map[string]int{"items/:id": http.StatusCreated, "": http.StatusNotFound}
	deadline := time.After(5 * time.Second)
	for len(want) > 0 {
		select {
		case ev := <-sub.C():
			s, ok := ev.(event.HTTPRequestServed)
			if !ok {
				continue
			}
			if status, ok := want[s.Route]; ok && status == s.Status && s.Method == "GET" && s.Duration > 0 {
				delete(want, s.Route)
			}
		case <-deadline:
			t.Fatalf("no HTTPRequestServed events for %v", want)
		}
	}
}

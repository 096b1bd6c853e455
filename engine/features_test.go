package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

func TestFeaturesNegotiation(t *testing.T) {
	builtin := []string{engine.FeatureLargeMessagesV1, "observe.v1", "observe.v2", "local-dispatch.v1"}
	t.Run("a new engine advertises large messages, observe and local dispatch", func(t *testing.T) {
		te := enginetest.New(t, engine.Options{})
		ws, _, err := enginetest.DialRaw(t, te.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		hello := readJSON(t, ws)
		got, _ := hello["features"].([]any)
		if hello["type"] != "workerregistered" || len(got) != len(builtin) {
			t.Fatalf("greeting %v: want workerregistered with features %v", hello, builtin)
		}
		for i, f := range builtin {
			if got[i] != f {
				t.Errorf("greeting features %v, want %v", got, builtin)
			}
		}
	})

	te := enginetest.New(t, engine.Options{})
	te.Advertise("test.v1", "test.v2", "test.v1", "")
	want := append(slices.Clone(builtin), "test.v1", "test.v2")
	if got := te.Features(); !slices.Equal(got, want) {
		t.Fatalf("Features() = %v, want %v", got, want)
	}
	type decl struct {
		id    string
		first bool
		fns   []string
	}
	var (
		mu    sync.Mutex
		decls []decl
	)
	te.OnDeclaredForTest(func(id string, first bool, fns []string) {
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(fns)
		decls = append(decls, decl{id, first, fns})
	})

	t.Run("greeting lists what the engine advertises", func(t *testing.T) {
		ws, _, err := enginetest.DialRaw(t, te.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		hello := readJSON(t, ws)
		got, _ := hello["features"].([]any)
		if len(got) != len(want) || got[len(want)-2] != "test.v1" || got[len(want)-1] != "test.v2" {
			t.Errorf("greeting features %v, want %v", hello["features"], want)
		}
	})

	t.Run("declaration after registrations, applied in order", func(t *testing.T) {
		w := enginetest.Dial(t, te.URL)
		// As the 0.25 SDKs do on every connection: registrations first,
		// then the declaration, then (here) a call that depends on it.
		w.Send(map[string]any{"type": "registerfunction", "id": "feat::a"})
		w.Send(map[string]any{"type": "registerfunction", "id": "feat::b"})
		w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
			"data": map[string]any{"name": "feat-worker", "runtime": "python",
				"features": []string{"observe.v1", "large-messages.v1"}}})
		// It speaks observe: the registrations made before the declaration
		// are acknowledged now (observe.go).
		for _, id := range []string{"feat::a", "feat::b"} {
			if m := w.Expect("functionregistered"); m["id"] != id {
				t.Errorf("functionregistered %v, want id %s", m, id)
			}
		}
		w.Quiet()
		if !te.WorkerHasFeature(w.ID, "observe.v1") || !te.WorkerHasFeature(w.ID, "large-messages.v1") {
			t.Errorf("worker does not have its declared features")
		}
		if te.WorkerHasFeature(w.ID, "observe.v2") {
			t.Errorf("worker has observe.v2, which it did not declare")
		}
		mu.Lock()
		got := slices.Clone(decls)
		mu.Unlock()
		if len(got) != 1 || got[0].id != w.ID || !got[0].first || !slices.Equal(got[0].fns, []string{"feat::a", "feat::b"}) {
			t.Errorf("declarations %+v, want one first declaration of %s holding feat::a, feat::b", got, w.ID)
		}
		// A second declaration on the same connection is not the first.
		w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"},
			"data": map[string]any{"name": "feat-worker", "features": []string{"observe.v1"}}})
		w.Quiet()
		mu.Lock()
		got = slices.Clone(decls)
		mu.Unlock()
		if len(got) != 2 || got[1].first {
			t.Errorf("declarations %+v, want a second one with first=false", got)
		}
		if te.WorkerHasFeature(w.ID, "large-messages.v1") {
			t.Errorf("the second declaration did not replace the first")
		}
	})

	t.Run("0.22 metadata and malformed features read as none", func(t *testing.T) {
		for i, features := range []any{nil, "observe.v1", 5, []any{1, "observe.v1", nil}} {
			w := enginetest.Dial(t, te.URL)
			name := fmt.Sprintf("old-%d", i)
			data := map[string]any{"name": name, "runtime": "node"}
			if features != nil {
				data["features"] = features
			}
			w.Send(map[string]any{"type": "invokefunction", "function_id": "engine::workers::register", "action": map[string]any{"type": "void"}, "data": data})
			w.Quiet()
			want := false
			if l, ok := features.([]any); ok && len(l) == 3 {
				want = true // the one string item counts
			}
			if got := te.WorkerHasFeature(w.ID, "observe.v1"); got != want {
				t.Errorf("features %v: hasFeature(observe.v1) = %v, want %v", features, got, want)
			}
			enginetest.WaitFor(t, "worker name", func() bool {
				for _, wi := range te.Snapshot().Workers {
					if wi.ID == w.ID {
						return wi.Name == name
					}
				}
				return false
			})
		}
	})
}

func readJSON(t *testing.T, ws interface {
	Read(context.Context) (websocket.MessageType, []byte, error)
}) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("frame %q: %v", b, err)
	}
	return m
}

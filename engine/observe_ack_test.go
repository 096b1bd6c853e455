package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/enginetest"
)

// A host that never acks an observer announced to it: the engine refuses
// the observer with OWNER_TIMEOUT, as the SDKs expect it to; a host that
// acks in time keeps it.
func TestObserveOwnerAckTimeout(t *testing.T) {
	engine.SetOwnerAckTimeoutForTest(t, 300*time.Millisecond)
	te := enginetest.New(t, engine.Options{})
	silent := obsDial(t, te.URL, "observe.v1")
	silent.Register("slow::src")
	prompt := obsDial(t, te.URL, "observe.v1")
	prompt.Register("fast::src")
	w := obsDial(t, te.URL, "observe.v1")
	w.Register("w::target")

	start := time.Now()
	slow := w.observe(map[string]any{"source": map[string]any{"function_id": "slow::src"}, "target": map[string]any{"function_id": "w::target"}})
	fast := w.observe(map[string]any{"source": map[string]any{"function_id": "fast::src"}, "target": map[string]any{"function_id": "w::target"}})
	silent.want("observeradded", nil) // and never answered
	added := prompt.want("observeradded", nil)
	prompt.Send(map[string]any{"type": "observerack", "function_id": "fast::src", "id": fast["id"], "revision": added["revision"]})
	if m := w.state(fast["id"].(string)); m["state"] != "active" {
		t.Errorf("acked observer: %v", m)
	}

	m := w.state(slow["id"].(string))
	msg, _ := m["reason"].(map[string]any)["message"].(string)
	if m["state"] != "error" || reasonCode(m) != "OWNER_TIMEOUT" || !strings.Contains(msg, silent.ID) {
		t.Errorf("unacked observer: %v, want error OWNER_TIMEOUT naming host %s", m, silent.ID)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("timed out after %v, before the 300ms timeout", d)
	}
	if r := silent.want("observerremoved", nil); r["id"] != slow["id"] {
		t.Errorf("the silent host was not told: %v", r)
	}
	w.none("observerstatechanged") // the acked one stays active
}

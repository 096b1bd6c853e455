package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/store/storetest"
	"github.com/iii-workbench/iii/engine/watch"
)

// TestSnapshotShowsTheCluster: engine::snapshot (what iii tui and iii dev
// read) names this engine and its peer, and lists the peer's worker and
// function with the peer's name (the TUI's engine column).
func TestSnapshotShowsTheCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rs := storetest.StartServer(t)
	name := fmt.Sprintf("s%d", time.Now().UnixNano())
	a, b := startNode(t, ctx, 0, rs.URL(), name), startNode(t, ctx, 1, rs.URL(), name)
	waitFor(t, ctx, "engine 0 to see engine 1's functions", func() bool { return sees(ctx, a.srv.Engine(), "e1::echo") })
	peer := b.srv.Cluster().EngineName()
	var snap watch.Snapshot
	waitFor(t, ctx, "the snapshot to name the peer", func() bool {
		res, err := invoke(ctx, a.srv.Engine(), watch.FnSnapshot, nil)
		if err != nil {
			t.Fatal(err)
		}
		snap = watch.Snapshot{}
		return json.Unmarshal(res, &snap) == nil && slices.Contains(snap.Peers, peer)
	})
	if snap.Engine != a.srv.Cluster().EngineName() {
		t.Errorf("engine %q; want %q", snap.Engine, a.srv.Cluster().EngineName())
	}
	workerEngine := map[string]string{}
	for _, w := range snap.Workers {
		workerEngine[w.Name] = w.Engine
	}
	if workerEngine["w1"] != peer || workerEngine["w0"] != snap.Engine {
		t.Errorf("worker engines %v; want w0 on %s, w1 on %s", workerEngine, snap.Engine, peer)
	}
	for _, f := range snap.Functions {
		if f.ID == "e1::echo" && !slices.Equal(f.Engines, []string{peer}) {
			t.Errorf("e1::echo served by %v; want [%s]", f.Engines, peer)
		}
	}
}

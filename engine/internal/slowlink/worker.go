package slowlink

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/sdk"
)

// Rate is the throughput of the burst tests' slow links once opened.
const Rate = 16 << 20

// Worker is a Go SDK worker connected to an engine through its own Proxy,
// serving one function that counts its calls: the slow reader of the
// backpressure and burst tests.
type Worker struct {
	*sdk.Worker
	Proxy *Proxy
	// Got counts the calls of the function.
	Got atomic.Int64
	// FirstID is the worker's id on its first connection.
	FirstID string
}

// Connect starts a Proxy at Rate in front of the engine at url
// (ws://host:port), connects a worker named name through it and registers
// fn. queue is the SDK's queue limit: the SDK drops results past it, so a
// burst test sets it to the burst. Both are closed when the test ends.
func Connect(t testing.TB, ctx context.Context, url, name, fn string, queue int) *Worker {
	t.Helper()
	p, err := Start(strings.TrimPrefix(url, "ws://"), Rate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	w := &Worker{Proxy: p}
	w.Worker, err = sdk.Connect(ctx, "ws://"+p.Addr(), sdk.WithName(name), sdk.WithTelemetry(false), sdk.WithQueueLimit(queue))
	if err != nil {
		t.Fatal(err)
	}
	// Before the proxy's cleanup: cleanups run last added first.
	t.Cleanup(func() { w.Close(context.Background()) })
	w.FirstID = w.ID()
	if err := w.RegisterFunction(fn, func(context.Context, json.RawMessage) (any, error) {
		w.Got.Add(1)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

// Reconnected reports whether the worker lost its first connection.
func (w *Worker) Reconnected() bool { return w.ID() != w.FirstID }

// Delivered checks the end of a burst: all want calls arrived, the worker
// kept its connection (not closed as a slow consumer), and the engine
// dropped nothing (st is its Stats after the burst).
func (w *Worker) Delivered(t testing.TB, want int64, st engine.Stats) {
	t.Helper()
	if got := w.Got.Load(); got != want {
		t.Fatalf("delivered %d of %d", got, want)
	}
	if w.Reconnected() || st.SlowConsumers != 0 {
		t.Fatalf("worker reconnected (id %s, was %s), slow consumers %d", w.ID(), w.FirstID, st.SlowConsumers)
	}
	for reason, n := range st.Dropped {
		if n != 0 {
			t.Errorf("dropped %d frames (%s)", n, reason)
		}
	}
}

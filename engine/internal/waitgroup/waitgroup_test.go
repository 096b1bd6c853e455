package waitgroup_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine/internal/waitgroup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDone(t *testing.T) {
	var a, b sync.WaitGroup
	a.Add(1)
	b.Add(1)
	done := waitgroup.Done(&a, &b)
	a.Done()
	select {
	case <-done:
		t.Fatal("closed while one group still counts")
	case <-time.After(20 * time.Millisecond):
	}
	b.Done()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after both groups reached zero")
	}
	if _, open := <-waitgroup.Done(); open {
		t.Error("Done of no groups is not closed")
	}
}

func TestGroup(t *testing.T) {
	var g waitgroup.Group
	release := make(chan struct{})
	if !g.Go(func() { <-release }) {
		t.Fatal("Go refused on an open group")
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with a goroutine running = %v, want the deadline", err)
	}
	if !g.Close() || g.Close() {
		t.Error("Close: want true the first time only")
	}
	if !g.Closed() {
		t.Error("Closed after Close = false")
	}
	ran := false
	if g.Go(func() { ran = true }) || g.Enter() {
		t.Error("Go or Enter accepted after Close")
	}
	close(release)
	ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := g.Wait(ctx); err != nil {
		t.Errorf("Wait after the goroutine returned = %v", err)
	}
	if ran {
		t.Error("a refused fn ran")
	}
}

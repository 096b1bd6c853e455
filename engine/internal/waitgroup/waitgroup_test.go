package waitgroup_test

import (
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

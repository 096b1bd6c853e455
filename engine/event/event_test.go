package event_test

import (
	"testing"

	"github.com/iii-workbench/iii/engine/event"
)

func TestBusDropsWhenSubscriberIsFull(t *testing.T) {
	var b event.Bus
	if b.Active() {
		t.Fatal("empty bus reports subscribers")
	}
	b.Publish(event.WorkerConnected{WorkerID: "nobody listening"}) // must not block or panic

	slow := b.Subscribe(2)
	fast := b.Subscribe(10)
	for i := range 5 {
		b.Publish(event.WorkerConnected{WorkerID: string(rune('a' + i))})
	}
	if got, want := slow.Dropped(), uint64(3); got != want {
		t.Errorf("slow subscriber dropped %d, want %d", got, want)
	}
	if got := fast.Dropped(); got != 0 {
		t.Errorf("fast subscriber dropped %d, want 0", got)
	}
	if ev := (<-slow.C()).(event.WorkerConnected); ev.WorkerID != "a" {
		t.Errorf("first event %+v, want worker a", ev)
	}
	if len(fast.C()) != 5 {
		t.Errorf("fast subscriber holds %d events, want 5", len(fast.C()))
	}

	slow.Close()
	slow.Close() // idempotent
	b.Publish(event.WorkerDisconnected{WorkerID: "z"})
	if len(slow.C()) != 1 {
		t.Errorf("closed subscriber still receives: %d queued", len(slow.C()))
	}
	fast.Close()
	if b.Active() {
		t.Error("bus active after every subscriber closed")
	}
}

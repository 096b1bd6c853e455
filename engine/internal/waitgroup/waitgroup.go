// Package waitgroup turns waiting on sync.WaitGroups into a channel, so a
// Stop or Shutdown can wait for its goroutines and for its deadline in one
// select.
package waitgroup

import "sync"

// Done returns a channel closed once every group's counter has reached
// zero. The goroutine behind it exits then, even if nobody reads the
// channel any more.
func Done(groups ...*sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for _, wg := range groups {
			wg.Wait()
		}
		close(done)
	}()
	return done
}

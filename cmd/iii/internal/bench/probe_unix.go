//go:build unix

package bench

import (
	"io"
	"os"
	"os/signal"
	"syscall"
)

// ServeProbes answers probes (see EnvProbe) on w until the returned stop
// is called; it does nothing unless EnvProbe is 1.
func ServeProbes(w io.Writer) (stop func()) {
	if os.Getenv(EnvProbe) != "1" {
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	exited := make(chan struct{})
	// Exits when stop is called.
	go func() {
		defer close(exited)
		for {
			select {
			case <-sig:
				writeProbe(w)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		<-exited
	}
}

// probe asks the child for its allocation counters.
func (c *child) probe() {
	c.cmd.Process.Signal(syscall.SIGUSR1)
}

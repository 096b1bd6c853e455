//go:build !unix

package bench

import "io"

// ServeProbes does nothing here: probes are a Unix signal.
func ServeProbes(io.Writer) (stop func()) { return func() {} }

func (c *child) probe() {}

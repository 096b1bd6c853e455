package cluster

// Freeze stops the engine's heartbeats without withdrawing it, as a hung
// or partitioned engine would: its links stay open, its advertisement
// lapses.
func Freeze(c *Cluster) { c.frozen.Store(true) }

// SetLinkLineLimit sets the longest line a link carries (and its read
// limit) until the returned func restores it.
func SetLinkLineLimit(n int) (restore func()) {
	old := linkLineLimit
	linkLineLimit = n
	return func() { linkLineLimit = old }
}

package cluster

// Freeze stops the engine's heartbeats without withdrawing it, as a hung
// or partitioned engine would: its links stay open, its advertisement
// lapses.
func Freeze(c *Cluster) { c.frozen.Store(true) }

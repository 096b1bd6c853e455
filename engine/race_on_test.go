//go:build race

package engine_test

// raceEnabled: the race detector slows every call several times over, so
// the burst tests send fewer calls under it.
const raceEnabled = true

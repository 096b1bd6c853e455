//go:build race

package compat_test

// raceEnabled: the race detector makes the engine's JSON about ten times
// slower, so the large-message test sends less under it.
const raceEnabled = true

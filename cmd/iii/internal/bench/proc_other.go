//go:build !linux

package bench

import (
	"errors"
	"syscall"
	"time"
)

var errNoProc = errors.New("bench: process statistics are only read on Linux")

type procSample struct {
	at  time.Time
	cpu time.Duration
	rss int64
}

func (s procSample) cpuPercentSince(procSample) float64 { return 0 }

func readProc(int) (procSample, error) { return procSample{}, errNoProc }

func sysProcAttr() *syscall.SysProcAttr { return nil }

func raiseFileLimit() (uint64, error) {
	return 0, errors.New("bench: cannot raise the file limit here")
}

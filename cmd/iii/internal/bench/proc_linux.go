package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

var errNoProc = errors.New("bench: process statistics unavailable")

// procSample is a process's CPU time and memory at one moment.
type procSample struct {
	at  time.Time
	cpu time.Duration // user + system
	rss int64         // resident set size, bytes
}

func (s procSample) cpuPercentSince(b procSample) float64 {
	wall := s.at.Sub(b.at)
	if wall <= 0 || b.at.IsZero() {
		return 0
	}
	return 100 * float64(s.cpu-b.cpu) / float64(wall)
}

const clockTicks = 100 // USER_HZ on Linux

// readProc reads /proc/<pid>/stat and /proc/<pid>/status.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("%w: %w", errNoProc, err)
	}
	// Fields after the ")" that closes the command name; utime and stime
	// are fields 14 and 15 of the whole line.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errNoProc
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return s, errNoProc
	}
	ut, _ := strconv.ParseInt(string(f[11]), 10, 64)
	st, _ := strconv.ParseInt(string(f[12]), 10, 64)
	s.cpu = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("%w: %w", errNoProc, err)
	}
	for _, line := range bytes.Split(status, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, _ := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			s.rss = kb * 1024
		}
	}
	return s, nil
}

func sysProcAttr() *syscall.SysProcAttr {
	// The child dies with us, even on SIGKILL.
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// raiseFileLimit lifts the soft open-file limit to the hard one and
// returns the limit now in force.
func raiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

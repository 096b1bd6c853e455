//go:build unix && !linux

package exec

import "syscall"

// Other Unix systems: process groups, but no Pdeathsig and no waiting
// without reaping, so a group is signalled after its leader was reaped (its
// id could in theory have been reused by then).
const (
	supported   = true
	holdsZombie = false
)

type sysSignal = syscall.Signal

const (
	sigTerm = syscall.SIGTERM
	sigKill = syscall.SIGKILL
)

func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func signalGroup(pgid int, sig syscall.Signal) {
	_ = syscall.Kill(-pgid, sig)
}

func waitNoReap(int) {}

func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}

func pgidOf(pid int) int {
	pg, err := syscall.Getpgid(pid)
	if err != nil {
		return -1
	}
	return pg
}

//go:build !unix

package exec

import "syscall"

// Windows (and other systems without Unix process groups) are not
// supported yet: startProc fails with errUnsupported. Windows would need a
// job object per worker to stop a process tree.
const (
	supported   = false
	holdsZombie = false
)

type sysSignal = syscall.Signal

const (
	sigTerm = syscall.SIGTERM
	sigKill = syscall.SIGKILL
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(int, syscall.Signal) {}

func waitNoReap(int) {}

func groupAlive(int) bool { return false }

func pgidOf(int) int { return -1 }

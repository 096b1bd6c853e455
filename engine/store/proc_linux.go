package store

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// sysProcAttr puts redis-server in its own process group and has the
// kernel send it SIGTERM (a clean shutdown) when the engine dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// isRedisServer reports whether pid runs a redis-server binary.
func isRedisServer(pid int) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err == nil && string(bytes.TrimSpace(comm)) == "redis-server" {
		return true
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte("redis-server"))
}

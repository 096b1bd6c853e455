//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr puts redis-server in its own process group. These systems
// have no parent-death signal: a redis-server left by a killed engine is
// stopped when the next engine starts on the directory.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// isRedisServer reports whether pid runs a redis-server binary.
func isRedisServer(pid int) bool {
	out, err := exec.Command("ps", "-o", "command=", "-p", strconv.Itoa(pid)).Output()
	return err == nil && strings.Contains(string(out), "redis-server")
}

//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
)

// Managed is a redis-server the engine starts and owns; it is not
// available on this system.
type Managed struct{}

// ManagedOptions configures StartManaged.
type ManagedOptions struct {
	DataDir     string
	RedisServer string
	Logger      *slog.Logger
}

// AppendFsync is the managed store's fsync policy.
const AppendFsync = "always"

// ErrNoRedisServer is returned when the managed store is chosen and
// redis-server cannot be found (or, here, run).
var ErrNoRedisServer = errors.New("store: redis-server not found")

// ErrDataDirInUse is returned when another engine holds the data directory.
var ErrDataDirInUse = errors.New("store: data directory in use by another engine")

// StartManaged fails: the managed store needs unix sockets and process
// groups.
func StartManaged(context.Context, ManagedOptions) (*Managed, error) {
	return nil, fmt.Errorf("%w: the managed store is not supported on %s", ErrNoRedisServer, runtime.GOOS)
}

// DataDir is the data directory.
func (m *Managed) DataDir() string { return "" }

// Socket is the server's socket.
func (m *Managed) Socket() string { return "" }

// Stop does nothing.
func (m *Managed) Stop(context.Context) error { return nil }

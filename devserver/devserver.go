// Package devserver starts the engine of `iii start` and `iii dev`: the
// assembly of engine/server, with its errors told in the command's terms
// (a taken port names the config key and the flag that move it).
package devserver

import (
	"context"
	"errors"

	"github.com/iii-workbench/iii/engine/server"
)

// KeyPrefix namespaces every Redis key the modules write.
const KeyPrefix = server.KeyPrefix

// DefaultDataDir is the managed store's data directory, relative to the
// config file's folder (the working directory without a file).
const DefaultDataDir = server.DefaultDataDir

// Options configures a server; see server.Options.
type Options = server.Options

// Listener is one more worker listener.
type Listener = server.Listener

// Server is a running engine with its modules.
type Server = server.Server

// Start starts the engine as server.Start does; a taken port comes back
// as a *PortInUseError.
func Start(ctx context.Context, opts Options) (*Server, error) {
	s, err := server.Start(ctx, opts)
	if err == nil || !isAddrInUse(err) {
		return s, err
	}
	var le *server.ListenError
	if errors.As(err, &le) {
		port := 0
		if opts.Config != nil {
			port = opts.Config.Engine.Port
		}
		return nil, &PortInUseError{Port: port, Key: "engine.port", Flag: EngineFlag, Err: err}
	}
	var me *server.ModuleError
	if errors.As(err, &me) {
		return nil, moduleAddrInUse(err, me.Entries)
	}
	return nil, err
}

package devserver

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/iii-workbench/iii/engine/config"
)

// PortInUseError is returned when a port the engine or one of its modules
// listens on is taken. It names the config key and the command-line flag
// that move the listener.
type PortInUseError struct {
	Port int
	// Module is the module whose listener failed; empty for the worker
	// socket.
	Module string
	// Key is the config key that sets the port, e.g. "engine.port" or
	// "modules[0].config.port".
	Key string
	// Flag is the iii dev / iii start flag that overrides it.
	Flag string
	Err  error
}

func (e *PortInUseError) Error() string {
	what := ""
	if e.Module != "" {
		what = " (" + e.Module + " module)"
	}
	return fmt.Sprintf("port %d in use%s: is another iii running? set %s or %s", e.Port, what, e.Key, e.Flag)
}

func (e *PortInUseError) Unwrap() error { return e.Err }

// ModulePort is a module's TCP listener: which config key sets its port and
// which flag of iii dev and iii start overrides it.
type ModulePort struct {
	Module  string // module ID
	Key     string // key in the module's config: mapping
	Flag    string
	Default int // port when the key is absent
}

// ModulePorts are the built-in modules' listeners. The defaults repeat the
// modules' own (devserver does not import the modules it may run).
var ModulePorts = []ModulePort{
	{Module: "http", Key: "port", Flag: "--http-port", Default: 3111},
	{Module: "stream", Key: "port", Flag: "--stream-port", Default: 3112},
	{Module: "observability", Key: "metrics_port", Flag: "--metrics-port", Default: 9464},
}

// EngineFlag is the flag that overrides engine.port.
const EngineFlag = "--port"

// moduleAddrInUse turns a module's "address in use" start error into a
// PortInUseError naming the listener's key, or returns err unchanged when
// the port cannot be told.
func moduleAddrInUse(err error, entries []config.Module) error {
	var op *net.OpError
	if !errors.As(err, &op) || op.Addr == nil {
		return err
	}
	ta, ok := op.Addr.(*net.TCPAddr)
	if !ok {
		return err
	}
	for i := range entries {
		e := &entries[i]
		for _, l := range ModulePorts {
			if l.Module != e.ID || configPort(e, l) != ta.Port {
				continue
			}
			key := fmt.Sprintf("modules[%d].config.%s", i, l.Key)
			if !keySet(e, l.Key) && e.Line == 0 {
				key = l.Module + " module config " + l.Key
			}
			return &PortInUseError{Port: ta.Port, Module: l.Module, Key: key, Flag: l.Flag, Err: err}
		}
	}
	return err
}

// configPort is the port l listens on as e's config sets it.
func configPort(e *config.Module, l ModulePort) int {
	if v := configValue(e, l.Key); v != nil {
		if p, err := strconv.Atoi(v.Value); err == nil {
			return p
		}
	}
	return l.Default
}

func keySet(e *config.Module, key string) bool { return configValue(e, key) != nil }

// configValue is the scalar under key in e's config mapping, or nil.
func configValue(e *config.Module, key string) *yaml.Node {
	n := &e.Config
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1]
		}
	}
	return nil
}

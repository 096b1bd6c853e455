// Package module is how built-in and custom modules plug into the engine.
//
// A module is a Go value that holds its own configuration: the loader
// constructs it with Info.New (defaults filled in), strictly decodes the
// module's `config:` block from config.yaml into it, then calls, in order,
// Provision (optional), Validate (optional) and Start. Stop is called in
// reverse order at shutdown. A module talks to the engine only through the
// Host it is given: it registers functions and trigger types like any
// worker, and keeps shared state in Redis.
//
// Modules register themselves in an init function:
//
//	func init() {
//		module.Register(module.Info{ID: "queue.sqs", New: func() module.Module { return &SQS{Region: "eu-west-1"} }})
//	}
//
// and are listed in config.yaml by ID (or by an alias):
//
//	modules:
//	  - class: queue.sqs
//	    config: {region: us-east-1}
package module

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
)

// Module is one part of the engine started from config.yaml.
type Module interface {
	// ID is the module's canonical, dotted ID (e.g. "http", "queue.sqs").
	ID() string
	// Start registers the module's functions and trigger types and starts
	// its listeners or loops. It must not block; background work runs in
	// goroutines the module owns and stops in Stop.
	Start(ctx context.Context, h *Host) error
	// Stop releases everything Start acquired, within ctx's deadline.
	Stop(ctx context.Context) error
}

// Provisioner is implemented by modules that set up resources (connections,
// listeners) before validation. When Provision or Validate fails, or the
// module is never started, Stop is called to release what Provision
// acquired (as caddy calls Cleanup), so Stop must work after a partial
// Provision.
type Provisioner interface {
	Provision(ctx context.Context, h *Host) error
}

// Validator is implemented by modules that check their decoded config.
type Validator interface {
	Validate() error
}

// Info describes a registered module.
type Info struct {
	// ID is the canonical ID used in config.yaml's class (or name) key.
	ID string
	// Aliases are other names accepted for the class key.
	Aliases []string
	// New returns a fresh module holding its default configuration.
	New func() Module
}

var (
	regMu    sync.RWMutex
	registry = map[string]Info{}
)

// Register adds a module type. It panics on a duplicate or empty ID: that
// is a programming mistake found at init.
func Register(info Info) {
	if info.ID == "" || info.New == nil {
		panic("module: Register needs an ID and a New function")
	}
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[info.ID]; dup {
		panic(fmt.Sprintf("module: %q registered twice", info.ID))
	}
	registry[info.ID] = info
	config.RegisterModuleClass(info.ID, info.Aliases...)
}

// Lookup returns the registered module with this canonical ID.
func Lookup(id string) (Info, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	info, ok := registry[id]
	return info, ok
}

// Host is what a module gets from the engine.
type Host struct {
	Engine *engine.Engine
	// Redis is the shared store: an external Redis, or the embedded one.
	Redis redis.UniversalClient
	// RedisEmbedded reports that Redis is the in-process store (nothing
	// survives a restart, nothing is shared with other engines).
	RedisEmbedded bool
	// KeyPrefix namespaces every Redis key ("iii:" by default).
	KeyPrefix string
	// Logger is tagged with the module's ID.
	Logger *slog.Logger
	// WorkerURL is the engine's worker WebSocket URL (ws://host:port), for
	// modules that start workers (exec). Empty when the engine has none.
	WorkerURL string
	// AuthToken is the bearer token workers must present; empty when the
	// engine has no auth.
	AuthToken config.Secret
	// ConfigDir is the directory of config.yaml, against which modules
	// resolve relative paths; empty without a config file (use the
	// working directory).
	ConfigDir string
}

// Key joins the key prefix and parts with ':'.
func (h *Host) Key(parts ...string) string {
	k := h.KeyPrefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}

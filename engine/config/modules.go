package config

import (
	"slices"
	"strings"
	"sync"
)

// Canonical module IDs.
const (
	ModuleHTTP          = "http"
	ModuleQueue         = "queue"
	ModulePubSub        = "pubsub"
	ModuleCron          = "cron"
	ModuleStream        = "stream"
	ModuleState         = "state"
	ModuleObservability = "observability"
	ModuleExec          = "exec"
)

// DefaultModules run when there is no config file: every module but exec.
var DefaultModules = []string{
	ModuleHTTP, ModuleQueue, ModulePubSub, ModuleCron, ModuleStream, ModuleState, ModuleObservability,
}

// moduleAliases maps every accepted class spelling to its canonical ID: the
// short seed names, the pre-0.11 iii classes and the 0.11+ worker names.
// The canonical IDs themselves are accepted too.
var moduleAliases = map[string]string{
	"RestApiModule":                      ModuleHTTP,
	"modules::api::RestApiModule":        ModuleHTTP,
	"iii-http":                           ModuleHTTP,
	"QueueModule":                        ModuleQueue,
	"modules::queue::QueueModule":        ModuleQueue,
	"iii-queue":                          ModuleQueue,
	"PubSubModule":                       ModulePubSub,
	"modules::pubsub::PubSubModule":      ModulePubSub,
	"iii-pubsub":                         ModulePubSub,
	"CronModule":                         ModuleCron,
	"modules::cron::CronModule":          ModuleCron,
	"iii-cron":                           ModuleCron,
	"StreamModule":                       ModuleStream,
	"modules::stream::StreamModule":      ModuleStream,
	"iii-stream":                         ModuleStream,
	"StateModule":                        ModuleState,
	"modules::state::StateModule":        ModuleState,
	"iii-state":                          ModuleState,
	"OtelModule":                         ModuleObservability,
	"modules::observability::OtelModule": ModuleObservability,
	"iii-observability":                  ModuleObservability,
	"ExecModule":                         ModuleExec,
	"modules::shell::ExecModule":         ModuleExec,
	"iii-exec":                           ModuleExec,
}

// custom holds the IDs and aliases of modules registered at run time
// (package module's Register), so config files may name them.
var custom = struct {
	sync.RWMutex
	ids     []string
	aliases map[string]string
}{aliases: map[string]string{}}

// RegisterModuleClass makes a module ID (and its aliases) acceptable as a
// class in config files. Package module calls it from Register.
func RegisterModuleClass(id string, aliases ...string) {
	custom.Lock()
	defer custom.Unlock()
	if !slices.Contains(custom.ids, id) {
		custom.ids = append(custom.ids, id)
	}
	for _, a := range aliases {
		custom.aliases[a] = id
	}
}

// ModuleID normalises a module class or worker name (RestApiModule,
// modules::api::RestApiModule, iii-http or http) to its canonical ID.
func ModuleID(class string) (string, bool) {
	class = strings.TrimSpace(class)
	if id, ok := moduleAliases[class]; ok {
		return id, true
	}
	custom.RLock()
	id, ok := custom.aliases[class]
	custom.RUnlock()
	if ok {
		return id, true
	}
	if slices.Contains(ModuleIDs(), class) {
		return class, true
	}
	return "", false
}

// ModuleIDs lists every canonical module ID, sorted: the built-in ones and
// those registered with RegisterModuleClass.
func ModuleIDs() []string {
	ids := append(slices.Clone(DefaultModules), ModuleExec)
	custom.RLock()
	for _, id := range custom.ids {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	custom.RUnlock()
	slices.Sort(ids)
	return ids
}

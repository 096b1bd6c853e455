package config

import (
	"slices"
	"strings"
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

// ModuleID normalises a module class or worker name (RestApiModule,
// modules::api::RestApiModule, iii-http or http) to its canonical ID.
func ModuleID(class string) (string, bool) {
	class = strings.TrimSpace(class)
	if id, ok := moduleAliases[class]; ok {
		return id, true
	}
	if slices.Contains(ModuleIDs(), class) {
		return class, true
	}
	return "", false
}

// ModuleIDs lists every canonical module ID, sorted.
func ModuleIDs() []string {
	ids := append(slices.Clone(DefaultModules), ModuleExec)
	slices.Sort(ids)
	return ids
}

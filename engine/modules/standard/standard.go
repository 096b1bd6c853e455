// Package standard links every built-in module into a binary: import it
// for its side effects (each module registers itself in init).
package standard

import (
	_ "github.com/iii-workbench/iii/engine/modules/bridgeclient"  // iii-bridge
	_ "github.com/iii-workbench/iii/engine/modules/cron"          // CronModule
	_ "github.com/iii-workbench/iii/engine/modules/exec"          // ExecModule
	_ "github.com/iii-workbench/iii/engine/modules/http"          // RestApiModule
	_ "github.com/iii-workbench/iii/engine/modules/httpfunctions" // HttpFunctionsModule
	_ "github.com/iii-workbench/iii/engine/modules/observability" // OtelModule
	_ "github.com/iii-workbench/iii/engine/modules/pubsub"        // PubSubModule
	_ "github.com/iii-workbench/iii/engine/modules/queue"         // QueueModule
	_ "github.com/iii-workbench/iii/engine/modules/state"         // StateModule
	_ "github.com/iii-workbench/iii/engine/modules/stream"        // StreamModule
)

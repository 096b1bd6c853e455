// Package sdk is the Go worker SDK for the iii engine.
//
// A worker is a process that connects to the engine over a WebSocket,
// registers functions, trigger types and triggers, and calls functions of
// other workers through the engine:
//
//	w, err := sdk.Connect(ctx, "ws://localhost:49134", sdk.WithName("billing"))
//	if err != nil { ... }
//	defer w.Close(context.Background())
//
//	w.RegisterFunction("billing::charge", sdk.Typed(charge))
//	w.RegisterTrigger(sdk.Trigger{Type: "cron", FunctionID: "billing::nightly",
//		Config: map[string]any{"expression": "0 0 3 * * * *"}})
//	receipt, err := sdk.Call[Receipt](ctx, w, "orders::create", order)
//
// The API follows the Node iii-sdk (registerWorker, registerFunction,
// registerTrigger, trigger, registerTriggerType, shutdown) in Go form:
// Connect, Worker.RegisterFunction, Worker.RegisterTrigger, Worker.Trigger
// (and the typed Call), Worker.RegisterTriggerType and Worker.Close.
//
// # Connection
//
// Connect dials once and waits for the engine's workerregistered. When the
// connection drops, the Worker reconnects with exponential backoff (1 s,
// doubling, capped at 30 s, ±30 % jitter), sends reattach with its previous
// worker ID, replays every trigger type, function, trigger and service it
// registered, flushes calls made meanwhile, and reports its metadata to
// engine::workers::register. WebSocket pings every 20 s detect dead
// connections.
//
// # Calls
//
// Incoming calls run concurrently, one goroutine each, with a context that
// carries the Invocation (InvocationFromContext, Metadata, ...). Handler
// errors reach the caller as code invocation_failed unless they are (or
// wrap) a *protocol.ErrorBody, whose code passes through; see Errorf.
// Outgoing calls (Trigger, Call) fail with a *protocol.ErrorBody for errors
// reported by the engine or the callee, and with code TIMEOUT when no result
// arrived in time (30 s by default).
//
// # Shutdown
//
// Close stops reconnecting, lets running handlers finish (bounded by its
// context), closes the socket with status 1000 and waits for every
// goroutine the Worker started.
package sdk

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
// # Tracing
//
// The worker traces with OpenTelemetry. Every incoming call runs in a
// SERVER span "execute <function ID>", the child of the traceparent the
// engine sent (the engine's span of the call), with the call's W3C baggage
// in the handler's ctx and on the span as attributes (iii.function.id, ...).
// A call made with a ctx that holds a span, such as a handler's, is a
// CLIENT span "call <function ID>" under it, and its traceparent and
// baggage travel with the invokefunction; so the engine's span of the
// callee, and the callee's own spans, nest under it in one trace. A call
// made outside any trace starts no span: the engine starts the trace.
// Spans a handler starts itself with Worker.TracerProvider under its ctx
// join the same trace.
//
// By default the spans go to the engine, like the Node SDK's: batched
// (DefaultSpansFlushInterval) and sent as binary "OTLP" frames of OTLP/JSON
// on the worker's own socket, where the observability module stores them
// (engine::traces::tree shows them). The queue is bounded; spans finished
// while the worker is disconnected are dropped and counted
// (Worker.TelemetryStats). Close sends what is left. WithTelemetry(false),
// or $OTEL_ENABLED / $III_TELEMETRY set to false, 0, no or off, turns spans
// off (the incoming trace context is then forwarded unchanged);
// WithTracerProvider sends them to a provider of yours instead.
//
// # Shutdown
//
// Close stops reconnecting, lets running handlers finish (bounded by its
// context), closes the socket with status 1000 and waits for every
// goroutine the Worker started.
package sdk

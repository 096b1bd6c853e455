// Package memqueue is an example of a custom module: an in-memory queue
// adapter that serves the engine's enqueue action (engine::queue::enqueue)
// without Redis. It plugs in exactly as the built-in modules do: it
// registers itself in init, holds its own config, and talks to the engine
// only through module.Host.
//
// Link it into a binary with a blank import next to the standard modules
// (in cmd/iii/main.go: _ "github.com/iii-workbench/iii/examples/custommodule")
// and list it in config.yaml instead of QueueModule:
//
//	modules:
//	  - class: MemoryQueue       # or queue.memory
//	    config: {capacity: 10000, concurrency: 4}
//
// Messages live only in this process and are handled at most once: it is
// a template for adapters (SQS, NATS, ...), not a replacement for the Redis
// queue.
package memqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/protocol"
)

// ID is the module's canonical ID.
const ID = "queue.memory"

func init() {
	module.Register(module.Info{ID: ID, Aliases: []string{"MemoryQueue"},
		New: func() module.Module { return &Queue{Capacity: 1000, Concurrency: 2} }})
}

// Queue is the module and its config.
type Queue struct {
	Capacity    int `yaml:"capacity"`
	Concurrency int `yaml:"concurrency"`

	host   *module.Host
	msgs   chan message
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type message struct {
	Queue       string          `json:"queue"`
	FunctionID  string          `json:"function_id"`
	Data        json.RawMessage `json:"data"`
	Traceparent string          `json:"traceparent"`
	Baggage     string          `json:"baggage"`
}

// Interface guards.
var (
	_ module.Module    = (*Queue)(nil)
	_ module.Validator = (*Queue)(nil)
)

// ID implements module.Module.
func (q *Queue) ID() string { return ID }

// Validate checks the decoded config.
func (q *Queue) Validate() error {
	if q.Capacity < 1 {
		return fmt.Errorf("capacity must be at least 1, got %d", q.Capacity)
	}
	if q.Concurrency < 1 {
		return fmt.Errorf("concurrency must be at least 1, got %d", q.Concurrency)
	}
	return nil
}

// Start registers engine::queue::enqueue and starts the consumers.
func (q *Queue) Start(_ context.Context, h *module.Host) error {
	q.host = h
	q.msgs = make(chan message, q.Capacity)
	ctx, cancel := context.WithCancel(context.Background())
	q.cancel = cancel
	for range q.Concurrency {
		q.wg.Add(1)
		// Exits when Stop cancels ctx.
		go func() {
			defer q.wg.Done()
			q.consume(ctx)
		}()
	}
	return h.Engine.RegisterFunction("iii-queue-memory", engine.Function{
		ID: engine.QueueEnqueueFunction, Description: "Enqueue a call in memory", Handler: q.enqueue})
}

func (q *Queue) enqueue(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var m message
	if err := json.Unmarshal(call.Data, &m); err != nil || m.FunctionID == "" {
		return nil, &protocol.ErrorBody{Code: "deserialization_error", Message: "enqueue needs queue, function_id and data"}
	}
	select {
	case q.msgs <- m:
		return nil, nil
	default:
		return nil, &protocol.ErrorBody{Code: "queue_full", Message: fmt.Sprintf("in-memory queue holds %d messages already", q.Capacity)}
	}
}

func (q *Queue) consume(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q.msgs:
			_, err := q.host.Engine.Invoke(ctx, engine.Request{FunctionID: m.FunctionID, Data: m.Data,
				Traceparent: m.Traceparent, Baggage: m.Baggage, Trigger: "queue"})
			if err != nil && !errors.Is(err, context.Canceled) {
				q.host.Logger.Warn("queued call failed; dropped (this adapter does not retry)",
					"queue", m.Queue, "function_id", m.FunctionID, "err", err)
			}
		}
	}
}

// Stop stops the consumers; messages still queued are lost.
func (q *Queue) Stop(context.Context) error {
	if q.cancel != nil {
		q.cancel()
		q.wg.Wait()
		q.host.Engine.UnregisterFunction(engine.QueueEnqueueFunction)
	}
	return nil
}

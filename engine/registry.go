package engine

import (
	"encoding/json"
	"net"
	"slices"
	"sort"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

type service struct {
	protocol.RegisterService
	owner *conn
}

func (e *Engine) registerService(c *conn, m protocol.RegisterService) {
	if m.Name == "" {
		m.Name = m.ID
	}
	e.mu.Lock()
	if !c.removed {
		e.services[m.ID] = service{RegisterService: m, owner: c}
	}
	e.mu.Unlock()
}

// removeConn drops everything a closed connection owned (spec §2.9): its
// function registrations (other workers serving the same ids keep them),
// its triggers (their providers are told), the trigger types it provided
// (other workers' bindings of them are parked), its services.
func (e *Engine) removeConn(c *conn) {
	e.dropConn(c)
	// Its observers go once the trigger lock is released: an engine-hosted
	// source detaches an observer by unregistering the trigger binding it
	// stands for (sources.go).
	e.obsConnClosed(c)
}

func (e *Engine) dropConn(c *conn) {
	e.channels.RemoveOwner(c.id)
	var (
		ops       triggerOps
		fns       []string
		lostTypes []*triggerType
	)
	e.tmu.Lock()
	defer e.tmu.Unlock()
	e.mu.Lock()
	c.removed = true
	if e.conns[c.id] == c {
		delete(e.conns, c.id)
	}
	if len(e.refused) > 0 {
		e.forgetRefusalsLocked(c)
	}
	for id := range c.fnIDs {
		if e.dropRegistrationLocked(c, id) {
			fns = append(fns, id)
		}
	}
	for id := range c.triggerIDs {
		if cl := e.claims[id]; cl != nil && cl.owner == c {
			e.removeClaimLocked(cl, &ops)
		}
	}
	// Nothing goes to the provider that is leaving.
	ops.ds = slices.DeleteFunc(ops.ds, func(d delivery) bool { return d.tt.conn == c })
	c.held = nil
	for key := range c.ttypeIDs {
		if tt := e.ttypes[key]; tt != nil && tt.conn == c {
			lost := e.dropTypeLocked(tt)
			// Bindings that fall back to another provider go there.
			ops.ds = append(ops.ds, slices.DeleteFunc(lost.ds, func(d delivery) bool { return d.tt.conn == c })...)
			ops.evs = append(ops.evs, lost.evs...)
			lostTypes = append(lostTypes, tt)
		}
	}
	for id, s := range e.services {
		if s.owner == c {
			delete(e.services, id)
		}
	}
	e.mu.Unlock()

	now := time.Now()
	for _, key := range fns {
		_, id := splitKey(key)
		e.bus.Publish(event.FunctionUnregistered{FunctionID: id, WorkerID: c.id, At: now})
	}
	for _, tt := range lostTypes {
		e.bus.Publish(event.TriggerTypeUnregistered{TriggerType: tt.id, Namespace: nsOrDefault(tt.ns), WorkerID: c.id, At: now})
	}
	e.apply(ops)
	if len(fns) > 0 {
		e.notifyFunctionsChanged()
	}
}

// WorkerInfo describes a connected worker or an in-process one.
type WorkerInfo struct {
	ID                string
	Name              string
	Namespace         string // DefaultNamespace unless the worker named one
	Description       string
	Runtime           string
	Version           string
	OS                string
	PID               int
	Isolation         string
	Status            string // connected, busy, draining, available (in-process)
	IPAddress         string
	ConnectedAt       time.Time
	ActiveInvocations int64
	Internal          bool // in-process
	Draining          bool
	Functions         []string // ids, in the worker's namespace
	TriggerTypes      []string
	// Features the worker declared (0.25+ SDKs).
	Features []string
	// Engine names the cluster engine the worker is connected to; empty
	// for this engine's own (always so in Snapshot).
	Engine string
	// Triggers are the ids of the bindings it holds a claim on (a binding
	// shared by several workers is listed under each).
	Triggers []string
}

// FunctionInfo describes a function id and the workers serving it.
type FunctionInfo struct {
	ID             string
	Namespace      string // DefaultNamespace, or the namespace of the workers serving it
	Description    string
	RequestFormat  json.RawMessage
	ResponseFormat json.RawMessage
	Metadata       json.RawMessage
	Workers        []string // names, one per registration
	WorkerIDs      []string // ids of remote workers serving it
	Internal       bool     // served in-process
	// Engines names the cluster engines serving it; empty in Snapshot
	// (this engine only).
	Engines []string
}

// TriggerTypeInfo describes a trigger type.
type TriggerTypeInfo struct {
	ID                   string
	Namespace            string // the one it serves; DefaultNamespace for the engine's
	Description          string
	Worker               string
	WorkerID             string
	TriggerRequestFormat json.RawMessage
	CallRequestFormat    json.RawMessage
	Internal             bool
	Instances            int
}

// TriggerInfo describes a binding: one per trigger type, function and
// config, however many workers registered it. ID is the id the provider
// knows (its first registration's); OwnerWorker, Worker and Metadata are
// those of its newest registration.
type TriggerInfo struct {
	Trigger          // FunctionID is the bare id; Namespace where it resolves
	Namespace string // DefaultNamespace unless registered with one
	Worker    string // owner's name ("" for ownerless)
	Active    bool   // false while parked waiting for its type
	// ProviderNamespace is where the trigger type serving it lives ("" while
	// parked).
	ProviderNamespace string
	ClaimIDs          []string // the ids it was registered under, oldest first
}

// Snapshot is a consistent copy of the engine's registries, sorted by id.
type Snapshot struct {
	Workers      []WorkerInfo
	Functions    []FunctionInfo
	TriggerTypes []TriggerTypeInfo
	Triggers     []TriggerInfo
	Observers    []ObserverInfo // by source function, then id
}

// Snapshot copies the registries. Nothing in it points into the engine.
func (e *Engine) Snapshot() Snapshot {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var s Snapshot
	localFns := map[*localWorker][]string{}
	localTypes := map[string][]string{}
	for _, f := range e.functions {
		id := f.id
		fi := FunctionInfo{ID: id, Namespace: nsOrDefault(f.ns)}
		for i, r := range f.regs {
			if i == len(f.regs)-1 { // the latest registration describes the id
				fi.Description, fi.RequestFormat, fi.ResponseFormat, fi.Metadata =
					r.description, r.requestFormat, r.responseFormat, r.metadata
			}
			fi.Workers = append(fi.Workers, r.workerName())
			switch {
			case r.conn != nil:
				fi.WorkerIDs = append(fi.WorkerIDs, r.conn.id)
			case r.owner != nil: // HTTP-invoked: served here, owned by a worker
				fi.WorkerIDs = append(fi.WorkerIDs, r.owner.id)
			default:
				fi.Internal = true
				localFns[r.local] = append(localFns[r.local], id)
			}
		}
		s.Functions = append(s.Functions, fi)
	}
	counts := map[string]int{} // by provider key
	for _, b := range e.triggers {
		if b.active {
			counts[b.prov]++
		}
		ti := TriggerInfo{Trigger: b.Trigger, Active: b.active}
		ti.Namespace, ti.FunctionID = splitKey(b.FunctionID)
		if b.active {
			ti.ProviderNamespace, _ = splitKey(b.prov)
		}
		if o := b.owner().owner; o != nil {
			ti.Worker = o.name()
		}
		for _, cl := range b.claims {
			ti.ClaimIDs = append(ti.ClaimIDs, cl.id)
		}
		s.Triggers = append(s.Triggers, ti)
	}
	for key, tt := range e.ttypes {
		id := tt.id
		ti := TriggerTypeInfo{ID: id, Namespace: nsOrDefault(tt.ns), Description: tt.description, Worker: tt.workerName(),
			TriggerRequestFormat: tt.trf, CallRequestFormat: tt.crf, Internal: tt.local != nil, Instances: counts[key]}
		if tt.conn != nil {
			ti.WorkerID = tt.conn.id
		} else {
			localTypes[tt.worker] = append(localTypes[tt.worker], id)
		}
		s.TriggerTypes = append(s.TriggerTypes, ti)
	}
	for _, c := range e.conns {
		c.mu.Lock()
		m := c.meta
		c.mu.Unlock()
		wi := WorkerInfo{ID: c.id, Name: m.Name, Namespace: c.namespace(), Description: m.Description, Runtime: m.Runtime,
			Version: m.Version, OS: m.OS, PID: m.PID, Isolation: m.Isolation, IPAddress: hostOf(c.addr),
			ConnectedAt: c.connectedAt, ActiveInvocations: c.inflight.Load(), Draining: c.draining.Load()}
		if wi.Name == "" {
			wi.Name = c.id
		}
		switch {
		case wi.Draining:
			wi.Status = "draining"
		case wi.ActiveInvocations > 0:
			wi.Status = "busy"
		default:
			wi.Status = "connected"
		}
		for key := range c.fnIDs {
			_, id := splitKey(key)
			wi.Functions = append(wi.Functions, id)
		}
		if d := c.decl.Load(); d != nil {
			wi.Features = slices.Clone(d.features)
		}
		for key := range c.ttypeIDs {
			_, id := splitKey(key)
			wi.TriggerTypes = append(wi.TriggerTypes, id)
		}
		for id := range c.triggerIDs {
			if cl := e.claims[id]; cl != nil {
				wi.Triggers = append(wi.Triggers, cl.b.ID)
			}
		}
		sort.Strings(wi.Functions)
		sort.Strings(wi.TriggerTypes)
		sort.Strings(wi.Triggers)
		s.Workers = append(s.Workers, wi)
	}
	for name, lw := range e.locals {
		wi := WorkerInfo{ID: name, Name: name, Namespace: DefaultNamespace, Description: lw.description, Runtime: "engine",
			Isolation: "in-process", Status: "available", ConnectedAt: lw.startedAt, Internal: true,
			Functions: localFns[lw], TriggerTypes: localTypes[name]}
		sort.Strings(wi.Functions)
		sort.Strings(wi.TriggerTypes)
		s.Workers = append(s.Workers, wi)
	}
	e.obs.mu.Lock()
	s.Observers = e.observersLocked()
	e.obs.mu.Unlock()
	sort.Slice(s.Workers, func(i, j int) bool {
		if s.Workers[i].Name != s.Workers[j].Name {
			return s.Workers[i].Name < s.Workers[j].Name
		}
		return s.Workers[i].ID < s.Workers[j].ID
	})
	sort.Slice(s.Functions, func(i, j int) bool {
		if s.Functions[i].ID != s.Functions[j].ID {
			return s.Functions[i].ID < s.Functions[j].ID
		}
		return s.Functions[i].Namespace < s.Functions[j].Namespace
	})
	sort.Slice(s.TriggerTypes, func(i, j int) bool {
		if s.TriggerTypes[i].ID != s.TriggerTypes[j].ID {
			return s.TriggerTypes[i].ID < s.TriggerTypes[j].ID
		}
		return s.TriggerTypes[i].Namespace < s.TriggerTypes[j].Namespace
	})
	sort.Slice(s.Triggers, func(i, j int) bool { return s.Triggers[i].ID < s.Triggers[j].ID })
	return s
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

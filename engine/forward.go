package engine

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
)

// TriggerKindCluster marks a call another engine of the cluster forwarded
// to this one. Such a call is never forwarded again: if this engine has no
// handler for it any more, it ends with function_not_found.
const TriggerKindCluster = "cluster"

// CodeClusterUnavailable is the error of a call this engine cannot serve
// locally while the cluster's registry (Redis) is unreachable.
const CodeClusterUnavailable = protocol.CodeClusterUnavailable

// Forwarder routes calls this engine has no handler for to another engine
// serving the function (engine/cluster). Local handlers always win: the
// router asks the forwarder only when its own table has none.
type Forwarder interface {
	// Forward takes the call and returns true, then calls done exactly
	// once; or returns false (no engine serves the function) without
	// calling done. The call resolves by its namespace (call.Namespace,
	// "" for the default one) and function id on the other engine too.
	// timeout bounds the forwarded call. done must not block.
	Forward(call *Call, timeout time.Duration, done func(result json.RawMessage, err *protocol.ErrorBody)) bool
}

// ClusterView is implemented by a Forwarder that also knows what the other
// engines serve; the list built-ins and durable topics use it.
type ClusterView interface {
	// EngineName names this engine in cluster listings.
	EngineName() string
	// RemoteFunctions lists the functions other engines serve.
	RemoteFunctions() []FunctionInfo
	// RemoteWorkers lists the workers connected to other engines.
	RemoteWorkers() []WorkerInfo
	// RemoteBindings lists other engines' bindings of a trigger type.
	RemoteBindings(triggerType string) []Trigger
	// RemoteMetadata is the metadata another engine advertises for
	// function id in namespace ns ("" for the default one); nil when no
	// other engine serves it.
	RemoteMetadata(ns, id string) json.RawMessage
}

// SetForwarder installs (or, with nil, removes) the forwarder. Without one
// the engine behaves as a single engine and pays nothing.
func (e *Engine) SetForwarder(f Forwarder) {
	if f == nil {
		e.fwd.Store(nil)
		return
	}
	e.fwd.Store(&f)
}

// forward hands a call with no local handler to the forwarder; false when
// there is none, the call came from another engine, or no engine serves it.
func (e *Engine) forward(call Call, finish func(outcome)) bool {
	p := e.fwd.Load()
	if p == nil || call.Trigger == TriggerKindCluster {
		return false
	}
	return (*p).Forward(&call, e.opts.InvocationTimeout, func(res json.RawMessage, err *protocol.ErrorBody) {
		finish(outcome{result: res, err: err})
	})
}

// clusterView is the forwarder's view of the other engines, or nil.
func (e *Engine) clusterView() ClusterView {
	p := e.fwd.Load()
	if p == nil {
		return nil
	}
	v, _ := (*p).(ClusterView)
	return v
}

// ClusterBindings is Bindings across the cluster: this engine's active
// bindings of triggerType, then other engines' (empty without a cluster).
func (e *Engine) ClusterBindings(triggerType string) []Trigger {
	out := e.Bindings(triggerType)
	if v := e.clusterView(); v != nil {
		out = append(out, v.RemoteBindings(triggerType)...)
	}
	return out
}

// clusterWorkers is ws (this engine's, from one Snapshot) plus, in a
// cluster, every other engine's workers, each naming its engine.
func (e *Engine) clusterWorkers(ws []WorkerInfo) []WorkerInfo {
	v := e.clusterView()
	if v == nil {
		return ws
	}
	name := v.EngineName()
	for i := range ws {
		ws[i].Engine = name
	}
	return append(ws, v.RemoteWorkers()...)
}

// clusterFunctions is fs (this engine's, from one Snapshot) merged, in a
// cluster, with every other engine's: one entry per namespace and id, its workers and
// engines joined.
func (e *Engine) clusterFunctions(fs []FunctionInfo) []FunctionInfo {
	v := e.clusterView()
	if v == nil {
		return fs
	}
	name := v.EngineName()
	at := make(map[string]int, len(fs))
	for i := range fs {
		if len(fs[i].WorkerIDs) > 0 { // in-process functions run on every engine
			fs[i].Engines = []string{name}
		}
		at[fnKey(fs[i].Namespace, fs[i].ID)] = i
	}
	for _, r := range v.RemoteFunctions() {
		k := fnKey(r.Namespace, r.ID)
		i, ok := at[k]
		if !ok {
			at[k] = len(fs)
			fs = append(fs, r)
			continue
		}
		f := &fs[i]
		f.Workers = append(f.Workers, r.Workers...)
		f.WorkerIDs = append(f.WorkerIDs, r.WorkerIDs...)
		f.Engines = append(f.Engines, r.Engines...)
	}
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].ID != fs[j].ID {
			return fs[i].ID < fs[j].ID
		}
		return fs[i].Namespace < fs[j].Namespace
	})
	return fs
}

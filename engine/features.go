package engine

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Feature tokens of the iii 0.25+ SDKs. A worker declares the ones it
// speaks in its engine::workers::register payload ("features"); the engine
// lists the ones it implements in workerregistered.features. A 0.22 SDK
// declares none and the engine treats it exactly as before.
const (
	FeatureObserveV1       = "observe.v1"
	FeatureObserveV2       = "observe.v2"
	FeatureLocalDispatchV1 = "local-dispatch.v1"
	// FeatureLargeMessagesV1 (declared by the SDK): it reads JSON messages
	// up to 64 MiB.
	FeatureLargeMessagesV1 = "large-messages.v1"
)

// registerWorkerFunction is the call every SDK makes once per connection
// with its name, runtime and (0.25+) namespace and features.
const registerWorkerFunction = "engine::workers::register"

// Advertise adds feature tokens to what the engine lists in every new
// connection's workerregistered. Advertise only what is implemented; a
// connection learns the list once, in its greeting, so call it before
// workers connect (New and the engine's own parts do).
func (e *Engine) Advertise(tokens ...string) {
	e.featMu.Lock()
	defer e.featMu.Unlock()
	for _, t := range tokens {
		if t != "" && !slices.Contains(e.features, t) {
			e.features = append(e.features, t)
		}
	}
}

// Features is what the engine advertises, in the order it was added.
func (e *Engine) Features() []string {
	e.featMu.RLock()
	defer e.featMu.RUnlock()
	return slices.Clone(e.features)
}

// greeting is a new connection's workerregistered.
func (e *Engine) greeting(c *conn) protocol.WorkerRegistered {
	return protocol.WorkerRegistered{WorkerID: c.id, ReattachToken: c.token, Features: e.Features()}
}

// declaration is what a worker said about itself in engine::workers::register
// beyond its metadata: its namespace and features. A connection without one
// (a 0.22 SDK, or one that has not sent it yet) has no features and lives in
// the default namespace.
type declaration struct {
	namespace string // "" = the default namespace
	features  []string
}

// hasFeature reports whether the worker declared token. It is cheap (no
// lock) and safe from any goroutine.
func (c *conn) hasFeature(token string) bool {
	d := c.decl.Load()
	return d != nil && slices.Contains(d.features, token)
}

// declared reports whether the worker has declared features (a 0.25+ SDK
// after its engine::workers::register arrived).
func (c *conn) declared() bool {
	d := c.decl.Load()
	return d != nil && len(d.features) > 0
}

// onDeclared registers fn to run, on the worker's reader goroutine and in
// order with its other frames, each time a worker's engine::workers::register
// is applied (first is true the first time on that connection). Registrations
// that arrived earlier on the connection (the SDKs replay them before the
// declaration) are in place when fn runs. Call it from New, before workers
// connect.
func (e *Engine) onDeclared(fn func(c *conn, first bool)) {
	e.declHooks = append(e.declHooks, fn)
}

// registerWorker applies a worker's engine::workers::register payload: its
// metadata, namespace and features. It runs on the worker's reader, before
// the call is routed, so frames after it see the declaration in place.
func (e *Engine) registerWorker(c *conn, data json.RawMessage) error {
	var in workerMeta
	if err := decodeArgs(data, &in); err != nil {
		return err
	}
	in.Name, in.Description = cleanText(in.Name), cleanText(in.Description)
	c.mu.Lock()
	c.meta = in
	c.mu.Unlock()
	d := &declaration{namespace: strings.TrimSpace(in.Namespace), features: slices.Clone(in.Features)}
	if d.namespace == DefaultNamespace {
		d.namespace = ""
	}
	old := c.decl.Load()
	if old != nil && old.namespace != d.namespace {
		// As iii: the first declaration fixes the connection's namespace.
		c.log.Warn("worker declared another namespace on the same connection; kept its first",
			"namespace", nsOrDefault(old.namespace), "declared", nsOrDefault(d.namespace))
		d.namespace = old.namespace
	}
	first := old == nil
	c.decl.Store(d)
	if first {
		e.settleDeclaration(c)
		e.settleTriggers(c)
	}
	c.log.Debug("worker metadata", "name", in.Name, "runtime", in.Runtime, "version", in.Version, "pid", in.PID,
		"namespace", in.Namespace, "features", in.Features)
	for _, fn := range e.declHooks {
		fn(c, first)
	}
	e.bus.Publish(event.WorkerUpdated{WorkerID: c.id, Name: in.Name, Runtime: in.Runtime, Version: in.Version,
		PID: in.PID, Draining: c.draining.Load(), Namespace: c.namespace(), At: time.Now()})
	e.fireWorkersAvailable("worker_metadata_updated", c.id)
	return nil
}

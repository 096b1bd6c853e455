package stream

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/sdk"
)

// Events between engines bridged to one remote engine (bridge_url), as
// iii's bridge adapter shares them: every change or custom event made here
// is also published on the remote engine's pub/sub topic stream.events,
// and every message on that topic reaches this engine's subscribers. Ours
// and iii's engines can so share one remote engine and see each other's
// changes. (Changes made on the remote engine itself reach only its own
// subscribers, as in iii.)
//
// This engine's subscribers get its own changes at once, through its own
// channel; when the same event comes back from the topic it is recognised
// (echoes) and skipped.

// bridgeEventsTopic is iii's topic for stream events between bridged
// engines.
const bridgeEventsTopic = "stream.events"

// echoTTL is how long an event published to the topic waits for its echo.
const echoTTL = 10 * time.Second

// echoes remembers the events this engine published to the topic, by hash.
type echoes struct {
	mu     sync.Mutex
	sent   map[uint64]time.Time
	pruned time.Time // last sweep of overdue entries
}

// hashOf hashes an event in a canonical form (keys sorted, numbers as
// float64), so that its echo matches even when the remote engine wrote it
// anew (iii's engine sorts object keys).
func hashOf(b []byte) uint64 {
	var v any
	if err := json.Unmarshal(b, &v); err == nil {
		if c, err := json.Marshal(v); err == nil {
			b = c
		}
	}
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// add records a published event and forgets the ones whose echo is overdue.
func (e *echoes) add(b []byte) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sent == nil {
		e.sent = map[uint64]time.Time{}
	}
	// Sweep at most once an echoTTL: without echoes (a remote with no
	// pub/sub) the map holds one TTL's worth of events, not a scan each.
	if now.Sub(e.pruned) > echoTTL {
		e.pruned = now
		for k, t := range e.sent {
			if now.Sub(t) > echoTTL {
				delete(e.sent, k)
			}
		}
	}
	e.sent[hashOf(b)] = now
}

// echo reports whether b is an event this engine published, forgetting it.
func (e *echoes) echo(b []byte) bool {
	k := hashOf(b)
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.sent[k]; ok {
		delete(e.sent, k)
		return true
	}
	return false
}

// watchBridge runs on the bridge's first connection: it subscribes a
// function of this engine's, on the remote engine, to the topic.
func (m *Module) watchBridge(w *sdk.Worker) error {
	fn := "stream::bridge::on_pub::" + uuid.NewString()
	err := w.RegisterFunction(fn, func(_ context.Context, in json.RawMessage) (any, error) {
		if !m.echoes.echo(in) {
			m.deliver(in)
		}
		return nil, nil
	}, sdk.WithDescription("Stream events of the engines bridged to this one"))
	if err != nil {
		return err
	}
	_, err = w.RegisterTrigger(sdk.Trigger{Type: "subscribe", FunctionID: fn, Config: map[string]string{"topic": bridgeEventsTopic}})
	return err
}

// publishBridge publishes an event to the other bridged engines. Before
// the first connection there is nobody to tell (a stream::send then): it
// does not wait for one, as the caller would.
func (m *Module) publishBridge(ctx context.Context, wrapper []byte) {
	if !m.remote.Connected() {
		m.log.WarnContext(ctx, "stream event not published to the bridged engines: not connected yet", "bridge_url", m.remote.URL())
		return
	}
	m.echoes.add(wrapper)
	_, err := m.remote.Trigger(context.WithoutCancel(ctx), sdk.TriggerRequest{FunctionID: "publish", Action: sdk.Void(),
		Payload: struct {
			Topic string          `json:"topic"`
			Data  json.RawMessage `json:"data"`
		}{bridgeEventsTopic, wrapper}})
	if err != nil {
		m.log.ErrorContext(ctx, "stream event not published to the bridged engines", "bridge_url", m.remote.URL(), "err", err)
	}
}

// Package pubsub is the PubSub module (iii's PubSubModule / iii-pubsub):
// the function `publish {topic, data}` and the trigger type
// `subscribe {topic}`.
//
// Delivery is at-most-once fan-out through Redis pub/sub: publish does a
// PUBLISH of data on the topic's channel (<prefix>pubsub:topic:<topic>);
// every engine on that Redis holds one PSUBSCRIBE on all topic channels and
// calls the functions of its own `subscribe` bindings for the topic with the
// raw data (no envelope), fire-and-forget. Several engines on one Redis
// therefore share topics; a message published while an engine is cut off
// from Redis is lost for it. The subscription reconnects on its own
// (go-redis) when Redis goes away and comes back.
//
// Config: none; iii's `adapter` block (local, redis) is accepted and
// ignored.
package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Names on the engine.
const (
	WorkerName      = "iii-pubsub"
	PublishFunction = "publish"
	TriggerType     = "subscribe"
)

// Error codes of publish.
const (
	CodeTopicNotSet   = "topic_not_set"
	CodePublishFailed = "publish_failed"
)

// channelBuffer is how many received messages may wait for dispatch; past
// it go-redis blocks the connection reader (and eventually drops).
const channelBuffer = 1024

// ErrStopped is returned for bindings delivered after Stop.
var ErrStopped = errors.New("pubsub: module stopped")

func init() {
	module.Register(module.Info{ID: "pubsub", New: func() module.Module { return &Module{} }})
}

// Module is the pub/sub module. Its exported fields are its config.yaml
// keys.
type Module struct {
	// Adapter is iii's adapter block (local, redis), accepted for config
	// compatibility and ignored: topics always go through the engine's Redis.
	Adapter any `yaml:"adapter"`

	eng    *engine.Engine
	redis  redis.UniversalClient
	log    *slog.Logger
	prefix string // channel name prefix; the topic follows

	ps   *redis.PubSub
	life module.Lifecycle

	mu     sync.RWMutex
	topics map[string]map[string]engine.Trigger // topic -> trigger id -> binding
	byID   map[string]string                    // trigger id -> topic
}

var _ module.Module = (*Module)(nil)

// ID implements module.Module.
func (m *Module) ID() string { return "pubsub" }

// Start implements module.Module: it subscribes to every topic channel
// (waiting for Redis to confirm) and registers publish and subscribe.
func (m *Module) Start(ctx context.Context, h *module.Host) error {
	if h.Redis == nil {
		return errors.New("pubsub: needs the Redis store")
	}
	m.eng, m.redis, m.log = h.Engine, h.Redis, h.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.prefix = h.Key("pubsub", "topic") + ":"
	m.topics = make(map[string]map[string]engine.Trigger)
	m.byID = make(map[string]string)
	if m.Adapter != nil {
		m.log.Info("pubsub: the adapter setting is ignored; topics go through the engine's Redis")
	}

	loopCtx := m.life.Begin(ctx, h.Engine)
	ps := h.Redis.PSubscribe(ctx, m.prefix+"*")
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		m.Stop(ctx)
		return fmt.Errorf("pubsub: subscribe: %w", err)
	}
	m.ps = ps
	ch := ps.Channel(redis.WithChannelSize(channelBuffer))
	// Exits when Stop cancels loopCtx or closes the subscription.
	m.life.Go(func() { m.receive(loopCtx, ch) })

	err := m.life.RegisterFunction(WorkerName, engine.Function{
		ID:            PublishFunction,
		Description:   "Publishes data to every subscribe trigger on topic, on every engine sharing this Redis (at most once)",
		RequestFormat: json.RawMessage(`{"type":"object","properties":{"topic":{"type":"string"},"data":{}},"required":["topic"]}`),
		Handler:       m.publish,
	})
	if err == nil {
		err = h.Engine.RegisterTriggerType(WorkerName, engine.TriggerType{
			ID:                   TriggerType,
			Description:          "Receives the data published to a topic",
			TriggerRequestFormat: json.RawMessage(`{"type":"object","properties":{"topic":{"type":"string"}},"required":["topic"]}`),
			Provider:             provider{m},
		})
	}
	if err != nil {
		m.Stop(ctx)
		return fmt.Errorf("pubsub: %w", err)
	}
	return nil
}

// Stop implements module.Module: it closes the subscription and waits for
// the receive loop.
func (m *Module) Stop(ctx context.Context) error {
	return m.life.Stop(ctx, module.CloseSubscription(m.ps))
}

type publishArgs struct {
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
}

func (m *Module) publish(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in publishArgs
	if err := json.Unmarshal(call.Data, &in); err != nil {
		return nil, &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: "publish: want {topic, data}: " + err.Error()}
	}
	if in.Topic == "" {
		return nil, &protocol.ErrorBody{Code: CodeTopicNotSet, Message: "publish: topic is required"}
	}
	data := in.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	if err := m.redis.Publish(ctx, m.prefix+in.Topic, []byte(data)).Err(); err != nil {
		return nil, &protocol.ErrorBody{Code: CodePublishFailed, Message: fmt.Sprintf("publish to %q: %v", in.Topic, err)}
	}
	return nil, nil
}

// receive dispatches each message to the local bindings of its topic until
// ctx ends or the subscription is closed.
func (m *Module) receive(ctx context.Context, ch <-chan *redis.Message) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			m.deliver(msg)
		}
	}
}

func (m *Module) deliver(msg *redis.Message) {
	topic, ok := strings.CutPrefix(msg.Channel, m.prefix)
	if !ok {
		return
	}
	data := json.RawMessage(msg.Payload)
	if !json.Valid(data) {
		m.log.Warn("pubsub message is not JSON; dropped", "topic", topic, "bytes", len(data))
		return
	}
	m.observed(topic, data)
	m.mu.RLock()
	targets := make([]engine.Trigger, 0, len(m.topics[topic]))
	for _, t := range m.topics[topic] {
		targets = append(targets, t)
	}
	m.mu.RUnlock()
	for _, t := range targets {
		// Void calls return at once; results and errors go to the event bus.
		m.eng.Invoke(context.Background(), engine.Request{FunctionID: t.FunctionID, Data: data,
			Metadata: t.Metadata, Action: &protocol.Action{Type: protocol.ActionVoid}})
	}
}

type provider struct{ m *Module }

type bindingConfig struct {
	Topic string `json:"topic"`
}

// RegisterTrigger adds (or replaces) a subscription binding.
func (p provider) RegisterTrigger(_ context.Context, t engine.Trigger) error {
	var cfg bindingConfig
	if len(t.Config) > 0 {
		if err := json.Unmarshal(t.Config, &cfg); err != nil {
			return fmt.Errorf("pubsub: invalid subscribe config: %v", err)
		}
	}
	if cfg.Topic == "" {
		return errors.New("pubsub: config.topic is required")
	}
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.life.Stopping() {
		return ErrStopped
	}
	m.removeLocked(t.ID)
	if m.topics[cfg.Topic] == nil {
		m.topics[cfg.Topic] = make(map[string]engine.Trigger)
	}
	m.topics[cfg.Topic][t.ID] = t
	m.byID[t.ID] = cfg.Topic
	return nil
}

// UnregisterTrigger removes a subscription binding.
func (p provider) UnregisterTrigger(_ context.Context, t engine.Trigger) error {
	p.m.mu.Lock()
	p.m.removeLocked(t.ID)
	p.m.mu.Unlock()
	return nil
}

func (m *Module) removeLocked(id string) {
	topic, ok := m.byID[id]
	if !ok {
		return
	}
	delete(m.byID, id)
	delete(m.topics[topic], id)
	if len(m.topics[topic]) == 0 {
		delete(m.topics, topic)
	}
}

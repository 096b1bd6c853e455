package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// subscriberConfig is the config of a durable:subscriber (or legacy queue)
// binding.
type subscriberConfig struct {
	Topic string `json:"topic"`
	// Queue is the queue deliveries go through; default: the topic's name.
	Queue     string `json:"queue"`
	Condition string `json:"condition_function_id"`
	// QueueConfig overrides the queue's retry settings for this
	// subscriber's deliveries.
	QueueConfig *struct {
		MaxRetries *int `json:"max_retries"`
		BackoffMS  *int `json:"backoff_ms"`
		// iii's spelling of the same two (maxRetries, backoffDelayMs).
		IIIMaxRetries *int `json:"maxRetries"`
		IIIBackoffMS  *int `json:"backoffDelayMs"`
	} `json:"queue_config"`
}

const subscriberSchema = `{"type":"object","required":["topic"],"properties":{` +
	`"topic":{"type":"string"},"queue":{"type":"string","description":"queue the deliveries go through; default: the topic name"},` +
	`"condition_function_id":{"type":"string"},` +
	`"queue_config":{"type":"object","properties":{"max_retries":{"type":"integer"},"backoff_ms":{"type":"integer"},` +
	`"maxRetries":{"type":"integer"},"backoffDelayMs":{"type":"integer"}}}}}`

func parseSubscriber(raw json.RawMessage) (subscriberConfig, error) {
	var c subscriberConfig
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &c); err != nil {
			return c, fmt.Errorf("bad config: %v", err)
		}
	}
	if c.Topic == "" {
		return c, fmt.Errorf("config.topic is required")
	}
	if c.Queue == "" {
		c.Queue = c.Topic
	}
	if err := checkName(c.Queue); err != nil {
		return c, fmt.Errorf("deliveries go through queue %q (config.queue, or the topic): %v", c.Queue, err)
	}
	if qc := c.QueueConfig; qc != nil {
		if qc.MaxRetries == nil {
			qc.MaxRetries = qc.IIIMaxRetries
		}
		if qc.BackoffMS == nil {
			qc.BackoffMS = qc.IIIBackoffMS
		}
		if qc.MaxRetries != nil && (*qc.MaxRetries < 0 || *qc.MaxRetries > maxRetries) {
			return c, fmt.Errorf("queue_config.max_retries %d is out of range 0-%d", *qc.MaxRetries, maxRetries)
		}
		if qc.BackoffMS != nil && *qc.BackoffMS < 0 {
			return c, fmt.Errorf("queue_config.backoff_ms %d is negative", *qc.BackoffMS)
		}
	}
	return c, nil
}

// subscriberProvider is the in-process provider of durable:subscriber and
// queue. Bindings live in the engine; it only checks their config.
type subscriberProvider struct{ m *Module }

func (p subscriberProvider) RegisterTrigger(_ context.Context, t engine.Trigger) error {
	_, err := parseSubscriber(t.Config)
	if err != nil {
		ns, id := splitFunctionKey(t.FunctionID)
		if ns = nsField(ns); ns != "" {
			id += " (namespace " + ns + ")"
		}
		return fmt.Errorf("%s trigger for %s: %w", t.Type, id, err)
	}
	return nil
}

func (p subscriberProvider) UnregisterTrigger(context.Context, engine.Trigger) error { return nil }

// subscriber is one function, or one observer of queue::on-message,
// subscribed to a topic.
type subscriber struct {
	functionID string
	observer   string // the observer it is, if any
	metadata   json.RawMessage
	cfg        subscriberConfig
}

// subscribers lists the distinct functions bound to topic on this engine
// and, in a cluster, on every other engine (one delivery per function,
// however many bindings it has; a function served elsewhere is reached
// through the engine's forwarding), and the observers of queue::on-message
// on topic (one delivery per observer, made through it, so its max_fires
// and max_in_flight apply).
func (m *Module) subscribers(topic string) []subscriber {
	var out []subscriber
	seen := map[string]bool{}
	for _, typ := range []string{TriggerDurableSubscriber, TriggerLegacy} {
		for _, t := range m.h.Engine.ClusterBindings(typ) {
			c, err := parseSubscriber(t.Config)
			if err != nil || c.Topic != topic {
				continue
			}
			key, observer := "fn:"+t.FunctionID, ""
			if id, ok := engine.BindingObserver(t.ID); ok {
				key, observer = "observer:"+id, id
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, subscriber{functionID: t.FunctionID, observer: observer, metadata: t.Metadata, cfg: c})
		}
	}
	return out
}

// topics counts this engine's durable subscribers per topic.
func (m *Module) topics() map[string]int {
	out := map[string]int{}
	for _, typ := range []string{TriggerDurableSubscriber, TriggerLegacy} {
		for _, t := range m.h.Engine.Bindings(typ) {
			if c, err := parseSubscriber(t.Config); err == nil {
				out[c.Topic]++
			}
		}
	}
	return out
}

type publishInput struct {
	Topic string          `json:"topic"`
	Queue string          `json:"queue"` // accepted for the topic, as iii does
	Data  json.RawMessage `json:"data"`
}

// publishFn is iii::durable::publish: one durable message per subscribed
// function, each with its own retries and dead-letter entry.
func (m *Module) publishFn(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in publishInput
	if err := decodeInput(call.Data, &in); err != nil {
		return nil, err
	}
	if in.Topic == "" {
		in.Topic = in.Queue
	}
	if in.Topic == "" {
		return nil, &protocol.ErrorBody{Code: CodeTopicNotSet, Message: "Topic is not set"}
	}
	if len(in.Data) == 0 {
		in.Data = json.RawMessage("null")
	}
	subs := m.subscribers(in.Topic)
	if len(subs) == 0 {
		m.h.Logger.Debug("queue: durable publish with no subscriber on this engine", "topic", in.Topic)
		return nil, nil
	}
	now := time.Now().UnixMilli()
	msgs := make([]*message, 0, len(subs))
	for _, s := range subs {
		msg := &message{ID: uuid.NewString(), Queue: s.cfg.Queue, FunctionID: s.functionID, Observer: s.observer, Data: in.Data,
			Metadata: s.metadata, Traceparent: call.Traceparent, Baggage: call.Baggage,
			Topic: in.Topic, Condition: s.cfg.Condition, EnqueuedAt: now}
		if qc := s.cfg.QueueConfig; qc != nil {
			msg.MaxRetries, msg.BackoffMS = qc.MaxRetries, qc.BackoffMS
		}
		msgs = append(msgs, msg)
	}
	if eb := m.enqueue(ctx, msgs); eb != nil {
		return nil, eb
	}
	return nil, nil
}

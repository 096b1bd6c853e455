package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/protocol"
)

func init() {
	module.Register(module.Info{ID: config.ModuleQueue, New: func() module.Module { return &Module{} }})
}

// Worker is the in-process worker name the module's functions and trigger
// types are registered under.
const Worker = "iii-queue"

// Function and trigger type IDs.
const (
	FunctionEnqueue        = engine.QueueEnqueueFunction
	FunctionPublish        = "iii::durable::publish"
	FunctionRedrive        = "iii::queue::redrive"
	FunctionRedriveMessage = "iii::queue::redrive_message"
	FunctionDiscardMessage = "iii::queue::discard_message"
	FunctionListTopics     = "engine::queue::list_topics"
	FunctionTopicStats     = "engine::queue::topic_stats"
	FunctionDLQTopics      = "engine::queue::dlq_topics"
	FunctionDLQMessages    = "engine::queue::dlq_messages"

	TriggerDurableSubscriber = "durable:subscriber"
	// TriggerLegacy is the pre-0.16 name of durable:subscriber.
	TriggerLegacy = "queue"
)

// Error codes of the queue functions (beyond the engine's).
const (
	CodeQueueNotSet = "queue_not_set"
	CodeTopicNotSet = "topic_not_set"
	CodeQueueError  = "queue_error"
	// CodeTimeout is the last_error code of a handler that did not finish
	// within the queue's timeout_ms.
	CodeTimeout = protocol.CodeTimeout
)

// Internal limits.
const (
	// fetchBatch bounds how many messages one read takes.
	fetchBatch = 32
	// blockFor is how long a read waits for new messages on the module's
	// own connection pool (closed at Stop, which ends the wait at once).
	blockFor = time.Second
	// blockShared is the wait when reads share the host's client, which
	// Stop cannot interrupt.
	blockShared = 200 * time.Millisecond
	// opTimeout bounds each acknowledgement, retry or dead-letter write.
	opTimeout = 5 * time.Second
	// discoverEvery is how often the module looks for queues other engines
	// created.
	discoverEvery = 2 * time.Second
	// moveBatch bounds how many due retries one script call moves.
	moveBatch = 256
	// maxRedisBackoff caps the wait between attempts while Redis is down.
	maxRedisBackoff = 5 * time.Second
)

// Module is the queue module: durable queues on Redis Streams with
// at-least-once delivery, retries with exponential backoff, dead-letter
// queues, FIFO message groups and durable topic fan-out. See the package
// documentation.
type Module struct {
	// Queues configures queues by name; `default` always exists.
	Queues map[string]QueueConfig `yaml:"queues"`
	// QueueConfigs is iii's name for Queues; both may be used, but a queue
	// may appear in only one.
	QueueConfigs map[string]QueueConfig `yaml:"queue_configs"`
	// MaxQueues bounds the queues this engine consumes (default 256).
	// Enqueueing to a new name past it fails with queue_not_set.
	MaxQueues int `yaml:"max_queues"`

	settings map[string]settings // resolved by Validate

	h        *module.Host
	rdb      redis.UniversalClient // commands
	blocking redis.UniversalClient // blocking reads; closed at Stop when owned
	ownBlock bool
	block    time.Duration
	consumer string // this engine's consumer name in every group
	health   health

	// Scripts loaded once; EVALSHA falls back to EVAL.
	moveScript, redriveScript, renewScript, releaseScript *redis.Script

	mu       sync.Mutex // guards queues, stopping
	queues   map[string]*queue
	stopping bool

	life          module.Lifecycle // functions and every goroutine the module started
	loopCtx       context.Context  // cancelled when Stop begins (life's)
	handlerCtx    context.Context  // cancelled when Stop gives up waiting
	handlerCancel context.CancelFunc
}

// queue is one queue this engine consumes.
type queue struct {
	name  string
	s     settings
	k     keys
	slots chan struct{} // standard queues: one token per running handler
}

var (
	_ module.Module    = (*Module)(nil)
	_ module.Validator = (*Module)(nil)
)

// ID implements module.Module.
func (m *Module) ID() string { return config.ModuleQueue }

// Validate resolves the queue settings and reports every bad value.
func (m *Module) Validate() error {
	if m.MaxQueues < 0 {
		return fmt.Errorf("max_queues: %d is negative", m.MaxQueues)
	}
	s, err := resolveAll(m.Queues, m.QueueConfigs)
	if err != nil {
		return err
	}
	m.settings = s
	return nil
}

// Start registers the queue functions and trigger types and starts the
// consumers of every configured queue.
func (m *Module) Start(ctx context.Context, h *module.Host) error {
	if h.Redis == nil {
		return errors.New("queue: no Redis store")
	}
	if m.settings == nil {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	if m.MaxQueues == 0 {
		m.MaxQueues = DefaultMaxQueues
	}
	m.MaxQueues = max(m.MaxQueues, len(m.settings))
	m.h = h
	m.rdb = h.Redis
	m.health.log = h.Logger
	if m.health.log == nil {
		m.health.log = slog.New(slog.DiscardHandler)
	}
	m.blocking, m.ownBlock = blockingClient(h.Redis)
	m.block = blockShared
	if m.ownBlock {
		m.block = blockFor
	}
	host, _ := os.Hostname()
	m.consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	m.moveScript = redis.NewScript(moveLua)
	m.redriveScript = redis.NewScript(redriveLua)
	m.renewScript = redis.NewScript(renewLua)
	m.releaseScript = redis.NewScript(releaseLua)
	m.queues = map[string]*queue{}
	m.loopCtx = m.life.Begin(ctx, h.Engine)
	m.handlerCtx, m.handlerCancel = context.WithCancel(context.WithoutCancel(ctx))

	if err := m.register(); err != nil {
		m.Stop(ctx)
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(m.settings)) {
		if _, err := m.ensureQueue(name); err != nil {
			return err // only after Stop began; cannot happen here
		}
	}
	m.goLoop(m.moveLoop)
	m.goLoop(m.discoverLoop)
	h.Logger.Info("queue module started", "queues", slices.Sorted(maps.Keys(m.settings)), "consumer", m.consumer)
	return nil
}

// Stop stops fetching, lets running handlers finish within ctx (their
// messages are acknowledged), and leaves every message not finished
// pending in Redis for re-delivery.
func (m *Module) Stop(ctx context.Context) error {
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()
	err := m.life.Stop(ctx, func() error {
		if m.ownBlock {
			// Ends blocked reads at once; the handlers use the host's client.
			m.blocking.Close()
		}
		return nil
	})
	if err != nil {
		// In-flight handlers are abandoned: their messages stay pending
		// and are re-delivered after claim_idle_ms.
		m.handlerCancel()
		m.life.Wait(context.Background())
		err = fmt.Errorf("queue: stop: handlers still running were abandoned: %w", err)
	}
	if m.handlerCancel != nil {
		m.handlerCancel()
	}
	return err
}

// goLoop starts a goroutine owned by the module unless Stop has begun.
func (m *Module) goLoop(f func(ctx context.Context)) bool {
	// Exits when loopCtx is cancelled (Stop).
	return m.life.Go(func() { f(m.loopCtx) })
}

// register installs the functions and trigger types.
func (m *Module) register() error {
	fns := []engine.Function{
		{ID: FunctionEnqueue, Description: "Put a call on a queue; the target function is invoked later (at least once)", Handler: m.enqueueFn},
		{ID: FunctionPublish, Description: "Publish to a durable topic: one durable delivery per durable:subscriber function", Handler: m.publishFn},
		{ID: FunctionRedrive, Description: "Move every dead-lettered message of a queue back onto it", Handler: m.redriveFn},
		{ID: FunctionRedriveMessage, Description: "Move one dead-lettered message back onto its queue", Handler: m.redriveMessageFn},
		{ID: FunctionDiscardMessage, Description: "Delete one dead-lettered message", Handler: m.discardMessageFn},
		{ID: FunctionListTopics, Description: "List queues and durable topics", Handler: m.listTopicsFn},
		{ID: FunctionTopicStats, Description: "Depth, in-flight, delayed and dead-letter counts per queue", Handler: m.topicStatsFn},
		{ID: FunctionDLQTopics, Description: "Queues with dead-lettered messages", Handler: m.dlqTopicsFn},
		{ID: FunctionDLQMessages, Description: "Browse a queue's dead-lettered messages", Handler: m.dlqMessagesFn},
	}
	for _, f := range fns {
		if err := m.life.RegisterFunction(Worker, f); err != nil {
			return fmt.Errorf("queue: register %s: %w", f.ID, err)
		}
	}
	for _, id := range []string{TriggerDurableSubscriber, TriggerLegacy} {
		desc := "Durable topic subscription: every iii::durable::publish on config.topic is delivered with retries and a dead-letter queue"
		if id == TriggerLegacy {
			desc = "Legacy name of durable:subscriber"
		}
		err := m.h.Engine.RegisterTriggerType(Worker, engine.TriggerType{ID: id, Description: desc,
			TriggerRequestFormat: json.RawMessage(subscriberSchema), Provider: subscriberProvider{m}})
		if err != nil {
			return fmt.Errorf("queue: register trigger type %s: %w", id, err)
		}
	}
	return nil
}

// blockingClient returns a client of its own for blocking reads (so Stop can
// end them by closing it, and they never starve the host's pool), or the
// host's client when its kind cannot be copied.
func blockingClient(c redis.UniversalClient) (redis.UniversalClient, bool) {
	switch c := c.(type) {
	case *redis.Client:
		o := *c.Options()
		o.PoolSize = 4 * DefaultMaxQueues
		return redis.NewClient(&o), true
	case *redis.ClusterClient:
		o := *c.Options()
		o.PoolSize = 4 * DefaultMaxQueues
		return redis.NewClusterClient(&o), true
	}
	return c, false
}

// settingsFor is the configuration of a queue: its own, or `default`'s for
// a queue config.yaml does not list.
func (m *Module) settingsFor(name string) settings {
	if s, ok := m.settings[name]; ok {
		return s
	}
	return m.settings[DefaultQueue]
}

// ensureQueue returns the queue, starting its consumers on this engine the
// first time it is seen.
func (m *Module) ensureQueue(name string) (*queue, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.queues[name]; q != nil {
		return q, nil
	}
	if m.stopping {
		return nil, errors.New("the queue module is stopping")
	}
	if len(m.queues) >= m.MaxQueues {
		return nil, fmt.Errorf("this engine already consumes max_queues=%d queues; configure %q or raise max_queues", m.MaxQueues, name)
	}
	s := m.settingsFor(name)
	q := &queue{name: name, s: s, k: newKeys(m.h.Key, name)}
	m.queues[name] = q
	if s.FIFO {
		for i := range s.Concurrency {
			m.goLoop(func(ctx context.Context) { m.partitionLoop(ctx, q, i) })
		}
	} else {
		q.slots = make(chan struct{}, s.Concurrency)
		m.goLoop(func(ctx context.Context) { m.fetchLoop(ctx, q) })
	}
	return q, nil
}

// snapshot copies the queues this engine consumes.
func (m *Module) snapshot() []*queue {
	m.mu.Lock()
	defer m.mu.Unlock()
	qs := make([]*queue, 0, len(m.queues))
	for _, q := range m.queues {
		qs = append(qs, q)
	}
	slices.SortFunc(qs, func(a, b *queue) int { return cmpString(a.name, b.name) })
	return qs
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// namesKey is the set of every queue name any engine has used.
func (m *Module) namesKey() string { return m.h.Key("queue", "names") }

// streamFor is the stream a message of q goes to.
func (q *queue) streamFor(msg *message) string {
	if q.s.FIFO {
		return q.k.partition(partitionOf(msg.Group, q.s.Concurrency))
	}
	return q.k.stream
}

// prepare checks msg against q's settings (a FIFO queue needs its group).
func (q *queue) prepare(msg *message) *protocol.ErrorBody {
	if !q.s.FIFO {
		msg.Group = ""
		return nil
	}
	g, ok := groupOf(msg.Data, q.s.GroupField)
	if !ok {
		return &protocol.ErrorBody{Code: engine.CodeEnqueueError,
			Message: fmt.Sprintf("queue %q is fifo: data must be an object with the message group field %q", q.name, q.s.GroupField)}
	}
	msg.Group = g
	return nil
}

// enqueue stores messages. Each goes to its own queue, created on this
// engine if new. Either all are written or an enqueue_error says why.
func (m *Module) enqueue(ctx context.Context, msgs []*message) *protocol.ErrorBody {
	type item struct {
		stream, payload string
	}
	items := make([]item, 0, len(msgs))
	names := map[string]bool{}
	for _, msg := range msgs {
		q, err := m.ensureQueue(msg.Queue)
		if err != nil {
			return &protocol.ErrorBody{Code: CodeQueueNotSet, Message: fmt.Sprintf("queue %q: %v", msg.Queue, err)}
		}
		if eb := q.prepare(msg); eb != nil {
			return eb
		}
		p, err := msg.encode()
		if err != nil {
			return &protocol.ErrorBody{Code: engine.CodeEnqueueError, Message: err.Error()}
		}
		items = append(items, item{q.streamFor(msg), p})
		names[msg.Queue] = true
	}
	pipe := m.rdb.Pipeline()
	for _, it := range items {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: it.stream, Values: []any{"m", it.payload}})
	}
	pipe.SAdd(ctx, m.namesKey(), anys(slices.Sorted(maps.Keys(names)))...)
	if _, err := pipe.Exec(ctx); err != nil {
		m.health.failed("enqueue", err)
		return &protocol.ErrorBody{Code: engine.CodeEnqueueError, Message: fmt.Sprintf("redis: %v", err)}
	}
	m.health.ok()
	return nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// enqueueInput is the payload of engine::queue::enqueue (spec §2.8).
type enqueueInput struct {
	Queue        string          `json:"queue"`
	FunctionID   string          `json:"function_id"`
	Data         json.RawMessage `json:"data"`
	Receipt      string          `json:"messageReceiptId"`
	ReceiptSnake string          `json:"message_receipt_id"`
	Traceparent  string          `json:"traceparent"`
	Baggage      string          `json:"baggage"`
}

func (m *Module) enqueueFn(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	var in enqueueInput
	if err := decodeInput(call.Data, &in); err != nil {
		return nil, err
	}
	if in.Queue == "" {
		return nil, &protocol.ErrorBody{Code: CodeQueueNotSet, Message: "queue is not set"}
	}
	if in.FunctionID == "" {
		return nil, &protocol.ErrorBody{Code: engine.CodeInvalidArguments, Message: "function_id is required"}
	}
	id := in.Receipt
	if id == "" {
		id = in.ReceiptSnake
	}
	if id == "" {
		id = uuid.NewString()
	}
	msg := &message{ID: id, Queue: in.Queue, FunctionID: in.FunctionID, Data: in.Data,
		Metadata: call.Metadata, Traceparent: in.Traceparent, Baggage: in.Baggage,
		EnqueuedAt: time.Now().UnixMilli()}
	if msg.Traceparent == "" {
		msg.Traceparent, msg.Baggage = call.Traceparent, call.Baggage
	}
	if len(msg.Data) == 0 {
		msg.Data = json.RawMessage("null")
	}
	if eb := m.enqueue(ctx, []*message{msg}); eb != nil {
		return nil, eb
	}
	return json.Marshal(map[string]string{"messageReceiptId": id})
}

// decodeInput decodes a function's object payload; null is an empty object.
func decodeInput(data json.RawMessage, v any) error {
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return &protocol.ErrorBody{Code: engine.CodeInvalidArguments, Message: fmt.Sprintf("bad input: %v", err)}
	}
	return nil
}

// health logs Redis becoming unreachable once (and again at most every
// 30 s while it stays so) and logs when it is back.
type health struct {
	log     *slog.Logger
	mu      sync.Mutex
	down    bool
	lastLog time.Time
}

func (h *health) failed(op string, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed) {
		return
	}
	h.mu.Lock()
	now := time.Now()
	logIt := !h.down || now.Sub(h.lastLog) > 30*time.Second
	h.down = true
	if logIt {
		h.lastLog = now
	}
	h.mu.Unlock()
	if logIt {
		h.log.Warn("queue: redis unavailable; consumers back off and retry", "op", op, "error", err)
	}
}

func (h *health) ok() {
	h.mu.Lock()
	was := h.down
	h.down = false
	h.mu.Unlock()
	if was {
		h.log.Info("queue: redis reachable again")
	}
}

func (h *health) isDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

// retryWait is an exponential backoff for Redis errors.
type retryWait struct{ d time.Duration }

// wait sleeps the next delay; false when ctx is done.
func (r *retryWait) wait(ctx context.Context) bool {
	r.d = min(max(2*r.d, 50*time.Millisecond), maxRedisBackoff)
	return sleep(ctx, r.d)
}

func (r *retryWait) reset() { r.d = 0 }

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func nowMS() int64 { return time.Now().UnixMilli() }

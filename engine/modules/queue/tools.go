package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// redriveLua moves dead-lettered entries back onto their queue; an entry
// another caller already moved is skipped, so nothing is redriven twice.
// KEYS[1] dead-letter stream, KEYS[i>1] target stream of entry i-1;
// ARGV[2(i-1)-1] its dead-letter entry id, ARGV[2(i-1)] the message to add.
const redriveLua = `
local n = 0
for i = 2, #KEYS do
  if redis.call('XDEL', KEYS[1], ARGV[2*i-3]) == 1 then
    redis.call('XADD', KEYS[i], '*', 'm', ARGV[2*i-2])
    n = n + 1
  end
end
return n
`

const (
	defaultDLQLimit = 50
	maxDLQLimit     = 1000
	redriveBatch    = 100
)

// queueInput names a queue; iii also accepts "topic".
type queueInput struct {
	Queue     string `json:"queue"`
	Topic     string `json:"topic"`
	MessageID string `json:"message_id"`
	ID        string `json:"id"`
	Offset    int    `json:"offset"`
	Limit     int    `json:"limit"`
}

func (in *queueInput) name() string {
	if in.Queue != "" {
		return in.Queue
	}
	return in.Topic
}

// queueArg decodes the input and checks the queue name; required=false
// allows no name.
func queueArg(data json.RawMessage, required bool) (queueInput, error) {
	var in queueInput
	if err := decodeInput(data, &in); err != nil {
		return in, err
	}
	if in.name() == "" {
		if required {
			return in, &protocol.ErrorBody{Code: CodeQueueNotSet, Message: "queue is not set"}
		}
		return in, nil
	}
	if err := checkName(in.name()); err != nil {
		return in, &protocol.ErrorBody{Code: engine.CodeInvalidArguments, Message: err.Error()}
	}
	return in, nil
}

func redisError(op string, err error) error {
	return &protocol.ErrorBody{Code: CodeQueueError, Message: fmt.Sprintf("%s: redis: %v", op, err)}
}

// dlqEntry is one dead-lettered message as the DLQ tools show it. Field
// names follow iii's console where it has one (id, payload, error,
// failed_at, retries, size_bytes).
type dlqEntry struct {
	ID         string `json:"id"`     // the message id (messageReceiptId)
	DLQID      string `json:"dlq_id"` // its entry in the dead-letter stream
	Queue      string `json:"queue"`
	FunctionID string `json:"function_id"` // the bare id
	// Namespace is where the function resolves; absent: the default one.
	Namespace  string          `json:"namespace,omitempty"`
	Payload    json.RawMessage `json:"payload"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	Topic      string          `json:"topic,omitempty"`
	Group      string          `json:"group,omitempty"`
	Error      string          `json:"error"`
	ErrorCode  string          `json:"error_code"`
	Attempts   int             `json:"attempts"`
	Retries    int             `json:"retries"` // iii's name for attempts
	EnqueuedAt int64           `json:"enqueued_at"`
	FailedAt   int64           `json:"failed_at"`
	SizeBytes  int             `json:"size_bytes"`
}

func entryOf(x redis.XMessage) (dlqEntry, *message) {
	raw, _ := x.Values["m"].(string)
	var msg message
	if err := json.Unmarshal([]byte(raw), &msg); err != nil {
		data, _ := json.Marshal(raw)
		msg = message{Data: data, LastError: &protocol.ErrorBody{Code: "undecodable_message", Message: err.Error()}}
	}
	ns, id := msg.target()
	e := dlqEntry{ID: msg.ID, DLQID: x.ID, Queue: msg.Queue, FunctionID: id, Namespace: nsField(ns), Payload: msg.Data,
		Metadata: msg.Metadata, Topic: msg.Topic, Group: msg.Group, Attempts: msg.Attempts, Retries: msg.Attempts,
		EnqueuedAt: msg.EnqueuedAt, FailedAt: msg.FailedAt, SizeBytes: len(msg.Data)}
	if e.Payload == nil {
		e.Payload = json.RawMessage("null")
	}
	if msg.LastError != nil {
		e.Error, e.ErrorCode = msg.LastError.Message, msg.LastError.Code
	}
	return e, &msg
}

// dlqMessagesFn is engine::queue::dlq_messages {queue|topic, offset?, limit?}:
// the oldest dead-lettered messages first.
func (m *Module) dlqMessagesFn(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	in, err := queueArg(call.Data, true)
	if err != nil {
		return nil, err
	}
	limit := in.Limit
	if limit <= 0 {
		limit = defaultDLQLimit
	}
	limit = min(limit, maxDLQLimit)
	offset := max(in.Offset, 0)
	k := newKeys(m.h.Key, in.name())
	xs, err := m.rdb.XRangeN(ctx, k.dlq, "-", "+", int64(offset+limit)).Result()
	if err != nil {
		return nil, redisError("read dead-letter queue", err)
	}
	out := []dlqEntry{}
	for i, x := range xs {
		if i < offset {
			continue
		}
		e, _ := entryOf(x)
		out = append(out, e)
	}
	return json.Marshal(out)
}

// redriveTarget prepares a dead-lettered message for its queue: fresh
// attempts, and the stream it goes back to.
func (m *Module) redriveTarget(name string, msg *message) (string, string, error) {
	if msg.FunctionID == "" {
		return "", "", errors.New("not a valid message (kept in the dead-letter queue)")
	}
	q, err := m.ensureQueue(name)
	if err != nil {
		return "", "", err
	}
	msg.Queue = name
	if eb := q.prepare(msg); eb != nil {
		return "", "", eb
	}
	msg.Attempts, msg.LastError, msg.FailedAt = 0, nil, 0
	enc, err := msg.encode()
	if err != nil {
		return "", "", err
	}
	return q.streamFor(msg), enc, nil
}

// redrive moves the given dead-letter entries of queue name back onto it.
func (m *Module) redrive(ctx context.Context, name string, xs []redis.XMessage) (int, error) {
	k := newKeys(m.h.Key, name)
	keys := []string{k.dlq}
	var args []any
	for _, x := range xs {
		_, msg := entryOf(x)
		stream, enc, err := m.redriveTarget(name, msg)
		if err != nil {
			m.h.Logger.Warn("queue: dead-lettered message not redriven", "queue", name, "dlq_id", x.ID, "error", err)
			continue
		}
		keys = append(keys, stream)
		args = append(args, x.ID, enc)
	}
	if len(args) == 0 {
		return 0, nil
	}
	n, err := m.redriveScript.Run(ctx, m.rdb, keys, args...).Int()
	if err != nil {
		return 0, err
	}
	if err := m.rdb.SAdd(ctx, m.namesKey(), name).Err(); err != nil {
		return n, err
	}
	return n, nil
}

// redriveFn is iii::queue::redrive {queue|topic} -> {queue, redriven}: every
// entry dead-lettered so far goes back onto the queue with its attempts
// reset.
func (m *Module) redriveFn(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	in, err := queueArg(call.Data, true)
	if err != nil {
		return nil, err
	}
	name := in.name()
	k := newKeys(m.h.Key, name)
	total, err := m.rdb.XLen(ctx, k.dlq).Result()
	if err != nil {
		return nil, redisError("redrive", err)
	}
	redriven, seen := 0, int64(0)
	start := "-"
	for seen < total {
		xs, err := m.rdb.XRangeN(ctx, k.dlq, start, "+", min(redriveBatch, total-seen)).Result()
		if err != nil {
			return nil, redisError("redrive", err)
		}
		if len(xs) == 0 {
			break
		}
		seen += int64(len(xs))
		start = "(" + xs[len(xs)-1].ID
		n, err := m.redrive(ctx, name, xs)
		redriven += n
		if err != nil {
			return nil, redisError(fmt.Sprintf("redrive (%d redriven before the error)", redriven), err)
		}
	}
	if redriven > 0 {
		m.h.Logger.Info("queue: dead-letter queue redriven", "queue", name, "redriven", redriven)
	}
	return json.Marshal(map[string]any{"queue": name, "redriven": redriven})
}

// findDLQ finds a dead-letter entry by its message id or dead-letter id.
func (m *Module) findDLQ(ctx context.Context, k keys, id string) (*redis.XMessage, error) {
	if isStreamID(id) {
		xs, err := m.rdb.XRangeN(ctx, k.dlq, id, id, 1).Result()
		if err != nil || len(xs) > 0 {
			if len(xs) > 0 {
				return &xs[0], nil
			}
			return nil, err
		}
	}
	start := "-"
	for {
		xs, err := m.rdb.XRangeN(ctx, k.dlq, start, "+", 500).Result()
		if err != nil || len(xs) == 0 {
			return nil, err
		}
		for i := range xs {
			if e, _ := entryOf(xs[i]); e.ID == id {
				return &xs[i], nil
			}
		}
		start = "(" + xs[len(xs)-1].ID
	}
}

// singleMessage handles redrive_message and discard_message
// {queue|topic, message_id} -> {queue, message_id, redriven}.
func (m *Module) singleMessage(ctx context.Context, call *engine.Call, discard bool) (json.RawMessage, error) {
	in, err := queueArg(call.Data, true)
	if err != nil {
		return nil, err
	}
	id := in.MessageID
	if id == "" {
		id = in.ID
	}
	if id == "" {
		return nil, &protocol.ErrorBody{Code: engine.CodeInvalidArguments, Message: "message_id is required"}
	}
	name := in.name()
	k := newKeys(m.h.Key, name)
	x, err := m.findDLQ(ctx, k, id)
	if err != nil {
		return nil, redisError("find dead-lettered message", err)
	}
	n := 0
	switch {
	case x == nil:
	case discard:
		d, err := m.rdb.XDel(ctx, k.dlq, x.ID).Result()
		if err != nil {
			return nil, redisError("discard", err)
		}
		n = int(d)
	default:
		if n, err = m.redrive(ctx, name, []redis.XMessage{*x}); err != nil {
			return nil, redisError("redrive", err)
		}
	}
	return json.Marshal(map[string]any{"queue": name, "message_id": id, "redriven": n})
}

func (m *Module) redriveMessageFn(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	return m.singleMessage(ctx, call, false)
}

func (m *Module) discardMessageFn(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	return m.singleMessage(ctx, call, true)
}

// queueStats is one queue's counters.
type queueStats struct {
	Queue string `json:"queue"`
	// Depth is every message in the queue: waiting plus in flight.
	Depth   int64 `json:"depth"`
	Waiting int64 `json:"waiting"`
	// Pending is in flight: delivered, not yet acknowledged (FIFO: the head
	// of each partition, including one waiting for its retry).
	Pending int64 `json:"pending"`
	// Delayed is failed messages waiting for their retry (standard queues).
	Delayed  int64 `json:"delayed"`
	DLQDepth int64 `json:"dlq_depth"`
	// ConsumerCount is this engine's handler slots (standard) or the
	// partition count (FIFO).
	ConsumerCount int            `json:"consumer_count"`
	Config        map[string]any `json:"config"`
	Healthy       bool           `json:"healthy"`
}

func (m *Module) stats(ctx context.Context, name string) (queueStats, error) {
	s := m.settingsFor(name)
	k := newKeys(m.h.Key, name)
	streams := []string{k.stream}
	if s.FIFO {
		streams = streams[:0]
		for i := range s.Concurrency {
			streams = append(streams, k.partition(i))
		}
	}
	pipe := m.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(streams))
	pends := make([]*redis.XPendingCmd, len(streams))
	for i, st := range streams {
		lens[i] = pipe.XLen(ctx, st)
		pends[i] = pipe.XPending(ctx, st, groupName)
	}
	delayed := pipe.ZCard(ctx, k.delayed)
	dlq := pipe.XLen(ctx, k.dlq)
	pipe.Exec(ctx) // errors are read per command below
	st := queueStats{Queue: name, ConsumerCount: s.Concurrency, Config: s.view()}
	for i := range streams {
		if err := lens[i].Err(); err != nil {
			return st, err
		}
		st.Depth += lens[i].Val()
		if err := pends[i].Err(); err != nil && !isNoGroup(err) {
			return st, err
		} else if err == nil {
			st.Pending += pends[i].Val().Count
		}
	}
	if err := delayed.Err(); err != nil {
		return st, err
	}
	if err := dlq.Err(); err != nil {
		return st, err
	}
	st.Delayed, st.DLQDepth = delayed.Val(), dlq.Val()
	st.Waiting = max(st.Depth-st.Pending, 0)
	m.mu.Lock()
	_, running := m.queues[name]
	m.mu.Unlock()
	st.Healthy = running && !m.health.isDown()
	return st, nil
}

// view is the resolved settings as config.yaml keys.
func (s settings) view() map[string]any {
	v := map[string]any{
		"concurrency": s.Concurrency, "max_retries": s.MaxRetries, "backoff_ms": s.Backoff.Milliseconds(),
		"max_backoff_ms": s.MaxBackoff.Milliseconds(), "timeout_ms": s.Timeout.Milliseconds(),
		"claim_idle_ms": s.ClaimIdle.Milliseconds(), "poll_interval_ms": s.PollInterval.Milliseconds(),
		"type": "standard",
	}
	if s.FIFO {
		v["type"], v["message_group_field"] = "fifo", s.GroupField
	}
	return v
}

// knownQueues is every queue name this engine or any other has used.
func (m *Module) knownQueues(ctx context.Context) ([]string, error) {
	names := map[string]bool{}
	for _, q := range m.snapshot() {
		names[q.name] = true
	}
	for n := range m.settings {
		names[n] = true
	}
	shared, err := m.rdb.SMembers(ctx, m.namesKey()).Result()
	if err != nil {
		return nil, err
	}
	for _, n := range shared {
		if checkName(n) == nil {
			names[n] = true
		}
	}
	return slices.Sorted(maps.Keys(names)), nil
}

// topicStatsFn is engine::queue::topic_stats: with {queue|topic} that
// queue's stats; without, {"queues": [...]} for every known queue.
func (m *Module) topicStatsFn(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	in, err := queueArg(call.Data, false)
	if err != nil {
		return nil, err
	}
	if in.name() != "" {
		st, err := m.stats(ctx, in.name())
		if err != nil {
			return nil, redisError("queue stats", err)
		}
		return json.Marshal(st)
	}
	names, err := m.knownQueues(ctx)
	if err != nil {
		return nil, redisError("list queues", err)
	}
	all := make([]queueStats, 0, len(names))
	for _, n := range names {
		st, err := m.stats(ctx, n)
		if err != nil {
			return nil, redisError("queue stats", err)
		}
		all = append(all, st)
	}
	return json.Marshal(map[string]any{"queues": all})
}

// topicInfo is one entry of list_topics (iii's console shape).
type topicInfo struct {
	Name            string `json:"name"`
	BrokerType      string `json:"broker_type"`
	SubscriberCount int    `json:"subscriber_count"`
	Healthy         bool   `json:"healthy"`
}

// listTopicsFn is engine::queue::list_topics: every known queue and every
// durable topic with subscribers on this engine.
func (m *Module) listTopicsFn(ctx context.Context, _ *engine.Call) (json.RawMessage, error) {
	names, err := m.knownQueues(ctx)
	if err != nil {
		return nil, redisError("list queues", err)
	}
	subs := m.topics()
	all := map[string]bool{}
	for _, n := range names {
		all[n] = true
	}
	for t := range subs {
		all[t] = true
	}
	m.mu.Lock()
	running := maps.Clone(m.queues)
	m.mu.Unlock()
	out := []topicInfo{}
	for _, n := range slices.Sorted(maps.Keys(all)) {
		_, ok := running[n]
		out = append(out, topicInfo{Name: n, BrokerType: "redis", SubscriberCount: subs[n],
			Healthy: (ok || subs[n] == 0) && !m.health.isDown()})
	}
	return json.Marshal(out)
}

// dlqTopicsFn is engine::queue::dlq_topics: queues with dead-lettered
// messages and their counts.
func (m *Module) dlqTopicsFn(ctx context.Context, _ *engine.Call) (json.RawMessage, error) {
	names, err := m.knownQueues(ctx)
	if err != nil {
		return nil, redisError("list queues", err)
	}
	pipe := m.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(names))
	for i, n := range names {
		lens[i] = pipe.XLen(ctx, newKeys(m.h.Key, n).dlq)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, redisError("dead-letter counts", err)
	}
	type dlqTopic struct {
		Topic        string `json:"topic"`
		BrokerType   string `json:"broker_type"`
		MessageCount int64  `json:"message_count"`
	}
	out := []dlqTopic{}
	for i, n := range names {
		if c := lens[i].Val(); c > 0 {
			out = append(out, dlqTopic{Topic: n, BrokerType: "redis", MessageCount: c})
		}
	}
	return json.Marshal(out)
}

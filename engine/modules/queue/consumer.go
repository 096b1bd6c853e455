package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// moveLua moves due retries from a queue's delayed set back onto its stream,
// atomically, so two engines never move one retry twice.
// KEYS[1] delayed ZSET, KEYS[2] stream; ARGV[1] now (unix ms), ARGV[2] limit.
const moveLua = `
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'm', m)
  redis.call('ZREM', KEYS[1], m)
end
return #due
`

// acquire waits for one free handler slot, then takes as many more as are
// free (up to fetchBatch). It returns how many it holds; false when ctx is
// done.
func (q *queue) acquire(ctx context.Context) (int, bool) {
	select {
	case q.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, false
	}
	n := 1
	for n < fetchBatch {
		select {
		case q.slots <- struct{}{}:
			n++
		default:
			return n, true
		}
	}
	return n, true
}

func (q *queue) release(n int) {
	for range n {
		<-q.slots
	}
}

// fetchLoop feeds a standard queue's handlers: new messages with
// XREADGROUP, and messages claimed by a consumer that stopped acknowledging
// (a dead engine) with XAUTOCLAIM. It only reads when a handler slot is
// free, so at most `concurrency` messages are in flight on this engine.
func (m *Module) fetchLoop(ctx context.Context, q *queue) {
	var rw retryWait
	groupReady := false
	cursor := "0-0"
	reclaimEvery := min(max(q.s.ClaimIdle/2, 50*time.Millisecond), 5*time.Second)
	nextClaim := time.Now() // first look: messages a dead engine left behind
	for ctx.Err() == nil {
		if !groupReady {
			if err := m.createGroup(ctx, q.k.stream); err != nil {
				m.health.failed("create consumer group "+q.name, err)
				if !rw.wait(ctx) {
					return
				}
				continue
			}
			groupReady = true
		}
		n, ok := q.acquire(ctx)
		if !ok {
			return
		}
		var msgs []redis.XMessage
		var err error
		if !time.Now().Before(nextClaim) {
			nextClaim = time.Now().Add(reclaimEvery)
			var next string
			msgs, next, err = m.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: q.k.stream, Group: groupName,
				MinIdle: q.s.ClaimIdle, Start: cursor, Count: int64(n), Consumer: m.consumer}).Result()
			if err == nil {
				cursor = next
				if cursor == "" {
					cursor = "0-0"
				}
				if len(msgs) > 0 {
					m.h.Logger.Info("queue: re-delivering messages whose consumer stopped acknowledging them",
						"queue", q.name, "count", len(msgs), "claim_idle_ms", q.s.ClaimIdle.Milliseconds())
				}
			}
		}
		if err == nil && len(msgs) == 0 {
			block := max(min(m.block, time.Until(nextClaim)), 10*time.Millisecond)
			var streams []redis.XStream
			streams, err = m.blocking.XReadGroup(ctx, &redis.XReadGroupArgs{Group: groupName, Consumer: m.consumer,
				Streams: []string{q.k.stream, ">"}, Count: int64(n), Block: block}).Result()
			if errors.Is(err, redis.Nil) {
				err = nil
			}
			for _, s := range streams {
				msgs = append(msgs, s.Messages...)
			}
		}
		q.release(n - len(msgs))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				groupReady = false // Redis lost its data (restart without persistence)
				continue
			}
			m.health.failed("read "+q.name, err)
			if !rw.wait(ctx) {
				return
			}
			continue
		}
		rw.reset()
		m.health.ok()
		for _, x := range msgs {
			// Exits when the message is handled (bounded by timeout_ms and
			// opTimeout) or abandoned at Stop. Refused once Stop has begun:
			// the message stays pending for re-delivery.
			if !m.life.Go(func() {
				defer q.release(1)
				m.handle(q, x)
			}) {
				q.release(1)
			}
		}
	}
}

func isNoGroup(err error) bool { return redis.HasErrorPrefix(err, "NOGROUP") }

// createGroup creates the consumer group (and the stream), reading from the
// start so messages added before it existed are delivered.
func (m *Module) createGroup(ctx context.Context, stream string) error {
	err := m.rdb.XGroupCreateMkStream(ctx, stream, groupName, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return err
	}
	return nil
}

// handle delivers one message of a standard queue and records the outcome.
func (m *Module) handle(q *queue, x redis.XMessage) {
	stream := q.k.stream
	raw, _ := x.Values["m"].(string)
	if raw == "" && len(x.Values) == 0 {
		// An entry deleted while claimed: only its pending record is left.
		m.ack(stream, x.ID, nil)
		return
	}
	msg, err := decodeMessage(raw)
	if err != nil {
		m.deadLetterRaw(q, stream, x.ID, raw, err, nil)
		return
	}
	eb, stopped := m.deliver(q, msg)
	switch {
	case stopped:
		// Left pending: re-delivered after claim_idle_ms.
	case eb == nil:
		m.ack(stream, x.ID, nil)
	default:
		m.retryOrDeadLetter(q, stream, x.ID, msg, eb)
	}
}

// deliver calls the message's condition function (durable subscribers) and
// its target function. stopped means the module is stopping and the outcome
// is unknown.
func (m *Module) deliver(q *queue, msg *message) (eb *protocol.ErrorBody, stopped bool) {
	if msg.Condition != "" {
		res, eb, stopped := m.invoke(msg.Condition, msg, q.s.Timeout)
		if stopped || eb != nil {
			return eb, stopped
		}
		if isFalse(res) {
			return nil, false
		}
	}
	_, eb, stopped = m.invoke(msg.FunctionID, msg, q.s.Timeout)
	return eb, stopped
}

func isFalse(res json.RawMessage) bool {
	var b bool
	return json.Unmarshal(res, &b) == nil && !b
}

// invoke calls fn with the message's data, metadata and trace context,
// bounded by timeout.
func (m *Module) invoke(fn string, msg *message, timeout time.Duration) (json.RawMessage, *protocol.ErrorBody, bool) {
	ctx, cancel := context.WithTimeout(m.handlerCtx, timeout)
	defer cancel()
	res, err := m.h.Engine.Invoke(ctx, engine.Request{FunctionID: fn, Data: msg.Data, Metadata: msg.Metadata,
		Traceparent: msg.Traceparent, Baggage: msg.Baggage})
	if err == nil {
		return res, nil, false
	}
	if m.handlerCtx.Err() != nil || errors.Is(err, engine.ErrEngineClosed) {
		return nil, nil, true
	}
	var eb *protocol.ErrorBody
	switch {
	case errors.As(err, &eb) && eb.Code == engine.CodeShutdown:
		return nil, nil, true
	case eb != nil:
		return nil, eb, false
	case errors.Is(err, context.DeadlineExceeded):
		return nil, &protocol.ErrorBody{Code: CodeTimeout,
			Message: fmt.Sprintf("%s did not finish within timeout_ms=%d", fn, timeout.Milliseconds())}, false
	}
	return nil, &protocol.ErrorBody{Code: "invocation_failed", Message: err.Error()}, false
}

// opContext bounds one bookkeeping write. It is not tied to Stop: a handled
// message is acknowledged even while the module stops.
func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// ack acknowledges and deletes a handled entry; extra adds commands to the
// same transaction.
func (m *Module) ack(stream, id string, extra func(ctx context.Context, p redis.Pipeliner)) {
	ctx, cancel := opContext()
	defer cancel()
	_, err := m.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, stream, groupName, id)
		p.XDel(ctx, stream, id)
		if extra != nil {
			extra(ctx, p)
		}
		return nil
	})
	if err != nil {
		m.health.failed("acknowledge", err)
		m.h.Logger.Warn("queue: could not acknowledge a handled message; it will be delivered again",
			"stream", stream, "entry", id, "error", err)
	}
}

// maxRetriesFor is the retry limit of msg on q.
func (q *queue) maxRetriesFor(msg *message) int {
	if msg.MaxRetries != nil {
		return *msg.MaxRetries
	}
	return q.s.MaxRetries
}

// backoffFor is the delay before msg's next attempt (msg.Attempts failed).
func (q *queue) backoffFor(msg *message) time.Duration {
	s := q.s
	if msg.BackoffMS != nil {
		s.Backoff = time.Duration(*msg.BackoffMS) * time.Millisecond
	}
	return s.backoff(msg.Attempts)
}

// retryOrDeadLetter records a failed attempt of a standard queue's message:
// it goes to the delayed set due after the backoff (a retry that survives a
// crash), or, with its retries spent, to the dead-letter queue.
func (m *Module) retryOrDeadLetter(q *queue, stream, id string, msg *message, eb *protocol.ErrorBody) {
	msg.Attempts++
	msg.LastError = eb
	if msg.Attempts > q.maxRetriesFor(msg) {
		m.deadLetter(q, stream, id, msg, nil)
		return
	}
	delay := q.backoffFor(msg)
	enc, err := msg.encode()
	if err != nil {
		m.deadLetterRaw(q, stream, id, "", err, nil)
		return
	}
	ctx, cancel := opContext()
	defer cancel()
	_, err = m.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, q.k.delayed, redis.Z{Score: float64(nowMS() + delay.Milliseconds()), Member: enc})
		p.XAck(ctx, stream, groupName, id)
		p.XDel(ctx, stream, id)
		return nil
	})
	if err != nil {
		m.health.failed("schedule retry", err)
		m.h.Logger.Warn("queue: could not schedule a retry; the message will be delivered again",
			"queue", q.name, "message_id", msg.ID, "error", err)
		return
	}
	m.h.Logger.Info("queue: handler failed; retry scheduled", "queue", q.name, "function_id", msg.FunctionID,
		"message_id", msg.ID, "attempt", msg.Attempts, "retry_in_ms", delay.Milliseconds(),
		"error_code", eb.Code, "error", eb.Message)
}

// deadLetter moves a message whose retries are spent to the dead-letter
// stream, in one transaction with its acknowledgement.
func (m *Module) deadLetter(q *queue, stream, id string, msg *message, extra func(ctx context.Context, p redis.Pipeliner)) {
	msg.FailedAt = nowMS()
	enc, err := msg.encode()
	if err != nil {
		m.deadLetterRaw(q, stream, id, "", err, extra)
		return
	}
	ctx, cancel := opContext()
	defer cancel()
	_, err = m.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: q.k.dlq, Values: []any{"m", enc}})
		p.XAck(ctx, stream, groupName, id)
		p.XDel(ctx, stream, id)
		if extra != nil {
			extra(ctx, p)
		}
		return nil
	})
	if err != nil {
		m.health.failed("dead-letter", err)
		m.h.Logger.Warn("queue: could not dead-letter a message; it will be delivered again",
			"queue", q.name, "message_id", msg.ID, "error", err)
		return
	}
	code, text := "", ""
	if msg.LastError != nil {
		code, text = msg.LastError.Code, msg.LastError.Message
	}
	m.h.Logger.Warn("queue: message dead-lettered after its retries", "queue", q.name, "function_id", msg.FunctionID,
		"message_id", msg.ID, "attempts", msg.Attempts, "error_code", code, "error", text)
}

// deadLetterRaw dead-letters an entry that is not a valid message, keeping
// its raw text.
func (m *Module) deadLetterRaw(q *queue, stream, id, raw string, cause error, extra func(ctx context.Context, p redis.Pipeliner)) {
	data, _ := json.Marshal(raw)
	msg := &message{ID: id, Queue: q.name, Data: data, FailedAt: nowMS(),
		LastError: &protocol.ErrorBody{Code: "undecodable_message", Message: cause.Error()}}
	enc, _ := msg.encode()
	ctx, cancel := opContext()
	defer cancel()
	_, err := m.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: q.k.dlq, Values: []any{"m", enc}})
		p.XAck(ctx, stream, groupName, id)
		p.XDel(ctx, stream, id)
		if extra != nil {
			extra(ctx, p)
		}
		return nil
	})
	if err != nil {
		m.health.failed("dead-letter", err)
	}
	m.h.Logger.Error("queue: undecodable message moved to the dead-letter queue", "queue", q.name, "entry", id, "error", cause)
}

// moveLoop moves retries that have come due back onto their streams.
func (m *Module) moveLoop(ctx context.Context) {
	interval := time.Duration(DefaultPollIntervalMS) * time.Millisecond
	for _, s := range m.settings {
		interval = min(interval, s.PollInterval)
	}
	interval = max(interval, 10*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	var rw retryWait
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qs := slices.DeleteFunc(m.snapshot(), func(q *queue) bool { return q.s.FIFO })
		if len(qs) == 0 {
			continue
		}
		now := nowMS()
		pipe := m.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(qs))
		for i, q := range qs {
			cmds[i] = m.moveScript.EvalSha(ctx, pipe, []string{q.k.delayed, q.k.stream}, now, moveBatch)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if slices.ContainsFunc(cmds, func(c *redis.Cmd) bool { return redis.HasErrorPrefix(c.Err(), "NOSCRIPT") }) {
				if err := m.moveScript.Load(ctx, m.rdb).Err(); err != nil {
					m.health.failed("load script", err)
				}
				continue
			}
			m.health.failed("move due retries", err)
			if !rw.wait(ctx) {
				return
			}
			continue
		}
		rw.reset()
	}
}

// discoverLoop records the configured queues in the shared name set and
// starts consumers for queues other engines created.
func (m *Module) discoverLoop(ctx context.Context) {
	configured := make([]any, 0, len(m.settings))
	for name := range m.settings {
		configured = append(configured, name)
	}
	refused := map[string]bool{}
	var rw retryWait
	for {
		pipe := m.rdb.Pipeline()
		pipe.SAdd(ctx, m.namesKey(), configured...)
		members := pipe.SMembers(ctx, m.namesKey())
		if _, err := pipe.Exec(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.health.failed("discover queues", err)
			if !rw.wait(ctx) {
				return
			}
			continue
		}
		rw.reset()
		for _, name := range members.Val() {
			if _, err := m.ensureQueue(name); err != nil && !refused[name] && ctx.Err() == nil {
				refused[name] = true
				m.h.Logger.Warn("queue: not consuming a queue another engine uses", "queue", name, "error", err)
			}
		}
		if !sleep(ctx, discoverEvery) {
			return
		}
	}
}

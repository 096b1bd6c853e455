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
	eb, r := m.deliver(q, msg)
	switch r {
	case attemptStopped:
		// Left pending: re-delivered after claim_idle_ms.
	case attemptDone:
		m.ack(stream, x.ID, nil)
	case attemptWaiting:
		m.putBack(q, stream, x.ID, msg)
	default:
		m.retryOrDeadLetter(q, stream, x.ID, msg, eb)
	}
}

// attemptResult is how one attempt at a message ended.
type attemptResult int

const (
	// attemptDone: handled (or skipped by its condition): acknowledge it.
	attemptDone attemptResult = iota
	// attemptFailed: the handler failed (the error says why): a retry, or
	// the dead-letter queue.
	attemptFailed
	// attemptWaiting: its observer is not here or did not admit it (ended,
	// at its max_in_flight, not active): nothing was called, and it is no
	// attempt. It waits in the queue.
	attemptWaiting
	// attemptStopped: the module is stopping and the outcome is unknown.
	attemptStopped
)

// Waiting for an observer (a message with Observer set).
const (
	// observerPatience bounds how long a handler waits, holding the
	// message, for its observer to admit it (an observer at its
	// max_in_flight frees up as its activations end) before it puts the
	// message back in the queue.
	observerPatience = time.Second
	// minObserverWait and maxObserverWait bound how long a message put
	// back waits before it is offered again (doubling per wait).
	minObserverWait = 50 * time.Millisecond
	maxObserverWait = 2 * time.Second
)

// deliver calls the message's condition function (durable subscribers) and
// its target function, through its observer when it has one.
func (m *Module) deliver(q *queue, msg *message) (*protocol.ErrorBody, attemptResult) {
	if msg.Observer != "" && !m.observerHere(msg) {
		return nil, attemptWaiting // not even its condition is asked
	}
	if msg.Condition != "" {
		// The condition resolves where the subscriber's binding does: in
		// the namespace of its function (as iii resolves it in the
		// trigger's namespace).
		ns, _ := msg.target()
		res, eb, r := m.invoke(engine.Request{FunctionID: msg.Condition, Namespace: ns}, msg, q.s.Timeout)
		if r != attemptDone {
			return eb, r
		}
		if isFalse(res) {
			return nil, attemptDone
		}
	}
	if msg.Observer == "" {
		_, eb, r := m.invoke(engine.Request{FunctionID: msg.FunctionID}, msg, q.s.Timeout)
		return eb, r
	}
	patience := time.Now().Add(min(observerPatience, q.s.ClaimIdle/4))
	for step := 5 * time.Millisecond; ; step = min(2*step, 100*time.Millisecond) {
		_, eb, r := m.invoke(engine.Request{FunctionID: msg.FunctionID, Binding: engine.ObserverBinding(msg.Observer)}, msg, q.s.Timeout)
		if r != attemptWaiting || time.Now().Add(step).After(patience) {
			return eb, r
		}
		if !sleep(m.handlerCtx, step) {
			return nil, attemptStopped
		}
	}
}

// observerHere reports whether the observer msg is for is on this engine
// and still observes queue::on-message on msg's topic (an id may be
// observing something else by now).
func (m *Module) observerHere(msg *message) bool {
	t, ok := m.h.Engine.Binding(engine.ObserverBinding(msg.Observer))
	if !ok || (t.Type != TriggerDurableSubscriber && t.Type != TriggerLegacy) {
		return false
	}
	c, err := parseSubscriber(t.Config)
	return err == nil && c.Topic == msg.Topic
}

// observerWait is how long a message put back for its observer waits
// before it is offered again, after waits earlier waits.
func observerWait(waits int) time.Duration {
	return min(minObserverWait<<min(max(waits, 0), 8), maxObserverWait)
}

// putBack returns a message its observer did not admit to the queue (its
// delayed set, due after observerWait), in one transaction with the
// acknowledgement of the entry it was read from. Its attempts are
// untouched: nothing was delivered.
func (m *Module) putBack(q *queue, stream, id string, msg *message) {
	delay := observerWait(msg.Waits)
	msg.Waits++
	if err := m.schedule(q, stream, id, msg, delay); err != nil {
		m.health.failed("put back", err)
		m.h.Logger.Warn("queue: could not put back a message waiting for its observer; it will be delivered again",
			"queue", q.name, "message_id", msg.ID, "observer_id", msg.Observer, "error", err)
		return
	}
	m.h.Logger.Debug("queue: message waits for its observer", "queue", q.name, "message_id", msg.ID,
		"observer_id", msg.Observer, "waits", msg.Waits, "next_in_ms", delay.Milliseconds())
}

// schedule moves an entry to q's delayed set, due after delay, in one
// transaction with its acknowledgement.
func (m *Module) schedule(q *queue, stream, id string, msg *message, delay time.Duration) error {
	enc, err := msg.encode()
	if err != nil {
		return err
	}
	ctx, cancel := opContext()
	defer cancel()
	_, err = m.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, q.k.delayed, redis.Z{Score: float64(nowMS() + delay.Milliseconds()), Member: enc})
		p.XAck(ctx, stream, groupName, id)
		p.XDel(ctx, stream, id)
		return nil
	})
	return err
}

func isFalse(res json.RawMessage) bool {
	var b bool
	return json.Unmarshal(res, &b) == nil && !b
}

// invoke calls req's function (its FunctionID, Namespace and Binding:
// the observer's binding the call goes through, if any) with the
// message's data, metadata and trace context, bounded by timeout.
func (m *Module) invoke(req engine.Request, msg *message, timeout time.Duration) (json.RawMessage, *protocol.ErrorBody, attemptResult) {
	ctx, cancel := context.WithTimeout(m.handlerCtx, timeout)
	defer cancel()
	req.Data, req.Metadata, req.Traceparent, req.Baggage = msg.Data, msg.Metadata, msg.Traceparent, msg.Baggage
	res, err := m.h.Engine.Invoke(ctx, req)
	if err == nil {
		return res, nil, attemptDone
	}
	if m.handlerCtx.Err() != nil || errors.Is(err, engine.ErrEngineClosed) {
		return nil, nil, attemptStopped
	}
	if errors.Is(err, engine.ErrNotAdmitted) {
		return nil, nil, attemptWaiting
	}
	var eb *protocol.ErrorBody
	switch {
	case errors.As(err, &eb) && eb.Code == engine.CodeShutdown:
		return nil, nil, attemptStopped
	case eb != nil:
		return nil, eb, attemptFailed
	case errors.Is(err, context.DeadlineExceeded):
		ns, id := splitFunctionKey(req.FunctionID)
		if req.Namespace != "" {
			ns = req.Namespace
		}
		where := ""
		if nsField(ns) != "" {
			where = " (namespace " + ns + ")"
		}
		return nil, &protocol.ErrorBody{Code: CodeTimeout,
			Message: fmt.Sprintf("%s%s did not finish within timeout_ms=%d", id, where, timeout.Milliseconds())}, attemptFailed
	}
	return nil, &protocol.ErrorBody{Code: "invocation_failed", Message: err.Error()}, attemptFailed
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

// maxAttemptsFor is how many failed attempts of msg on q dead-letter it.
// As in iii: a queue's max_retries counts delivery attempts in all (3: the
// first attempt and two retries; 0 behaves as 1), while a durable
// subscriber's queue_config.max_retries counts retries after the first
// attempt (3: four attempts).
func (q *queue) maxAttemptsFor(msg *message) int {
	if msg.MaxRetries != nil {
		return *msg.MaxRetries + 1
	}
	return max(q.s.MaxRetries, 1)
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
	if msg.Attempts >= q.maxAttemptsFor(msg) {
		m.deadLetter(q, stream, id, msg, nil)
		return
	}
	delay := q.backoffFor(msg)
	if _, err := msg.encode(); err != nil {
		m.deadLetterRaw(q, stream, id, "", err, nil)
		return
	}
	if err := m.schedule(q, stream, id, msg, delay); err != nil {
		m.health.failed("schedule retry", err)
		m.h.Logger.Warn("queue: could not schedule a retry; the message will be delivered again",
			"queue", q.name, "message_id", msg.ID, "error", err)
		return
	}
	m.h.Logger.With(msg.fnAttrs()...).Info("queue: handler failed; retry scheduled", "queue", q.name,
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
	m.h.Logger.With(msg.fnAttrs()...).Warn("queue: message dead-lettered after its retries", "queue", q.name,
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

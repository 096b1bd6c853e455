package queue

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine/protocol"
)

// A FIFO queue is split into `concurrency` partitions, each a stream of its
// own; a message goes to the partition its group hashes to. Each partition
// is consumed by one holder at a time across all engines: the engine that
// holds the partition's lease (a Redis key with a TTL it keeps renewing)
// reads it as the fixed consumer "p<i>", one message at a time, in order.
// A failed message is retried in place (the partition waits for it), so a
// group's later messages never overtake it; the attempt count and the time
// the next attempt is due live in Redis, so a new holder after a crash
// continues where the old one stopped.

// renewLua extends a lease if the caller still holds it.
// KEYS[1] lease; ARGV[1] holder token, ARGV[2] TTL ms.
const renewLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`

// releaseLua deletes a lease if the caller holds it.
const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`

// attemptState is a FIFO message's delivery state, kept in the queue's
// attempts hash under its stream entry id until the message is done.
type attemptState struct {
	Attempts  int                 `json:"attempts"`
	NotBefore int64               `json:"not_before"` // unix ms
	LastError *protocol.ErrorBody `json:"last_error,omitempty"`
}

// partitionLoop holds and consumes FIFO partition i of q.
func (m *Module) partitionLoop(ctx context.Context, q *queue, i int) {
	stream, lease, consumer := q.k.partition(i), q.k.lease(i), "p"+strconv.Itoa(i)
	ttl := q.s.ClaimIdle // a holder that stops renewing loses it after this
	poll := min(max(ttl/4, 50*time.Millisecond), time.Second)
	var rw retryWait
	held, groupReady := false, false
	var renewed time.Time
	defer func() {
		if held {
			ctx, cancel := opContext()
			defer cancel()
			m.releaseScript.Run(ctx, m.rdb, []string{lease}, m.consumer)
		}
	}()
	// keep renews the lease when a third of its TTL has passed; false when
	// it was lost.
	keep := func() bool {
		if time.Since(renewed) < ttl/3 {
			return true
		}
		n, err := m.renewScript.Run(ctx, m.rdb, []string{lease}, m.consumer, ttl.Milliseconds()).Int()
		if err != nil || n == 0 {
			if err != nil {
				m.health.failed("renew fifo lease", err)
			}
			held = false
			return false
		}
		renewed = time.Now()
		return true
	}
	for ctx.Err() == nil {
		if !held {
			ok, err := m.rdb.SetNX(ctx, lease, m.consumer, ttl).Result()
			if err != nil {
				m.health.failed("take fifo lease", err)
				if !rw.wait(ctx) {
					return
				}
				continue
			}
			if !ok {
				if !sleep(ctx, poll) {
					return
				}
				continue
			}
			held, renewed = true, time.Now()
		} else if !keep() {
			continue
		}
		if !groupReady {
			if err := m.createGroup(ctx, stream); err != nil {
				m.health.failed("create consumer group "+q.name, err)
				if !rw.wait(ctx) {
					return
				}
				continue
			}
			groupReady = true
		}
		// The partition's own pending entry first (a failed message waiting
		// for its retry, or one a dead holder left), then new ones.
		x, err := m.readOne(ctx, m.rdb, stream, consumer, "0", -1)
		if err == nil && x == nil {
			x, err = m.readOne(ctx, m.blocking, stream, consumer, ">", min(m.block, ttl/3))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				groupReady = false
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
		if x != nil {
			m.handleFIFO(ctx, q, stream, *x, keep)
		}
	}
}

// readOne reads at most one entry of stream as consumer; id "0" reads the
// consumer's pending entries, ">" new ones. block < 0 does not wait.
func (m *Module) readOne(ctx context.Context, c redis.UniversalClient, stream, consumer, id string, block time.Duration) (*redis.XMessage, error) {
	if block >= 0 {
		block = max(block, 10*time.Millisecond)
	}
	streams, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: groupName, Consumer: consumer,
		Streams: []string{stream, id}, Count: 1, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, s := range streams {
		if len(s.Messages) > 0 {
			return &s.Messages[0], nil
		}
	}
	return nil, nil
}

// handleFIFO makes one attempt at the head message of a FIFO partition.
func (m *Module) handleFIFO(ctx context.Context, q *queue, stream string, x redis.XMessage, keep func() bool) {
	dropState := func(ctx context.Context, p redis.Pipeliner) { p.HDel(ctx, q.k.attempts, x.ID) }
	raw, _ := x.Values["m"].(string)
	if raw == "" && len(x.Values) == 0 {
		m.ack(stream, x.ID, dropState)
		return
	}
	msg, err := decodeMessage(raw)
	if err != nil {
		m.deadLetterRaw(q, stream, x.ID, raw, err, dropState)
		return
	}
	var st attemptState
	b, err := m.rdb.HGet(ctx, q.k.attempts, x.ID).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		m.health.failed("read attempt state", err)
		sleep(ctx, 100*time.Millisecond)
		return
	default:
		json.Unmarshal(b, &st)
	}
	msg.Attempts, msg.LastError = st.Attempts, st.LastError
	// Wait out the backoff, holding the partition.
	for wait := time.Until(time.UnixMilli(st.NotBefore)); wait > 0; wait = time.Until(time.UnixMilli(st.NotBefore)) {
		if !sleep(ctx, min(wait, q.s.ClaimIdle/4)) || !keep() {
			return
		}
	}
	// The lease must outlast the handler: renew it now.
	if ctx.Err() != nil || !keep() {
		return
	}
	eb, r := m.deliver(q, msg)
	switch r {
	case attemptStopped:
	case attemptDone:
		m.ack(stream, x.ID, dropState)
	case attemptWaiting:
		// Its observer did not admit it: it stays at the head of its
		// partition (the group keeps its order), offered again shortly,
		// its attempts untouched.
		sleep(ctx, minObserverWait)
	default:
		msg.Attempts++
		msg.LastError = eb
		if msg.Attempts >= q.maxAttemptsFor(msg) {
			m.deadLetter(q, stream, x.ID, msg, dropState)
			return
		}
		delay := q.backoffFor(msg)
		st = attemptState{Attempts: msg.Attempts, NotBefore: nowMS() + delay.Milliseconds(), LastError: eb}
		enc, _ := json.Marshal(st)
		octx, cancel := opContext()
		defer cancel()
		if err := m.rdb.HSet(octx, q.k.attempts, x.ID, enc).Err(); err != nil {
			m.health.failed("record attempt", err)
		}
		m.h.Logger.With(msg.fnAttrs()...).Info("queue: handler failed; retry scheduled (fifo: its group waits)", "queue", q.name,
			"message_id", msg.ID, "group", msg.Group, "attempt", msg.Attempts,
			"retry_in_ms", delay.Milliseconds(), "error_code", eb.Code, "error", eb.Message)
	}
}

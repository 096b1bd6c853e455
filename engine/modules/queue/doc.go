// Package queue is the queue module (QueueModule, iii-queue; canonical ID
// "queue"): durable queues on Redis Streams with at-least-once delivery.
// Unlike iii's Redis adapter, which only publishes, a message survives a
// crashed engine, a failing handler and a restart.
//
// # Enqueueing
//
// An invokefunction with action {type: enqueue, queue} is handed by the
// engine to engine::queue::enqueue ({queue, function_id, data,
// messageReceiptId, traceparent, baggage}; the caller gets
// {messageReceiptId} at once). The function may also be called directly
// (a receipt is generated when none is given). A queue config.yaml does not
// list is created on first use with the settings of `default`, and every
// engine sharing the Redis starts consuming it within a few seconds;
// max_queues (default 256) bounds how many queues one engine consumes.
// Redis being unreachable fails the enqueue with enqueue_error and the
// Redis error.
//
// # Delivery
//
// Each queue is a stream read through one consumer group shared by every
// engine. An engine runs up to `concurrency` handlers per queue; each calls
// the target with the message's data, metadata and trace context, bounded
// by timeout_ms; in a cluster (cluster: in config.yaml) a function with no
// worker on the consuming engine is run through the engine's forwarding by
// one that has one. Success acknowledges and deletes the entry. A failure, a
// timeout, or function_not_found (the worker may be reconnecting) is a
// failed attempt: the message goes to the queue's delayed set, due after
// backoff_ms doubled per attempt (capped by max_backoff_ms), and is moved
// back by whichever engine polls first; after max_retries attempts in all
// (iii's meaning: the first attempt counts; 0 behaves as 1) it goes to the
// dead-letter queue with its payload, function, last error, attempt count
// and timestamps. The defaults (3 attempts, 1 s backoff) dead-letter a
// poison message after 1+2 = 3 s.
//
// A message an engine read but never acknowledged (it crashed, or Stop gave
// up on the handler) is taken over with XAUTOCLAIM by any engine once it has
// been idle claim_idle_ms (default timeout_ms + 10 s). Such a re-delivery
// is not counted as an attempt. Duplicates are possible (at least once);
// nothing acknowledged is lost. Retries live in Redis, not in timers, so
// they survive restarts.
//
// # FIFO queues
//
// A queue with fifo: true (or type: fifo) and message_group_field handles
// the messages of one group (the value of that field in the data) one at a
// time and in order. The queue has `concurrency` partitions shared by all
// engines; a group always maps to the same partition, and each partition is
// consumed by one engine at a time, which holds a lease in Redis (TTL
// claim_idle_ms, renewed while it works). A failed message is retried in
// place, so later messages of its partition wait for it (head-of-line, like
// SQS FIFO); its attempt count and due time are kept in Redis. Changing a
// FIFO queue's concurrency re-maps groups: drain it first.
//
// # Durable topics
//
// iii::durable::publish {topic, data} enqueues one message per distinct
// function bound on this engine with trigger type durable:subscriber (or
// the legacy name queue) and config.topic equal to topic. Each goes through
// the queue named by config.queue, by default a queue named after the topic,
// with the same retries and dead-letter queue; config.condition_function_id
// is called at delivery, in the subscriber's namespace (a worker in
// namespace orders names its own orders function), and a false result
// skips the message; config.queue_config {max_retries, backoff_ms}, or
// iii's spelling {maxRetries, backoffDelayMs},
// overrides the queue's settings for that subscriber (its max_retries
// counts retries after the first attempt, as iii's does). An observer of
// queue::on-message (args {topic, queue?, queue_config?,
// condition_function_id?}) is a subscriber
// of its own: one message per publish, delivered through it (an
// activation of its target, under its max_fires and max_in_flight). A
// message its observer does not admit (busy, ended, not on this engine)
// is not an attempt: it waits in the queue until an observer of that id
// and topic admits it. Subscribers bound later do not receive earlier
// messages. With cluster: configured a publish reaches the
// subscribers bound on every engine of the cluster, once per function; a
// single engine reaches its own.
//
// # Tools
//
//   - engine::queue::dlq_messages {queue|topic, offset?, limit?}: dead
//     letters, oldest first: {id (message id), dlq_id, queue, function_id
//     (the bare id), namespace (absent: default), payload, metadata, topic,
//     group, error, error_code, attempts, retries (both: the attempts made),
//     enqueued_at, failed_at, size_bytes}.
//   - iii::queue::redrive {queue|topic} -> {queue, redriven}: every dead
//     letter back onto its queue with its attempts reset.
//   - iii::queue::redrive_message / iii::queue::discard_message
//     {queue|topic, message_id (the id or dlq_id)} -> {queue, message_id,
//     redriven}.
//   - engine::queue::topic_stats {queue|topic}: {queue, depth, waiting,
//     pending, delayed, dlq_depth, consumer_count, config, healthy}; without
//     a queue, {queues: [...]} for every known queue.
//   - engine::queue::list_topics, engine::queue::dlq_topics: iii's console
//     lists.
//
// # Configuration
//
//	modules:
//	  - class: QueueModule
//	    config:
//	      max_queues: 256
//	      queues:                 # or iii's queue_configs
//	        default: {concurrency: 10, max_retries: 3, backoff_ms: 1000}
//	        payments:
//	          concurrency: 5        # handlers per engine (FIFO: partitions)
//	          max_retries: 5        # delivery attempts in all
//	          backoff_ms: 500       # first retry delay, doubling
//	          max_backoff_ms: 60000 # cap (default 1 h)
//	          timeout_ms: 10000     # per handler call (default 30 s)
//	          claim_idle_ms: 20000  # visibility timeout (>= timeout_ms)
//	          poll_interval_ms: 100 # how often due retries are moved back
//	        orders:
//	          type: fifo            # or fifo: true
//	          message_group_field: customer_id
//
// # Redis keys
//
// Per queue, under iii:queue:{<name>}: (the braces are a Redis Cluster hash
// tag): stream (FIFO: p0, p1, ...), delayed (ZSET), dlq (stream), attempts
// and lease:<i> (FIFO). iii:queue:names is the set of every queue used.
//
// When Redis goes away, consumers back off (up to 5 s) and resume on their
// own, re-creating their consumer groups if Redis lost its data.
package queue

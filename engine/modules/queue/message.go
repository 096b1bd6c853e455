package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// message is what a queue holds: the original call and its delivery state.
// It is stored as JSON in the "m" field of a stream entry, as the member of
// the delayed set, and in the dead-letter stream. Entries are immutable:
// every transition (retry, dead-letter, redrive) writes a new one.
type message struct {
	ID          string          `json:"id"` // the messageReceiptId
	Queue       string          `json:"queue"`
	FunctionID  string          `json:"function_id"`
	Data        json.RawMessage `json:"data"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	Traceparent string          `json:"traceparent,omitempty"`
	Baggage     string          `json:"baggage,omitempty"`
	// Topic and Condition are set for durable publish deliveries.
	Topic     string `json:"topic,omitempty"`
	Condition string `json:"condition_function_id,omitempty"`
	// Observer is set for a durable publish delivery to an observer of
	// queue::on-message: the message is delivered only through that
	// observer (under its max_fires and max_in_flight). While no observer
	// of that id and topic is here to admit it, it waits in the queue,
	// its attempts untouched.
	Observer string `json:"observer,omitempty"`
	// Waits counts the times it was put back to wait for its observer
	// (the wait before the next look doubles, up to maxObserverWait).
	Waits int `json:"waits,omitempty"`
	// Group is the FIFO message group (the value of message_group_field).
	Group string `json:"group,omitempty"`
	// MaxRetries and BackoffMS override the queue's settings (a durable
	// subscriber's queue_config).
	MaxRetries *int `json:"max_retries,omitempty"`
	BackoffMS  *int `json:"backoff_ms,omitempty"`
	// Attempts counts failed attempts so far.
	Attempts   int                 `json:"attempts"`
	EnqueuedAt int64               `json:"enqueued_at"` // unix ms
	LastError  *protocol.ErrorBody `json:"last_error,omitempty"`
	FailedAt   int64               `json:"failed_at,omitempty"` // unix ms, set in the DLQ
}

// target is where the message's function resolves: its namespace and its
// bare id. FunctionID is the engine's function key (engine/namespace.go):
// the bare id in the default namespace, "namespace\x00id" elsewhere, as
// trigger bindings and a namespaced worker's enqueued calls carry it. It
// is what the module stores and calls; never show it: logs and listings
// show the bare id and the namespace.
func (m *message) target() (ns, id string) {
	return splitFunctionKey(m.FunctionID)
}

func splitFunctionKey(key string) (ns, id string) {
	ns = engine.Trigger{FunctionID: key}.Namespace()
	if ns == engine.DefaultNamespace {
		return ns, key
	}
	return ns, strings.TrimPrefix(key, ns+"\x00")
}

// nsField is a namespace as logs and listings show it: omitted (empty)
// when it is the default one, as the wire omits it.
func nsField(ns string) string {
	if ns == engine.DefaultNamespace {
		return ""
	}
	return ns
}

// fnAttrs are the log attributes naming the message's function: its bare
// id, and its namespace unless that is the default one.
func (m *message) fnAttrs() []any {
	ns, id := m.target()
	if ns = nsField(ns); ns != "" {
		return []any{"function_id", id, "namespace", ns}
	}
	return []any{"function_id", id}
}

func (m *message) encode() (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("queue: encode message %s: %w", m.ID, err)
	}
	return string(b), nil
}

func decodeMessage(raw string) (*message, error) {
	var m message
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, fmt.Errorf("queue: undecodable message: %w", err)
	}
	if m.FunctionID == "" {
		return nil, fmt.Errorf("queue: message %q has no function_id", m.ID)
	}
	if len(m.Data) == 0 {
		m.Data = json.RawMessage("null")
	}
	return &m, nil
}

// groupOf returns the FIFO group of data: the value of field, a string or a
// number (any other JSON value is used in its compact form). ok is false
// when data is not an object or lacks the field.
func groupOf(data json.RawMessage, field string) (string, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return "", false
	}
	v, ok := obj[field]
	if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return "", false
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s, true
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) != nil {
		return "", false
	}
	return buf.String(), true
}

// partitionOf maps a FIFO group to one of n partitions.
func partitionOf(group string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(group))
	return int(h.Sum32() % uint32(n))
}

// keys are the Redis keys of one queue. The queue name is wrapped in braces
// (a Redis Cluster hash tag) so the scripts that touch several of them stay
// in one slot.
type keys struct {
	stream   string // standard queue: the messages (consumer group groupName)
	delayed  string // ZSET of retries, scored by due time (unix ms)
	dlq      string // dead-letter stream
	attempts string // FIFO: HASH stream entry id -> attempt state
	base     string
}

func newKeys(key func(parts ...string) string, name string) keys {
	base := key("queue", "{"+name+"}")
	return keys{
		stream:   base + ":stream",
		delayed:  base + ":delayed",
		dlq:      base + ":dlq",
		attempts: base + ":attempts",
		base:     base,
	}
}

// partition is the stream of FIFO partition i.
func (k keys) partition(i int) string { return k.base + ":p" + strconv.Itoa(i) }

// lease is the key a FIFO partition's holder keeps alive.
func (k keys) lease(i int) string { return k.base + ":lease:" + strconv.Itoa(i) }

// groupName is the consumer group every engine reads queues with.
const groupName = "iii-queue"

// isStreamID reports whether s looks like a Redis stream entry id.
func isStreamID(s string) bool {
	a, b, ok := strings.Cut(s, "-")
	if !ok || a == "" || b == "" {
		return false
	}
	for _, r := range a + b {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

package stream

import (
	"bytes"
	"encoding/json"
	"time"
)

// Event types of the wrapper's "event" object (spec §8.3).
const (
	EventUnauthorized = "unauthorized"
	EventSync         = "sync"
	EventCreate       = "create"
	EventUpdate       = "update"
	EventDelete       = "delete"
	EventCustom       = "event"
)

// wrapperType is the top-level "type" of every server → client message
// (and of the stream trigger payload).
const wrapperType = "stream"

// Wrapper is every message the server sends to a stream client, and the
// payload of stream triggers:
//
//	{"type":"stream","timestamp":<unix ms>,"streamName","groupId","id","event":{...}}
//
// ID is null for group-level messages.
type Wrapper struct {
	Type       string          `json:"type"`
	Timestamp  int64           `json:"timestamp"`
	StreamName string          `json:"streamName"`
	GroupID    string          `json:"groupId"`
	ID         *string         `json:"id"`
	Event      json.RawMessage `json:"event"`
}

// header is the part of a published wrapper the fan-out needs to route it.
type header struct {
	Type       string  `json:"type"`
	StreamName string  `json:"streamName"`
	GroupID    string  `json:"groupId"`
	ID         *string `json:"id"`
}

// dataEvent is {"type":"sync"|"create"|"update"|"delete","data":...}.
type dataEvent struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// customEvent is {"type":"event","event":{"type":"<custom>","data":...}}.
type customEvent struct {
	Type  string `json:"type"`
	Event struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"event"`
}

var jsonNull = json.RawMessage("null")

// orNull is raw, or JSON null when raw is empty.
func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return jsonNull
	}
	return raw
}

// marshal encodes v without HTML escaping (values pass through as the
// caller wrote them).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// mustMarshal encodes values built from already-valid JSON; failure is a
// programming mistake.
func mustMarshal(v any) []byte {
	b, err := marshal(v)
	if err != nil {
		panic("stream: marshal: " + err.Error())
	}
	return b
}

// newWrapper builds the wrapper of one event, stamped now.
func newWrapper(streamName, groupID string, id *string, event any) []byte {
	return mustMarshal(Wrapper{
		Type:       wrapperType,
		Timestamp:  time.Now().UnixMilli(),
		StreamName: streamName,
		GroupID:    groupID,
		ID:         id,
		Event:      mustMarshal(event),
	})
}

func dataWrapper(kind, streamName, groupID string, id *string, data json.RawMessage) []byte {
	return newWrapper(streamName, groupID, id, dataEvent{Type: kind, Data: orNull(data)})
}

func customWrapper(streamName, groupID string, id *string, typ string, data json.RawMessage) []byte {
	ev := customEvent{Type: EventCustom}
	ev.Event.Type, ev.Event.Data = typ, orNull(data)
	return newWrapper(streamName, groupID, id, ev)
}

func unauthorizedWrapper(streamName, groupID string, id *string) []byte {
	return newWrapper(streamName, groupID, id, struct {
		Type string `json:"type"`
	}{EventUnauthorized})
}

// clientMessage is a client → server frame: {"type":"join"|"leave","data":{...}}.
type clientMessage struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// subscribeData is the camelCase "data" of join and leave.
type subscribeData struct {
	SubscriptionID string  `json:"subscriptionId"`
	StreamName     string  `json:"streamName"`
	GroupID        string  `json:"groupId"`
	ID             *string `json:"id"`
}

// joinLeaveEvent is the payload of stream:join and stream:leave handlers.
type joinLeaveEvent struct {
	SubscriptionID string          `json:"subscription_id"`
	StreamName     string          `json:"stream_name"`
	GroupID        string          `json:"group_id"`
	ID             *string         `json:"id"`
	Context        json.RawMessage `json:"context"`
}

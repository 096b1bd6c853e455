package pubsub

import (
	"encoding/json"

	"github.com/iii-workbench/iii/engine"
)

// observed reports a message received on topic to the observers of
// publish (the engine's built-in source for pub/sub, engine/sources.go):
// each sees it as a call of publish with input {topic, data}, the input
// iii's 0.26 SDKs filter on (input.topic) and deliver. Every engine
// sharing the Redis reports the message to its own observers, once.
func (m *Module) observed(topic string, data json.RawMessage) {
	in, err := json.Marshal(struct {
		Topic string          `json:"topic"`
		Data  json.RawMessage `json:"data"`
	}{topic, data})
	if err != nil {
		return
	}
	m.eng.ActivateAll(PublishFunction, engine.Observation{Input: in, Output: json.RawMessage("null")})
}

package cron

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/protocol"
)

// FunctionFire is engine::cron::fire {trigger_id} -> {fired, trigger_id,
// function_id}: fire a cron binding now, as if its schedule had come due
// (the condition function still applies, the tick's lock is taken). The
// TUI's f key on a cron trigger calls it. A binding this engine does not
// schedule is not_found.
const FunctionFire = "engine::cron::fire"

func (m *Module) registerFire() error {
	return m.life.RegisterFunction(WorkerName, engine.Function{ID: FunctionFire,
		Description: "Fire a cron trigger now, as if its schedule had come due", Handler: m.fireNow})
}

func (m *Module) fireNow(_ context.Context, call *engine.Call) (json.RawMessage, error) {
	var in struct {
		TriggerID string `json:"trigger_id"`
	}
	if err := json.Unmarshal(call.Data, &in); err != nil || in.TriggerID == "" {
		return nil, &protocol.ErrorBody{Code: "invalid_arguments", Message: "engine::cron::fire takes {\"trigger_id\": \"...\"}"}
	}
	m.mu.Lock()
	j := m.jobs[in.TriggerID]
	m.mu.Unlock()
	if j == nil {
		return nil, &protocol.ErrorBody{Code: "not_found", Message: fmt.Sprintf("no cron trigger %s on this engine", in.TriggerID)}
	}
	// The job's own context: the firing ends with the binding.
	m.fire(m.ctx, j, time.Now())
	return json.Marshal(map[string]any{"fired": true, "trigger_id": in.TriggerID, "function_id": j.trigger.FunctionID})
}

package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Decode errors. Match them with errors.Is.
var (
	// ErrProtocolEmpty is returned for a frame that holds only white space.
	// The engine ignores such frames.
	ErrProtocolEmpty = errors.New("protocol: empty frame")
	// ErrProtocolMalformed is returned for a frame that is not a JSON object
	// or misses a required field.
	ErrProtocolMalformed = errors.New("protocol: malformed message")
	// ErrProtocolUnknownType is returned for a well-formed object whose
	// "type" is not a known message type.
	ErrProtocolUnknownType = errors.New("protocol: unknown message type")
)

// Telemetry frame prefixes: a binary frame that starts with one of these is
// OTLP JSON telemetry, not a protocol message.
const (
	TelemetryTraces  = "OTLP"
	TelemetryMetrics = "MTRC"
	TelemetryLogs    = "LOGS"
)

// TelemetryKind reports whether frame is a telemetry frame and which kind.
// The payload is frame[4:].
func TelemetryKind(frame []byte) (string, bool) {
	if len(frame) < 4 {
		return "", false
	}
	switch string(frame[:4]) {
	case TelemetryTraces:
		return TelemetryTraces, true
	case TelemetryMetrics:
		return TelemetryMetrics, true
	case TelemetryLogs:
		return TelemetryLogs, true
	}
	return "", false
}

// wire is the union of every message's fields; a frame is decoded into it in
// one pass and then checked and narrowed to its typed message. Pointers mark
// fields whose presence matters.
type wire struct {
	Type                 *string         `json:"type"`
	ID                   *string         `json:"id"`
	Description          *string         `json:"description"`
	RequestFormat        json.RawMessage `json:"request_format"`
	ResponseFormat       json.RawMessage `json:"response_format"`
	Metadata             json.RawMessage `json:"metadata"`
	Invocation           json.RawMessage `json:"invocation"`
	TriggerRequestFormat json.RawMessage `json:"trigger_request_format"`
	CallRequestFormat    json.RawMessage `json:"call_request_format"`
	TriggerType          *string         `json:"trigger_type"`
	FunctionID           *string         `json:"function_id"`
	Config               json.RawMessage `json:"config"`
	Error                *wireError      `json:"error"`
	InvocationID         *string         `json:"invocation_id"`
	Data                 json.RawMessage `json:"data"`
	Result               json.RawMessage `json:"result"`
	Traceparent          *string         `json:"traceparent"`
	Baggage              *string         `json:"baggage"`
	Action               *Action         `json:"action"`
	Name                 *string         `json:"name"`
	ParentServiceID      *string         `json:"parent_service_id"`
	PreviousWorkerID     *string         `json:"previous_worker_id"`
	ReattachToken        *string         `json:"reattach_token"`
	WorkerID             *string         `json:"worker_id"`
}

type wireError struct {
	Code       *string `json:"code"`
	Message    *string `json:"message"`
	Stacktrace *string `json:"stacktrace"`
}

// Decode parses one frame into its typed message (a value, not a pointer:
// InvokeFunction, InvocationResult, ...).
func Decode(frame []byte) (Message, error) {
	trimmed := bytes.TrimSpace(frame)
	if len(trimmed) == 0 {
		return nil, ErrProtocolEmpty
	}
	if trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrProtocolMalformed)
	}
	var w wire
	if err := json.Unmarshal(trimmed, &w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocolMalformed, err)
	}
	if w.Type == nil {
		return nil, fmt.Errorf("%w: missing \"type\"", ErrProtocolMalformed)
	}
	return w.narrow()
}

func missing(t Type, field string) error {
	return fmt.Errorf("%w: %s: missing required field %q", ErrProtocolMalformed, t, field)
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// rawOrNil turns an explicit JSON null into "absent" for optional fields.
func rawOrNil(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}

func (w *wire) errorBody(t Type) (*ErrorBody, error) {
	if w.Error == nil {
		return nil, nil
	}
	if w.Error.Code == nil {
		return nil, missing(t, "error.code")
	}
	if w.Error.Message == nil {
		return nil, missing(t, "error.message")
	}
	return &ErrorBody{Code: *w.Error.Code, Message: *w.Error.Message, Stacktrace: str(w.Error.Stacktrace)}, nil
}

func checkUUID(t Type, field, v string) error {
	if _, err := uuid.Parse(v); err != nil {
		return fmt.Errorf("%w: %s: %s %q is not a UUID", ErrProtocolMalformed, t, field, v)
	}
	return nil
}

func (w *wire) narrow() (Message, error) {
	t := Type(*w.Type)
	switch t {
	case TypeRegisterFunction:
		if w.ID == nil {
			return nil, missing(t, "id")
		}
		return RegisterFunction{
			ID: *w.ID, Description: str(w.Description),
			RequestFormat: rawOrNil(w.RequestFormat), ResponseFormat: rawOrNil(w.ResponseFormat),
			Metadata: rawOrNil(w.Metadata), Invocation: rawOrNil(w.Invocation),
		}, nil
	case TypeUnregisterFunction:
		if w.ID == nil {
			return nil, missing(t, "id")
		}
		return UnregisterFunction{ID: *w.ID}, nil
	case TypeRegisterTriggerType:
		if w.ID == nil {
			return nil, missing(t, "id")
		}
		// The v0.22.1 engine requires description; the Python SDK may leave
		// it out, so an absent description is taken as empty.
		return RegisterTriggerType{
			ID: *w.ID, Description: str(w.Description),
			TriggerRequestFormat: rawOrNil(w.TriggerRequestFormat), CallRequestFormat: rawOrNil(w.CallRequestFormat),
		}, nil
	case TypeUnregisterTriggerType:
		if w.ID == nil {
			return nil, missing(t, "id")
		}
		return UnregisterTriggerType{ID: *w.ID}, nil
	case TypeRegisterTrigger:
		switch {
		case w.ID == nil:
			return nil, missing(t, "id")
		case w.TriggerType == nil:
			return nil, missing(t, "trigger_type")
		case w.FunctionID == nil:
			return nil, missing(t, "function_id")
		case w.Config == nil:
			return nil, missing(t, "config")
		}
		return RegisterTrigger{
			ID: *w.ID, TriggerType: *w.TriggerType, FunctionID: *w.FunctionID,
			Config: w.Config, Metadata: rawOrNil(w.Metadata),
		}, nil
	case TypeUnregisterTrigger:
		if w.ID == nil {
			return nil, missing(t, "id")
		}
		return UnregisterTrigger{ID: *w.ID, TriggerType: str(w.TriggerType)}, nil
	case TypeTriggerRegistrationResult:
		switch {
		case w.ID == nil:
			return nil, missing(t, "id")
		case w.TriggerType == nil:
			return nil, missing(t, "trigger_type")
		case w.FunctionID == nil:
			return nil, missing(t, "function_id")
		}
		eb, err := w.errorBody(t)
		if err != nil {
			return nil, err
		}
		return TriggerRegistrationResult{ID: *w.ID, TriggerType: *w.TriggerType, FunctionID: *w.FunctionID, Error: eb}, nil
	case TypeInvokeFunction:
		if w.FunctionID == nil {
			return nil, missing(t, "function_id")
		}
		if w.Data == nil {
			return nil, missing(t, "data")
		}
		id := str(w.InvocationID)
		if id != "" {
			if err := checkUUID(t, "invocation_id", id); err != nil {
				return nil, err
			}
		}
		if w.Action != nil && w.Action.Type != ActionVoid && w.Action.Type != ActionEnqueue {
			return nil, fmt.Errorf("%w: %s: unknown action type %q", ErrProtocolMalformed, t, w.Action.Type)
		}
		return InvokeFunction{
			InvocationID: id, FunctionID: *w.FunctionID, Data: w.Data,
			Traceparent: str(w.Traceparent), Baggage: str(w.Baggage),
			Action: w.Action, Metadata: rawOrNil(w.Metadata),
		}, nil
	case TypeInvocationResult:
		switch {
		case w.InvocationID == nil:
			return nil, missing(t, "invocation_id")
		case w.FunctionID == nil:
			return nil, missing(t, "function_id")
		}
		if err := checkUUID(t, "invocation_id", *w.InvocationID); err != nil {
			return nil, err
		}
		eb, err := w.errorBody(t)
		if err != nil {
			return nil, err
		}
		return InvocationResult{
			InvocationID: *w.InvocationID, FunctionID: *w.FunctionID,
			Result: rawOrNil(w.Result), Error: eb,
			Traceparent: str(w.Traceparent), Baggage: str(w.Baggage),
		}, nil
	case TypeRegisterService:
		if w.ID == nil {
			return nil, missing(t, "id")
		}
		return RegisterService{ID: *w.ID, Name: str(w.Name), Description: str(w.Description), ParentServiceID: str(w.ParentServiceID)}, nil
	case TypePing:
		return Ping{}, nil
	case TypePong:
		return Pong{}, nil
	case TypeReattach:
		if w.PreviousWorkerID == nil {
			return nil, missing(t, "previous_worker_id")
		}
		return Reattach{PreviousWorkerID: *w.PreviousWorkerID, ReattachToken: str(w.ReattachToken)}, nil
	case TypeWorkerRegistered:
		if w.WorkerID == nil {
			return nil, missing(t, "worker_id")
		}
		return WorkerRegistered{WorkerID: *w.WorkerID, ReattachToken: str(w.ReattachToken)}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrProtocolUnknownType, *w.Type)
}

// Encode serialises a message with its "type" tag first. It accepts the
// typed messages by value or by pointer.
func Encode(m Message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", m.MessageType(), err)
	}
	t := m.MessageType()
	out := make([]byte, 0, len(body)+len(t)+12)
	out = append(out, `{"type":"`...)
	out = append(out, t...)
	out = append(out, '"')
	if len(body) > 2 { // body is "{...}"; "{}" adds nothing
		out = append(out, ',')
		out = append(out, body[1:len(body)-1]...)
	}
	out = append(out, '}')
	return out, nil
}

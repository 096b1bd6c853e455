package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"

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
	Action               *wireAction     `json:"action"`
	Name                 *string         `json:"name"`
	ParentServiceID      *string         `json:"parent_service_id"`
	PreviousWorkerID     *string         `json:"previous_worker_id"`
	ReattachToken        *string         `json:"reattach_token"`
	WorkerID             *string         `json:"worker_id"`
	Features             json.RawMessage `json:"features"`
	wireObserve
	wireNS
}

type wireAction struct {
	Type  *string `json:"type"`
	Queue *string `json:"queue"`
}

type wireError struct {
	Code       *string `json:"code"`
	Message    *string `json:"message"`
	Stacktrace *string `json:"stacktrace"`
}

// Decode parses one frame into its typed message (a value, not a pointer:
// InvokeFunction, InvocationResult, ...). The raw JSON fields of the call
// messages (data, result, metadata) are slices of frame, not copies: the
// caller must not reuse frame while the message is in use.
func Decode(frame []byte) (Message, error) {
	trimmed, err := trimFrame(frame)
	if err != nil {
		return nil, err
	}
	// The two messages of every call take the fast path (fast.go).
	if m, handled, err := decodeCall(trimmed); handled {
		return m, err
	}
	return decodeWire(trimmed)
}

// trimFrame trims the white space around a frame and checks that what
// is left is an object.
func trimFrame(frame []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(frame)
	if len(trimmed) == 0 {
		return nil, ErrProtocolEmpty
	}
	if trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrProtocolMalformed)
	}
	return trimmed, nil
}

// decodeWire decodes any message through encoding/json. trimmed starts
// with '{'.
func decodeWire(trimmed []byte) (Message, error) {
	var w wire
	if err := json.Unmarshal(trimmed, &w); err != nil {
		// wire is the union of all messages, so a field of another message
		// type holding a value of another JSON type ("id": 5 on a ping)
		// fails here although, for this type, it is an ignorable extra.
		// Retry with only this type's fields; a real mismatch fails again.
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) || w.Type == nil {
			return nil, fmt.Errorf("%w: %w", ErrProtocolMalformed, err)
		}
		own, ok := ownFields(trimmed, Type(*w.Type))
		if !ok {
			return nil, fmt.Errorf("%w: %w", ErrProtocolMalformed, err)
		}
		w = wire{}
		if err := json.Unmarshal(own, &w); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrProtocolMalformed, err)
		}
	}
	if w.Type == nil {
		return nil, fmt.Errorf("%w: missing \"type\"", ErrProtocolMalformed)
	}
	m, err := w.narrow()
	if err != nil {
		return nil, err
	}
	return w.observeFields(w.nsFields(m))
}

// fieldsByType lists, for each message type, the top-level keys it reads.
var fieldsByType = func() map[Type][]string {
	m := make(map[Type][]string)
	for _, msg := range []Message{
		RegisterFunction{}, UnregisterFunction{}, RegisterTriggerType{}, UnregisterTriggerType{},
		RegisterTrigger{}, UnregisterTrigger{}, TriggerRegistrationResult{}, InvokeFunction{},
		InvocationResult{}, RegisterService{}, Ping{}, Pong{}, Reattach{}, WorkerRegistered{},
	} {
		m[msg.MessageType()] = messageKeys(msg)
	}
	for _, msg := range observeMessages {
		m[msg.MessageType()] = messageKeys(msg)
	}
	return m
}()

func messageKeys(msg Message) []string {
	keys := []string{"type"}
	rt := reflect.TypeOf(msg)
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		keys = append(keys, name)
	}
	return keys
}

// ownFields rebuilds the object frame keeping only the keys message type t
// reads (matched as encoding/json matches them, ignoring case), in their
// original order. ok is false for an unknown type or a frame that is not
// an object.
func ownFields(frame []byte, t Type) (own []byte, ok bool) {
	keys, known := fieldsByType[t]
	if !known {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(frame))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	own = append(make([]byte, 0, len(frame)), '{')
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, false
		}
		if !slices.ContainsFunc(keys, func(k string) bool { return strings.EqualFold(k, key) }) {
			continue
		}
		if len(own) > 1 {
			own = append(own, ',')
		}
		own, _ = appendJSON(own, key)
		own = append(own, ':')
		own = append(own, val...)
	}
	return append(own, '}'), true
}

func appendJSON(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
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

// tokens reads a list of strings leniently, as the SDKs read
// workerregistered.features: anything but an array reads as none, and
// items that are not strings are skipped.
func tokens(r json.RawMessage) []string {
	var items []json.RawMessage
	if len(r) == 0 || json.Unmarshal(r, &items) != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			out = append(out, s)
		}
	}
	return out
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

// canonicalUUID checks that v is a UUID and returns it in the canonical
// lower-case hyphenated form. The iii engine parses these fields as UUIDs,
// so "{...}", "urn:uuid:..." and upper-case spellings name the same call as
// the canonical form; normalising keeps invocation-ID lookups exact.
func canonicalUUID(t Type, field, v string) (string, error) {
	if isCanonicalUUID(v) {
		return v, nil // what the SDKs send: no parse, no allocation
	}
	u, err := uuid.Parse(v)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %s %q is not a UUID", ErrProtocolMalformed, t, field, v)
	}
	if len(v) == 36 && strings.IndexFunc(v, unicode.IsUpper) < 0 {
		return v, nil // already canonical; spare the allocation
	}
	return u.String(), nil
}

// isCanonicalUUID reports whether v is a UUID in its canonical form:
// 8-4-4-4-12 lower-case hex digits. It runs twice per call (the
// invocation id of the call and of its result), so it checks the four
// hyphens at their places, then counts the bytes that are not digits
// without a branch per byte: exactly the four hyphens.
func isCanonicalUUID(v string) bool {
	if len(v) != 36 || v[8] != '-' || v[13] != '-' || v[18] != '-' || v[23] != '-' {
		return false
	}
	n := 0
	for i := 0; i < 36; i++ {
		n += int(notLowerHex[v[i]])
	}
	return n == 4
}

// notLowerHex is 1 for every byte but the digits of a canonical UUID.
var notLowerHex = func() (t [256]uint8) {
	for i := range t {
		t[i] = 1
	}
	for _, c := range "0123456789abcdef" {
		t[c] = 0
	}
	return t
}()

func (w *wire) action(t Type) (*Action, error) {
	if w.Action == nil {
		return nil, nil
	}
	switch str(w.Action.Type) {
	case ActionVoid:
		return &Action{Type: ActionVoid}, nil
	case ActionEnqueue:
		// A missing or empty queue is left for the router to refuse with
		// an error result, rather than dropping the call unanswered.
		return &Action{Type: ActionEnqueue, Queue: str(w.Action.Queue)}, nil
	}
	if w.Action.Type == nil {
		return nil, missing(t, "action.type")
	}
	return nil, fmt.Errorf("%w: %s: unknown action type %q", ErrProtocolMalformed, t, *w.Action.Type)
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
			// The v0.22.1 engine drops such a frame, but the published SDKs
			// send it (Python trigger(payload=None) and Node with an undefined
			// payload leave "data" out), and dropping it leaves the caller
			// hanging until its own timeout: a missing payload is null.
			w.Data = json.RawMessage("null")
		}
		// Absent or null means fire-and-forget; any string, even "", must
		// be a UUID.
		var id string
		if w.InvocationID != nil {
			var err error
			if id, err = canonicalUUID(t, "invocation_id", *w.InvocationID); err != nil {
				return nil, err
			}
		}
		action, err := w.action(t)
		if err != nil {
			return nil, err
		}
		return InvokeFunction{
			InvocationID: id, FunctionID: *w.FunctionID, Data: w.Data,
			Traceparent: str(w.Traceparent), Baggage: str(w.Baggage),
			Action: action, Metadata: rawOrNil(w.Metadata),
		}, nil
	case TypeInvocationResult:
		switch {
		case w.InvocationID == nil:
			return nil, missing(t, "invocation_id")
		case w.FunctionID == nil:
			return nil, missing(t, "function_id")
		}
		id, err := canonicalUUID(t, "invocation_id", *w.InvocationID)
		if err != nil {
			return nil, err
		}
		eb, err := w.errorBody(t)
		if err != nil {
			return nil, err
		}
		return InvocationResult{
			InvocationID: id, FunctionID: *w.FunctionID,
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
		return WorkerRegistered{WorkerID: *w.WorkerID, ReattachToken: str(w.ReattachToken), Features: tokens(w.Features)}, nil
	}
	if m, ok, err := w.narrowObserve(t); ok {
		return m, err
	}
	return nil, fmt.Errorf("%w: %q", ErrProtocolUnknownType, *w.Type)
}

// Encode serialises a message with its "type" tag first. It accepts the
// typed messages by value or by pointer.
//
// HTML characters are not escaped: payloads pass through as the sender
// wrote them (as the iii engine does), only compacted.
func Encode(m Message) ([]byte, error) {
	// The two messages of every call are written by hand, without
	// reflection; raw JSON fields are checked and compacted as
	// encoding/json would, but copied as they are when already compact.
	var (
		b   []byte
		err error
	)
	switch v := m.(type) {
	case InvokeFunction:
		b, err = AppendInvoke(make([]byte, 0, InvokeSize(&v)), &v)
	case *InvokeFunction:
		b, err = AppendInvoke(make([]byte, 0, InvokeSize(v)), v)
	case InvocationResult:
		b, err = AppendResult(make([]byte, 0, ResultSize(&v)), &v)
	case *InvocationResult:
		b, err = AppendResult(make([]byte, 0, ResultSize(v)), v)
	default:
		return encodeReflect(m)
	}
	return b, err
}

// AppendInvoke appends the encoded invokefunction to dst, as Encode
// writes it; the router encodes into pooled buffers with it.
func AppendInvoke(dst []byte, m *InvokeFunction) ([]byte, error) {
	return AppendInvokeVouched(dst, m, Compact{})
}

// AppendInvokeVouched is AppendInvoke for a message whose Data data may
// vouch for (see Compact): such a payload is copied without a scan.
func AppendInvokeVouched(dst []byte, m *InvokeFunction, data Compact) ([]byte, error) {
	b, err := appendInvoke(dst, m, data)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", TypeInvokeFunction, err)
	}
	return b, nil
}

// AppendResult appends the encoded invocationresult to dst, as Encode
// writes it.
func AppendResult(dst []byte, m *InvocationResult) ([]byte, error) {
	return AppendResultVouched(dst, m, Compact{})
}

// AppendResultVouched is AppendResult for a message whose Result result
// may vouch for (see Compact): such a payload is copied without a scan.
func AppendResultVouched(dst []byte, m *InvocationResult, result Compact) ([]byte, error) {
	b, err := appendResult(dst, m, result)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", TypeInvocationResult, err)
	}
	return b, nil
}

func encodeReflect(m Message) ([]byte, error) {
	t := m.MessageType()
	var buf bytes.Buffer
	buf.Grow(256)
	buf.WriteString(`{"type":"`)
	buf.WriteString(string(t))
	buf.WriteByte('"')
	mark := buf.Len()
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", t, err)
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n")) // prefix + "{...}"
	if len(out)-mark == 2 {                            // "{}": no fields
		return append(out[:mark], '}'), nil
	}
	out[mark] = ',' // splice the body's fields after the type
	return out, nil
}

// appendString appends s as a JSON string. Plain ASCII (ids, UUIDs,
// traceparents) is copied as is; anything else goes through encoding/json,
// without HTML escaping, as the reflective path does.
func appendString(b []byte, s string) []byte {
	if !plainASCII(s) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(s) // a string always encodes
		return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

func appendRaw(b []byte, name string, raw json.RawMessage, vouched Compact) ([]byte, error) {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	if vouched.vouches(raw) {
		// Scanned already, by the decoder that read it (Compact).
		return append(b, raw...), nil
	}
	// One validating scan (scan.go); compact payloads, which is what the
	// SDKs send, are copied as they are.
	compact, err := checkRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid JSON", name)
	}
	if !compact {
		buf := bytes.NewBuffer(b)
		if err := json.Compact(buf, raw); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return buf.Bytes(), nil
	}
	return append(b, raw...), nil
}

func appendError(b []byte, e *ErrorBody) []byte {
	b = append(b, `,"error":{"code":`...)
	b = appendString(b, e.Code)
	b = appendField(b, "message", e.Message)
	if e.Stacktrace != "" {
		b = appendField(b, "stacktrace", e.Stacktrace)
	}
	return append(b, '}')
}

func appendInvoke(b []byte, m *InvokeFunction, vouched Compact) ([]byte, error) {
	b = append(b, `{"type":"invokefunction"`...)
	if m.InvocationID != "" {
		b = appendField(b, "invocation_id", m.InvocationID)
	}
	b = appendField(b, "function_id", m.FunctionID)
	data := m.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b, err := appendRaw(b, "data", data, vouched)
	if err != nil {
		return nil, err
	}
	if m.Traceparent != "" {
		b = appendField(b, "traceparent", m.Traceparent)
	}
	if m.Baggage != "" {
		b = appendField(b, "baggage", m.Baggage)
	}
	if m.Action != nil {
		b = append(b, `,"action":{"type":`...)
		b = appendString(b, m.Action.Type)
		if m.Action.Queue != "" {
			b = appendField(b, "queue", m.Action.Queue)
		}
		b = append(b, '}')
	}
	if len(m.Metadata) > 0 {
		if b, err = appendRaw(b, "metadata", m.Metadata, Compact{}); err != nil {
			return nil, err
		}
	}
	if m.Namespace != "" {
		b = appendField(b, "namespace", m.Namespace)
	}
	if m.Caller != nil {
		if b, err = appendCaller(b, m.Caller); err != nil {
			return nil, err
		}
	}
	if m.ObserveDepth > 0 {
		b = append(b, `,"observe_depth":`...)
		b = strconv.AppendUint(b, uint64(m.ObserveDepth), 10)
	}
	if a := m.Activation; a != nil {
		b = append(b, `,"activation":{"observer_id":`...)
		b = appendString(b, a.ObserverID)
		if a.ActivationID != "" {
			b = appendField(b, "activation_id", a.ActivationID)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

func appendResult(b []byte, m *InvocationResult, vouched Compact) ([]byte, error) {
	b = append(b, `{"type":"invocationresult"`...)
	b = appendField(b, "invocation_id", m.InvocationID)
	b = appendField(b, "function_id", m.FunctionID)
	if len(m.Result) > 0 {
		var err error
		if b, err = appendRaw(b, "result", m.Result, vouched); err != nil {
			return nil, err
		}
	}
	if m.Error != nil {
		b = appendError(b, m.Error)
	}
	if m.Traceparent != "" {
		b = appendField(b, "traceparent", m.Traceparent)
	}
	if m.Baggage != "" {
		b = appendField(b, "baggage", m.Baggage)
	}
	if m.Matched != nil { // [] (none matched) is not absent
		b = append(b, `,"matched":[`...)
		for i, id := range m.Matched {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, id)
		}
		b = append(b, ']')
	}
	if m.Delivered {
		b = append(b, `,"delivered":true`...)
	}
	return append(b, '}'), nil
}

// InvokeSize and ResultSize bound the encoded size of plain messages
// (keys and punctuation included), so a frame is allocated once.
func InvokeSize(m *InvokeFunction) int {
	n := 160 + len(m.InvocationID) + len(m.FunctionID) + len(m.Data) + len(m.Traceparent) + len(m.Baggage) + len(m.Metadata)
	if m.Action != nil {
		n += 40 + len(m.Action.Queue)
	}
	return n
}

func ResultSize(m *InvocationResult) int {
	n := 160 + len(m.InvocationID) + len(m.FunctionID) + len(m.Result) + len(m.Traceparent) + len(m.Baggage)
	if m.Error != nil {
		n += 48 + len(m.Error.Code) + len(m.Error.Message) + len(m.Error.Stacktrace)
	}
	return n
}

package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// The call messages (invokefunction, invocationresult) are decoded by
// callDecoder: one pass over the frame, reading only the fields the
// message structs declare and leaving data, result and metadata as spans
// of the frame (json.RawMessage values that alias it). Their fields are
// found by their json tags, so a field added to InvokeFunction or
// InvocationResult is decoded without touching this file: strings and raw
// JSON here, any other type through encoding/json.

// fieldKind is how a struct field is read from its span.
type fieldKind uint8

const (
	kindString fieldKind = iota
	kindRaw
	kindAction
	kindError
	kindCaller // leniently, as the SDKs read it (decodeCaller)
	kindOther  // through encoding/json
)

// maxCallFields bounds the fields of a call message (a bit each in a
// uint32 presence mask).
const maxCallFields = 32

type callField struct {
	name  string // json key, as tagged
	index int    // struct field index
	kind  fieldKind
}

// callLayout is one call message's fields, by json key.
type callLayout struct {
	typ    Type
	rtype  reflect.Type
	fields []callField
	byKey  map[string]int // lower-case key -> index into fields

	// The fields normalize checks, by index (-1: not in this message).
	functionID, invocationID, data int
}

var (
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	actionPtrType  = reflect.TypeFor[*Action]()
	errorPtrType   = reflect.TypeFor[*ErrorBody]()
	callerPtrType  = reflect.TypeFor[*Caller]()

	invokeLayout = newCallLayout(InvokeFunction{})
	resultLayout = newCallLayout(InvocationResult{})
)

func newCallLayout(msg Message) *callLayout {
	l := &callLayout{typ: msg.MessageType(), rtype: reflect.TypeOf(msg), byKey: map[string]int{}}
	for i := range l.rtype.NumField() {
		f := l.rtype.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		k := kindOther
		switch {
		case f.Type == rawMessageType:
			k = kindRaw
		case f.Type.Kind() == reflect.String:
			k = kindString
		case f.Type == actionPtrType:
			k = kindAction
		case f.Type == errorPtrType:
			k = kindError
		case f.Type == callerPtrType:
			k = kindCaller
		}
		l.byKey[strings.ToLower(name)] = len(l.fields)
		l.fields = append(l.fields, callField{name: name, index: i, kind: k})
	}
	if len(l.fields) > maxCallFields {
		panic("protocol: too many fields in " + string(l.typ))
	}
	l.functionID, l.invocationID, l.data = l.indexOf("function_id"), l.indexOf("invocation_id"), l.indexOf("data")
	return l
}

// callKeys maps a lower-case key to its field index in each call layout
// (-1: not a field of that message), so one lookup serves both.
var callKeys = func() map[string][2]int8 {
	m := map[string][2]int8{}
	for k, l := range []*callLayout{invokeLayout, resultLayout} {
		for name, i := range l.byKey {
			idx, ok := m[name]
			if !ok {
				idx = [2]int8{-1, -1}
			}
			idx[k] = int8(i)
			m[name] = idx
		}
	}
	return m
}()

// lookupCallKey finds the fields named by key (a JSON string, quotes
// included) in both call layouts, ignoring case as encoding/json does.
func lookupCallKey(key []byte, plain bool) [2]int8 {
	name := key[1 : len(key)-1]
	if plain && len(name) <= 32 {
		var lower [32]byte
		for i, c := range name {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower[i] = c
		}
		if idx, ok := callKeys[string(lower[:len(name)])]; ok {
			return idx
		}
		return [2]int8{-1, -1}
	}
	var s string
	if err := json.Unmarshal(key, &s); err != nil {
		return [2]int8{-1, -1}
	}
	for name, idx := range callKeys {
		if strings.EqualFold(name, s) {
			return idx
		}
	}
	return [2]int8{-1, -1}
}

// callLayoutOf returns the layout of the call message the frame's "type"
// value v names, or nil.
func callLayoutOf(frame []byte, v span) *callLayout {
	switch string(frame[v.start:v.end]) {
	case `"invokefunction"`:
		return invokeLayout
	case `"invocationresult"`:
		return resultLayout
	}
	return nil
}

// decodeCall decodes a call message. handled is false when the frame is
// not one (its "type" is not a call message's, or is spelled in a way
// only encoding/json reads) or is not valid JSON: Decode's general path
// takes it then, and names the error. frame is trimmed and starts with '{'.
func decodeCall(frame []byte) (msg Message, handled bool, err error) {
	// One pass records, for both call messages, the spans of their fields;
	// a later duplicate key wins, as in encoding/json.
	var (
		typeVal span
		spans   [2][maxCallFields]span
		present [2]uint32 // fields with a non-null value
		layouts = [2]*callLayout{invokeLayout, resultLayout}
		merged  bool
	)
	end, err := eachMember(frame, 0, func(key []byte, plain bool, v span) error {
		if isTypeKey(key, plain) {
			typeVal = v
			return nil
		}
		null := string(frame[v.start:v.end]) == "null"
		idx := lookupCallKey(key, plain)
		for k, l := range layouts {
			if i := idx[k]; i >= 0 {
				if !null && present[k]&(1<<i) != 0 && l.fields[i].kind >= kindAction {
					// encoding/json merges a repeated object into the
					// first; leave that rarity to it.
					merged = true
				}
				spans[k][i] = v
				if null {
					present[k] &^= 1 << i
				} else {
					present[k] |= 1 << i
				}
			}
		}
		return nil
	})
	if err != nil || merged || skipSpace(frame, end) != len(frame) || !typeVal.ok() {
		return nil, false, nil
	}
	switch callLayoutOf(frame, typeVal) {
	case invokeLayout:
		var m InvokeFunction
		if err := invokeLayout.fill(reflect.ValueOf(&m).Elem(), frame, &spans[0], present[0]); err != nil {
			return nil, true, err
		}
		if err := m.normalize(invokeLayout, &spans[0], present[0]); err != nil {
			return nil, true, err
		}
		return m, true, nil
	case resultLayout:
		var m InvocationResult
		if err := resultLayout.fill(reflect.ValueOf(&m).Elem(), frame, &spans[1], present[1]); err != nil {
			return nil, true, err
		}
		if err := m.normalize(resultLayout, present[1]); err != nil {
			return nil, true, err
		}
		return m, true, nil
	}
	return nil, false, nil
}

func isTypeKey(key []byte, plain bool) bool {
	if plain {
		return len(key) == 6 && bytes.EqualFold(key[1:5], []byte("type"))
	}
	var s string
	return json.Unmarshal(key, &s) == nil && strings.EqualFold(s, "type")
}

func (l *callLayout) indexOf(name string) int {
	if i, ok := l.byKey[name]; ok {
		return i
	}
	return -1
}

// has reports whether field i (an index from indexOf) was given a
// non-null value.
func has(present uint32, i int) bool { return i >= 0 && present&(1<<i) != 0 }

// fill sets the struct's fields from their spans. A value of the wrong
// JSON type is an error naming the message and field.
func (l *callLayout) fill(v reflect.Value, frame []byte, spans *[maxCallFields]span, present uint32) error {
	// The string fields that need no unescaping share one allocation.
	var (
		plainSet uint32
		stack    [256]byte
		joined   = stack[:0]
	)
	for i, f := range l.fields {
		if f.kind != kindString || present&(1<<i) == 0 {
			continue
		}
		if body, ok := plainString(frame[spans[i].start:spans[i].end]); ok {
			plainSet |= 1 << i
			joined = append(joined, body...)
		}
	}
	all := string(joined)
	for i, f := range l.fields {
		if plainSet&(1<<i) != 0 {
			n := spans[i].end - spans[i].start - 2
			v.Field(f.index).SetString(all[:n])
			all = all[n:]
		}
	}
	for i, f := range l.fields {
		if plainSet&(1<<i) != 0 {
			continue
		}
		s := spans[i]
		if !s.ok() {
			continue
		}
		val := frame[s.start:s.end]
		fv := v.Field(f.index)
		switch f.kind {
		case kindRaw:
			fv.SetBytes(val)
			continue
		}
		if present&(1<<i) == 0 {
			continue // null leaves the zero value
		}
		switch f.kind {
		case kindString:
			str, err := readString(val)
			if err != nil {
				return fmt.Errorf("%w: %s: %s must be a string", ErrProtocolMalformed, l.typ, f.name)
			}
			fv.SetString(str)
		case kindAction:
			a, err := readAction(l.typ, val)
			if err != nil {
				return err
			}
			fv.Set(reflect.ValueOf(a))
		case kindError:
			e, err := readError(l.typ, val)
			if err != nil {
				return err
			}
			fv.Set(reflect.ValueOf(e))
		case kindCaller:
			if c := decodeCaller(val); c != nil {
				fv.Set(reflect.ValueOf(c))
			}
		default:
			if err := json.Unmarshal(val, fv.Addr().Interface()); err != nil {
				return fmt.Errorf("%w: %s: %s: %w", ErrProtocolMalformed, l.typ, f.name, err)
			}
		}
	}
	return nil
}

// plainString returns the body of a JSON string value that reads as it is
// written (valid UTF-8, no escapes).
func plainString(val []byte) ([]byte, bool) {
	if len(val) < 2 || val[0] != '"' {
		return nil, false
	}
	body := val[1 : len(val)-1]
	return body, bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body)
}

// readString reads a JSON string value; plain ASCII without escapes is
// copied as is, anything else goes through encoding/json (which also
// replaces invalid UTF-8 as it always has).
func readString(val []byte) (string, error) {
	if body, ok := plainString(val); ok {
		return string(body), nil
	}
	if len(val) < 2 || val[0] != '"' {
		return "", errSyntax
	}
	var s string
	err := json.Unmarshal(val, &s)
	return s, err
}

// readObjectStrings reads the string members of a small nested object
// (action, error): set is called with the field's index in names and its
// value; null members are skipped, unknown members ignored.
func readObjectStrings(t Type, field string, val []byte, names []string, set func(i int, s string)) error {
	if val[0] != '{' {
		return fmt.Errorf("%w: %s: %s must be an object", ErrProtocolMalformed, t, field)
	}
	_, err := eachMember(val, 0, func(key []byte, plain bool, v span) error {
		var k string
		if plain {
			k = string(key[1 : len(key)-1])
		} else if err := json.Unmarshal(key, &k); err != nil {
			return err
		}
		for i, n := range names {
			if !strings.EqualFold(n, k) {
				continue
			}
			raw := val[v.start:v.end]
			if string(raw) == "null" {
				return nil
			}
			s, err := readString(raw)
			if err != nil {
				return fmt.Errorf("%w: %s: %s.%s must be a string", ErrProtocolMalformed, t, field, n)
			}
			set(i, s)
			return nil
		}
		return nil
	})
	return err
}

var actionKeys = []string{"type", "queue"}

func readAction(t Type, val []byte) (*Action, error) {
	var typ, queue *string
	err := readObjectStrings(t, "action", val, actionKeys, func(i int, s string) {
		if i == 0 {
			typ = &s
		} else {
			queue = &s
		}
	})
	if err != nil {
		return nil, err
	}
	return (&wire{Action: &wireAction{Type: typ, Queue: queue}}).action(t)
}

var errorKeys = []string{"code", "message", "stacktrace"}

func readError(t Type, val []byte) (*ErrorBody, error) {
	var we wireError
	err := readObjectStrings(t, "error", val, errorKeys, func(i int, s string) {
		switch i {
		case 0:
			we.Code = &s
		case 1:
			we.Message = &s
		default:
			we.Stacktrace = &s
		}
	})
	if err != nil {
		return nil, err
	}
	return (&wire{Error: &we}).errorBody(t)
}

// normalize applies what the engine expects of an invokefunction after
// its fields are read (see Decode).
func (m *InvokeFunction) normalize(l *callLayout, spans *[maxCallFields]span, present uint32) error {
	if !has(present, l.functionID) {
		return missing(l.typ, "function_id")
	}
	if !spans[l.data].ok() {
		// The v0.22.1 engine drops such a frame, but the published SDKs
		// send it (Python trigger(payload=None) and Node with an undefined
		// payload leave "data" out), and dropping it leaves the caller
		// hanging until its own timeout: a missing payload is null.
		m.Data = json.RawMessage("null")
	}
	// Absent or null means fire-and-forget; any string, even "", must be
	// a UUID.
	if has(present, l.invocationID) {
		id, err := canonicalUUID(l.typ, "invocation_id", m.InvocationID)
		if err != nil {
			return err
		}
		m.InvocationID = id
	}
	m.Metadata = rawOrNil(m.Metadata)
	if m.Activation != nil && m.Activation.ObserverID == "" {
		return missing(l.typ, "activation.observer_id")
	}
	if emptyCaller(m.Caller) {
		m.Caller = nil // absent, or not an object
	}
	return nil
}

// normalize applies what the engine expects of an invocationresult after
// its fields are read.
func (m *InvocationResult) normalize(l *callLayout, present uint32) error {
	switch {
	case !has(present, l.invocationID):
		return missing(l.typ, "invocation_id")
	case !has(present, l.functionID):
		return missing(l.typ, "function_id")
	}
	id, err := canonicalUUID(l.typ, "invocation_id", m.InvocationID)
	if err != nil {
		return err
	}
	m.InvocationID = id
	m.Result = rawOrNil(m.Result)
	return nil
}

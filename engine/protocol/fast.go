package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
	"unsafe"
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
	functionID, invocationID, data, result int
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
	l.functionID, l.invocationID = l.indexOf("function_id"), l.indexOf("invocation_id")
	l.data, l.result = l.indexOf("data"), l.indexOf("result")
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

// callScan is one pass over a frame that may be a call message: for both
// call messages, the spans of their fields, which of them are non-null,
// and which hold compact JSON.
type callScan struct {
	typeVal span
	spans   [2][maxCallFields]span
	present [2]uint32 // fields with a non-null value
	compact [2]uint32 // fields whose value has no insignificant white space
	plain   [2]uint32 // fields whose value is a string of printable ASCII, no escapes
}

// scan reads frame's members and returns the layout of the call message
// it is, or nil when it is not one (its "type" is not a call message's,
// or is spelled in a way only encoding/json reads) or is not valid JSON:
// Decode's general path takes it then, and names the error. frame is
// trimmed and starts with '{'.
func (s *callScan) scan(frame []byte) *callLayout {
	// A later duplicate key wins, as in encoding/json.
	layouts := [2]*callLayout{invokeLayout, resultLayout}
	merged := false
	end, err := eachMember(frame, 0, func(key []byte, plain bool, v span, spaced, valPlain bool) error {
		if isTypeKey(key, plain) {
			s.typeVal = v
			return nil
		}
		null := string(frame[v.start:v.end]) == "null"
		idx := lookupCallKey(key, plain)
		for k, l := range layouts {
			if i := idx[k]; i >= 0 {
				if !null && s.present[k]&(1<<i) != 0 && l.fields[i].kind >= kindAction {
					// encoding/json merges a repeated object into the
					// first; leave that rarity to it.
					merged = true
				}
				s.spans[k][i] = v
				if null {
					s.present[k] &^= 1 << i
				} else {
					s.present[k] |= 1 << i
				}
				if spaced {
					s.compact[k] &^= 1 << i
				} else {
					s.compact[k] |= 1 << i
				}
				if valPlain {
					s.plain[k] |= 1 << i
				} else {
					s.plain[k] &^= 1 << i
				}
			}
		}
		return nil
	})
	if err != nil || merged || skipSpace(frame, end) != len(frame) || !s.typeVal.ok() {
		return nil
	}
	return callLayoutOf(frame, s.typeVal)
}

// invoke fills m (zero) from a frame scan found to be an invokefunction;
// alias as in fill.
func (s *callScan) invoke(frame []byte, m *InvokeFunction, alias bool) error {
	if err := invokeLayout.fill(reflect.ValueOf(m).Elem(), frame, &s.spans[0], s.present[0], s.plain[0], alias); err != nil {
		return err
	}
	return m.normalize(invokeLayout, &s.spans[0], s.present[0])
}

// result fills m (zero) from a frame scan found to be an
// invocationresult; alias as in fill.
func (s *callScan) result(frame []byte, m *InvocationResult, alias bool) error {
	if err := resultLayout.fill(reflect.ValueOf(m).Elem(), frame, &s.spans[1], s.present[1], s.plain[1], alias); err != nil {
		return err
	}
	return m.normalize(resultLayout, s.present[1])
}

// vouch returns a Compact for raw when it is the compact value of field i
// of layout k, as scanned in frame; the zero Compact otherwise.
func (s *callScan) vouch(frame []byte, k, i int, raw []byte) Compact {
	if i < 0 {
		return Compact{}
	}
	v := s.spans[k][i]
	if !v.ok() || s.compact[k]&(1<<i) == 0 || len(raw) != v.end-v.start || &raw[0] != &frame[v.start] {
		return Compact{}
	}
	return Compact{p: &raw[0], n: len(raw)}
}

// decodeCall decodes a call message. handled is false when the frame is
// not one, or not valid JSON (see callScan.scan). frame is trimmed and
// starts with '{'.
func decodeCall(frame []byte) (msg Message, handled bool, err error) {
	var s callScan
	switch s.scan(frame) {
	case invokeLayout:
		var m InvokeFunction
		if err := s.invoke(frame, &m, false); err != nil {
			return nil, true, err
		}
		return m, true, nil
	case resultLayout:
		var m InvocationResult
		if err := s.result(frame, &m, false); err != nil {
			return nil, true, err
		}
		return m, true, nil
	}
	return nil, false, nil
}

// Decoder decodes the frames of one connection, one at a time. It decodes
// the call messages (invokefunction, invocationresult) into messages of
// its own, which spares their allocation per frame, and vouches for the
// payloads it has found to be compact JSON (Vouched), which spares the
// encoder a second scan of them. The zero Decoder is ready to use; it is
// not safe for concurrent use.
type Decoder struct {
	// Keeps says the frames given to Decode are the Decoder's to keep as
	// they are: nothing writes to one afterwards. The string fields of a
	// small call message then share its frame's memory instead of being
	// copied (which keeps the frame alive as long as any of them).
	Keeps bool

	invoke  InvokeFunction
	result  InvocationResult
	vouched Compact
}

// aliasLimit is the largest frame (by capacity) whose strings a Decoder
// that Keeps its frames lets share the frame's memory: a few short strings
// never pin a large buffer.
const aliasLimit = 4 << 10

// Decode decodes a frame as the package's Decode does, with one
// difference: an invokefunction or invocationresult is returned as a
// *InvokeFunction or *InvocationResult that the Decoder owns, valid until
// its next Decode (copy the message to keep it).
func (d *Decoder) Decode(frame []byte) (Message, error) {
	d.vouched = Compact{}
	trimmed, err := trimFrame(frame)
	if err != nil {
		return nil, err
	}
	var s callScan
	alias := d.Keeps && cap(frame) <= aliasLimit
	switch s.scan(trimmed) {
	case invokeLayout:
		d.invoke = InvokeFunction{}
		if err := s.invoke(trimmed, &d.invoke, alias); err != nil {
			return nil, err
		}
		d.vouched = s.vouch(trimmed, 0, invokeLayout.data, d.invoke.Data)
		return &d.invoke, nil
	case resultLayout:
		d.result = InvocationResult{}
		if err := s.result(trimmed, &d.result, alias); err != nil {
			return nil, err
		}
		d.vouched = s.vouch(trimmed, 1, resultLayout.result, d.result.Result)
		return &d.result, nil
	}
	return decodeWire(trimmed)
}

// Vouched vouches for the payload of the call message the last Decode
// returned (its data or result), when the Decoder found it compact.
func (d *Decoder) Vouched() Compact { return d.vouched }

// Compact vouches that a payload is one valid JSON value without
// insignificant white space, so the encoders copy it onto the wire
// without scanning it again. Only this package makes one (Decoder, for
// the payloads it has scanned; AppendMember), and one vouches only for the
// very bytes it was made for (same memory, same length), which must not
// be modified afterwards; for any other payload it is ignored. The zero
// Compact vouches for nothing.
type Compact struct {
	p *byte
	n int
}

// vouches reports whether c was made for raw.
func (c Compact) vouches(raw []byte) bool {
	return c.n > 0 && len(raw) == c.n && &raw[0] == c.p
}

// AppendMember returns raw with the member "key":"value" added last (so
// it wins over a member of the same name), when raw is an object; any
// other value is returned as it is. key and value are written as they are,
// unescaped. The result is a new buffer; its Compact vouches for it when
// c vouched for raw and key and value are plain printable ASCII.
func AppendMember(raw json.RawMessage, c Compact, key, value string) (json.RawMessage, Compact) {
	t := bytes.TrimSpace(raw)
	if len(t) < 2 || t[0] != '{' {
		return raw, c
	}
	body := bytes.TrimSpace(t[1 : len(t)-1])
	out := make([]byte, 0, len(t)+len(key)+len(value)+6)
	out = append(out, '{')
	if len(body) > 0 {
		out = append(out, body...)
		out = append(out, ',')
	}
	out = append(out, '"')
	out = append(out, key...)
	out = append(out, `":"`...)
	out = append(out, value...)
	out = append(out, `"}`...)
	if !c.vouches(raw) || !plainASCII(key) || !plainASCII(value) {
		return out, Compact{}
	}
	return out, Compact{p: &out[0], n: len(out)}
}

// plainASCII reports whether s is written in a JSON string as it is
// (printable ASCII but '"' and '\\'), eight bytes per step as skipString.
func plainASCII(s string) bool {
	if len(s) == 0 {
		return true
	}
	b := unsafe.Slice(unsafe.StringData(s), len(s)) // read only
	i := 0
	for i+8 <= len(b) && !needsLook(binary.LittleEndian.Uint64(b[i:])) {
		i += 8
	}
	for ; i < len(b); i++ {
		if !asciiText[b[i]] {
			return false
		}
	}
	return true
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
//
// With alias set, the strings that need no unescaping share frame's memory
// (which must then never change); otherwise they share one allocation.
//
// plain marks the fields known to hold plain strings (callScan.plain); the
// others are looked at here.
func (l *callLayout) fill(v reflect.Value, frame []byte, spans *[maxCallFields]span, present, plain uint32, alias bool) error {
	var (
		plainSet uint32
		stack    [256]byte
		joined   = stack[:0]
	)
	for i, f := range l.fields {
		if f.kind != kindString || present&(1<<i) == 0 {
			continue
		}
		val := frame[spans[i].start:spans[i].end]
		var (
			body []byte
			ok   bool
		)
		if plain&(1<<i) != 0 {
			body, ok = val[1:len(val)-1], true // a string, scanned already
		} else {
			body, ok = plainString(val)
		}
		if ok {
			plainSet |= 1 << i
			if alias {
				if len(body) > 0 {
					v.Field(f.index).SetString(unsafe.String(&body[0], len(body)))
				}
				continue
			}
			joined = append(joined, body...)
		}
	}
	if !alias {
		all := string(joined)
		for i, f := range l.fields {
			if plainSet&(1<<i) != 0 {
				n := spans[i].end - spans[i].start - 2
				v.Field(f.index).SetString(all[:n])
				all = all[n:]
			}
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
		val := frame[s.start:s.end:s.end] // an append to it copies
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
	_, err := eachMember(val, 0, func(key []byte, plain bool, v span, _, _ bool) error {
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

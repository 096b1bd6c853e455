// Package updateops applies the UpdateOp lists of state::update and
// stream::update (spec §4.3) to a JSON document.
//
// An op list is applied in order. An op that cannot be applied is skipped
// and reported as an OpError (its index, a dotted code such as
// "increment.not_number", and a message); the others still apply. That is
// how iii behaves: update never fails as a whole for a bad op, it returns the
// errors beside the new value.
//
// Paths: a string path is split on dots ("a.b" is key b of object a); a
// list of strings gives the segments literally (for keys holding a dot); an
// empty or absent path is the document root. iii itself reads a string path
// as one literal key, so "a.b" differs only for keys containing dots.
//
// Ops:
//
//	set        {path, value}      put value at path, creating missing objects on the way
//	merge      {path?, value}     shallow-merge the object value into the object at path;
//	                              missing or non-object objects on the way are replaced by {}
//	increment  {path, by}         add by to the number at path (missing: by)
//	decrement  {path, by}         subtract by (missing: -by)
//	append     {path?, value}     push onto the array at path, or concatenate a string
//	                              onto the string at path; a missing target becomes
//	                              [value] (or the string itself, at the root or one level deep)
//	remove     {path}             delete the key at path (root: the document becomes null)
package updateops

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Op types.
const (
	TypeSet       = "set"
	TypeMerge     = "merge"
	TypeIncrement = "increment"
	TypeDecrement = "decrement"
	TypeAppend    = "append"
	TypeRemove    = "remove"
)

// Bounds on paths and merge values (as iii's).
const (
	MaxPathDepth    = 32
	MaxSegmentBytes = 256
	MaxMergeDepth   = 16
	MaxMergeTopKeys = 1024
)

// protoKeys are rejected as path segments and merge keys: they are
// prototype-pollution sinks for JavaScript consumers of the document.
var protoKeys = []string{"__proto__", "constructor", "prototype"}

// ErrDecode is wrapped by every op-list decoding error.
var ErrDecode = errors.New("updateops: invalid op")

// Op is one update operation, as decoded from spec §4.3 UpdateOp JSON.
type Op struct {
	Type string
	// Path is the list of segments; empty is the document root.
	Path []string
	// Value is the op's JSON value (set, merge, append); nil means null.
	Value json.RawMessage
	// By is the amount of increment/decrement.
	By json.Number
}

// OpError reports an op that was skipped.
type OpError struct {
	OpIndex int    `json:"op_index"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e OpError) Error() string {
	return fmt.Sprintf("op %d: %s: %s", e.OpIndex, e.Code, e.Message)
}

type wireOp struct {
	Type  *string         `json:"type"`
	Path  json.RawMessage `json:"path"`
	Value json.RawMessage `json:"value"`
	By    json.RawMessage `json:"by"`
}

// UnmarshalJSON decodes a wire UpdateOp. Unknown types, a path that is
// neither a string nor a list of strings, and a missing or non-numeric
// "by" of increment/decrement are errors (wrapping ErrDecode).
func (o *Op) UnmarshalJSON(data []byte) error {
	var w wireOp
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %v", ErrDecode, err)
	}
	if w.Type == nil {
		return fmt.Errorf("%w: missing \"type\" (one of set, merge, increment, decrement, append, remove)", ErrDecode)
	}
	op := Op{Type: *w.Type}
	switch op.Type {
	case TypeSet, TypeMerge, TypeIncrement, TypeDecrement, TypeAppend, TypeRemove:
	default:
		return fmt.Errorf("%w: unknown type %q (one of set, merge, increment, decrement, append, remove)", ErrDecode, op.Type)
	}
	path, err := decodePath(w.Path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDecode, op.Type, err)
	}
	op.Path = path
	if !isNull(w.Value) {
		op.Value = w.Value
	}
	if op.Type == TypeIncrement || op.Type == TypeDecrement {
		if isNull(w.By) {
			return fmt.Errorf("%w: %s: \"by\" is required", ErrDecode, op.Type)
		}
		d := json.NewDecoder(bytes.NewReader(w.By))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			return fmt.Errorf("%w: %s: \"by\": %v", ErrDecode, op.Type, err)
		}
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%w: %s: \"by\" must be a number, got %s", ErrDecode, op.Type, typeName(v))
		}
		op.By = n
	}
	*o = op
	return nil
}

// MarshalJSON encodes the op in wire form (path as a list of segments).
func (o Op) MarshalJSON() ([]byte, error) {
	w := map[string]any{"type": o.Type}
	if len(o.Path) > 0 {
		w["path"] = o.Path
	}
	if o.Value != nil {
		w["value"] = o.Value
	} else if o.Type == TypeSet || o.Type == TypeMerge || o.Type == TypeAppend {
		w["value"] = nil
	}
	if o.By != "" {
		w["by"] = o.By
	}
	return json.Marshal(w)
}

// ParseOps decodes a JSON array of UpdateOps. The error names the index of
// the first bad op and wraps ErrDecode.
func ParseOps(data json.RawMessage) ([]Op, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		return nil, fmt.Errorf("%w: ops must be a list: %v", ErrDecode, err)
	}
	ops := make([]Op, len(raws))
	for i, r := range raws {
		if err := json.Unmarshal(r, &ops[i]); err != nil {
			return nil, fmt.Errorf("ops[%d]: %w", i, err)
		}
	}
	return ops, nil
}

// ParsePath splits a dotted path into segments; "" is the root (nil).
func ParsePath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, ".")
}

func decodePath(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return ParsePath(s), nil
	}
	var segs []string
	if err := json.Unmarshal(raw, &segs); err == nil {
		if len(segs) == 0 {
			return nil, nil
		}
		return segs, nil
	}
	return nil, errors.New("\"path\" must be a string or a list of strings")
}

func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// Apply applies ops to doc in order and returns the new document and the
// ops that were skipped. A nil (empty) doc means "no value stored": it
// starts as {} — and a root increment, decrement or append then starts from
// nothing rather than from {}. A doc that is not valid JSON is an error.
func Apply(doc json.RawMessage, ops []Op) (json.RawMessage, []OpError, error) {
	a := applier{missing: len(bytes.TrimSpace(doc)) == 0}
	if a.missing {
		a.cur = map[string]any{}
	} else {
		v, err := decode(doc)
		if err != nil {
			return nil, nil, fmt.Errorf("updateops: stored document: %w", err)
		}
		a.cur = v
	}
	for i := range ops {
		if err := a.apply(&ops[i]); err != nil {
			err.OpIndex = i
			a.errs = append(a.errs, *err)
		}
	}
	out, err := encode(a.cur)
	if err != nil {
		return nil, a.errs, fmt.Errorf("updateops: encode result: %w", err)
	}
	return out, a.errs, nil
}

type applier struct {
	cur     any
	missing bool // cur is the {} standing in for a missing document
	errs    []OpError
}

func opErr(code, format string, args ...any) *OpError {
	return &OpError{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (a *applier) apply(op *Op) *OpError {
	if err := checkPath(op.Type, op.Path); err != nil {
		return err
	}
	var value any
	if op.Type == TypeSet || op.Type == TypeMerge || op.Type == TypeAppend {
		if op.Value != nil {
			v, err := decode(op.Value)
			if err != nil {
				return opErr(op.Type+".invalid_value", "value is not valid JSON: %v", err)
			}
			value = v
		}
	}
	var err *OpError
	switch op.Type {
	case TypeSet:
		err = a.set(op.Path, value)
	case TypeMerge:
		err = a.merge(op.Path, value)
	case TypeIncrement:
		err = a.add(op.Type, op.Path, op.By, false)
	case TypeDecrement:
		err = a.add(op.Type, op.Path, op.By, true)
	case TypeAppend:
		err = a.append(op.Path, value)
	case TypeRemove:
		err = a.remove(op.Path)
	default:
		err = opErr("op.unknown_type", "unknown op type %q", op.Type)
	}
	if err == nil {
		a.missing = false
	}
	return err
}

func checkPath(op string, path []string) *OpError {
	if len(path) > MaxPathDepth {
		return opErr(op+".path.too_deep", "path depth %d exceeds the maximum of %d", len(path), MaxPathDepth)
	}
	for _, s := range path {
		switch {
		case s == "":
			return opErr(op+".path.empty_segment", "path %s contains an empty segment", label(path))
		case len(s) > MaxSegmentBytes:
			return opErr(op+".path.segment_too_long", "path segment of %d bytes exceeds the maximum of %d", len(s), MaxSegmentBytes)
		case isProtoKey(s):
			return opErr(op+".path.proto_polluted", "path segment %q is not allowed (prototype pollution)", s)
		}
	}
	return nil
}

func isProtoKey(k string) bool {
	for _, p := range protoKeys {
		if k == p {
			return true
		}
	}
	return false
}

// parent walks to the object holding the last segment of path. With create,
// missing objects on the way are created; a non-object on the way is an
// error (code "<op>.target_not_object"). Without create a missing object
// returns (nil, nil).
func (a *applier) parent(op string, path []string, create bool) (map[string]any, *OpError) {
	obj, ok := a.cur.(map[string]any)
	if !ok {
		return nil, opErr(op+".target_not_object", "cannot %s at path %s: the document is %s, expected object", op, label(path), typeName(a.cur))
	}
	for i, seg := range path[:len(path)-1] {
		next, exists := obj[seg]
		if !exists {
			if !create {
				return nil, nil
			}
			m := map[string]any{}
			obj[seg] = m
			obj = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			return nil, opErr(op+".target_not_object", "cannot %s at path %s: %s is %s, expected object", op, label(path), label(path[:i+1]), typeName(next))
		}
		obj = m
	}
	return obj, nil
}

// walkOrCreate returns the object at path, replacing missing and
// non-object nodes (the root included) with {} (RFC 7396 style, as iii's
// merge and nested append do).
func (a *applier) walkOrCreate(path []string) map[string]any {
	obj, ok := a.cur.(map[string]any)
	if !ok {
		obj = map[string]any{}
		a.cur = obj
	}
	for _, seg := range path {
		next, ok := obj[seg].(map[string]any)
		if !ok {
			next = map[string]any{}
			obj[seg] = next
		}
		obj = next
	}
	return obj
}

func (a *applier) set(path []string, value any) *OpError {
	if len(path) == 0 {
		a.cur = value
		return nil
	}
	obj, err := a.parent(TypeSet, path, true)
	if err != nil {
		return err
	}
	obj[path[len(path)-1]] = value
	return nil
}

func (a *applier) merge(path []string, value any) *OpError {
	m, ok := value.(map[string]any)
	if !ok {
		return opErr("merge.value.not_an_object", "merge value must be a JSON object, got %s", typeName(value))
	}
	if len(m) > MaxMergeTopKeys {
		return opErr("merge.value.too_many_keys", "merge value has %d top-level keys, exceeds the maximum of %d", len(m), MaxMergeTopKeys)
	}
	for k := range m {
		if isProtoKey(k) {
			return opErr("merge.value.proto_polluted", "merge value key %q is not allowed (prototype pollution)", k)
		}
	}
	if d := depth(value); d > MaxMergeDepth {
		return opErr("merge.value.too_deep", "merge value nesting depth %d exceeds the maximum of %d", d, MaxMergeDepth)
	}
	var target map[string]any
	if len(path) == 0 {
		t, ok := a.cur.(map[string]any)
		if !ok {
			return opErr("merge.target_not_object", "cannot merge into the document: it is %s, expected object", typeName(a.cur))
		}
		target = t
	} else {
		target = a.walkOrCreate(path)
	}
	for k, v := range m {
		target[k] = v
	}
	return nil
}

func (a *applier) add(op string, path []string, by json.Number, negate bool) *OpError {
	if len(path) == 0 {
		if a.missing {
			v, err := addNumber(json.Number("0"), by, negate)
			if err != nil {
				return opErr(op+".overflow", "%s by %s: %v", op, by, err)
			}
			a.cur = v
			return nil
		}
		n, ok := a.cur.(json.Number)
		if !ok {
			return opErr(op+".not_number", "expected a number at path %s, got %s", label(path), typeName(a.cur))
		}
		v, err := addNumber(n, by, negate)
		if err != nil {
			return opErr(op+".overflow", "%s %s by %s: %v", op, n, by, err)
		}
		a.cur = v
		return nil
	}
	obj, err := a.parent(op, path, true)
	if err != nil {
		return err
	}
	leaf := path[len(path)-1]
	cur, exists := obj[leaf]
	n := json.Number("0")
	if exists {
		var ok bool
		if n, ok = cur.(json.Number); !ok {
			return opErr(op+".not_number", "expected a number at path %s, got %s", label(path), typeName(cur))
		}
	}
	v, aerr := addNumber(n, by, negate)
	if aerr != nil {
		return opErr(op+".overflow", "%s %s by %s at path %s: %v", op, n, by, label(path), aerr)
	}
	obj[leaf] = v
	return nil
}

// addNumber computes n+by (n-by with negate), exactly for integers and in
// float64 when either is fractional.
func addNumber(n, by json.Number, negate bool) (json.Number, error) {
	ni, err1 := strconv.ParseInt(string(n), 10, 64)
	bi, err2 := strconv.ParseInt(string(by), 10, 64)
	if err1 == nil && err2 == nil {
		if negate {
			if bi == math.MinInt64 {
				return "", errors.New("integer overflow")
			}
			bi = -bi
		}
		s := ni + bi
		if (bi > 0 && s < ni) || (bi < 0 && s > ni) {
			return "", errors.New("integer overflow")
		}
		return json.Number(strconv.FormatInt(s, 10)), nil
	}
	nf, err1 := n.Float64()
	bf, err2 := by.Float64()
	if err1 != nil || err2 != nil {
		return "", errors.New("number out of range")
	}
	if negate {
		bf = -bf
	}
	s := nf + bf
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return "", errors.New("number out of range")
	}
	return json.Number(strconv.FormatFloat(s, 'g', -1, 64)), nil
}

func (a *applier) append(path []string, value any) *OpError {
	switch len(path) {
	case 0:
		if a.missing {
			a.cur = nil
		}
		v, err := appendTo(a.cur, value, path)
		if err != nil {
			return err
		}
		a.cur = v
		return nil
	case 1:
		obj, ok := a.cur.(map[string]any)
		if !ok {
			return opErr("append.target_not_object", "cannot append at path %s: the document is %s, expected object", label(path), typeName(a.cur))
		}
		cur, exists := obj[path[0]]
		if !exists {
			obj[path[0]] = initialAppend(value)
			return nil
		}
		v, err := appendTo(cur, value, path)
		if err != nil {
			return err
		}
		obj[path[0]] = v
		return nil
	}
	if _, ok := a.cur.(map[string]any); !ok {
		return opErr("append.target_not_object", "cannot append at path %s: the document is %s, expected object", label(path), typeName(a.cur))
	}
	obj := a.walkOrCreate(path[:len(path)-1])
	leaf := path[len(path)-1]
	cur, exists := obj[leaf]
	if !exists {
		obj[leaf] = []any{value}
		return nil
	}
	v, err := appendTo(cur, value, path)
	if err != nil {
		return err
	}
	obj[leaf] = v
	return nil
}

func appendTo(target, value any, path []string) (any, *OpError) {
	switch t := target.(type) {
	case []any:
		return append(t, value), nil
	case string:
		s, ok := value.(string)
		if !ok {
			return nil, opErr("append.type_mismatch", "cannot append %s to the string at path %s: expected a string value", typeName(value), label(path))
		}
		return t + s, nil
	case nil:
		return initialAppend(value), nil
	}
	return nil, opErr("append.type_mismatch", "cannot append at path %s: target is %s, expected array, string, null or missing", label(path), typeName(target))
}

func initialAppend(value any) any {
	if s, ok := value.(string); ok {
		return s
	}
	return []any{value}
}

func (a *applier) remove(path []string) *OpError {
	if len(path) == 0 {
		a.cur = nil
		return nil
	}
	obj, err := a.parent(TypeRemove, path, false)
	if err != nil || obj == nil {
		return err
	}
	delete(obj, path[len(path)-1])
	return nil
}

func label(path []string) string {
	if len(path) == 0 {
		return "(root)"
	}
	return strconv.Quote(strings.Join(path, "."))
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func depth(v any) int {
	switch t := v.(type) {
	case map[string]any:
		d := 0
		for _, e := range t {
			d = max(d, depth(e))
		}
		return d + 1
	case []any:
		d := 0
		for _, e := range t {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 0
}

func decode(raw json.RawMessage) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func encode(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

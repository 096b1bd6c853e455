package observe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// oval is a JSON value that keeps its object keys in order (the filter's
// normal form keeps operands as written) and its compact encoding.
type oval struct {
	kind byte
	keys []string
	vals []*oval
	arr  []*oval
	str  string
	num  string
	b    bool
	raw  []byte // compact JSON of this value
}

const (
	kNull byte = iota
	kBool
	kNumber
	kString
	kArray
	kObject
)

func (v *oval) kindName() string {
	switch v.kind {
	case kNull:
		return "null"
	case kBool:
		return "a boolean"
	case kNumber:
		return "a number"
	case kString:
		return "a string"
	case kArray:
		return "an array"
	}
	return "an object"
}

// value is v as encoding/json decodes it into an any.
func (v *oval) value() any {
	var x any
	json.Unmarshal(v.raw, &x) // v.raw is valid compact JSON
	return x
}

var errTooDeep = errors.New("nested too deep")

// decodeOrdered decodes compact JSON into an oval. A key given twice keeps
// its first position and its last value, as serde_json reads it.
func decodeOrdered(data []byte) (*oval, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := decodeValue(d, 1)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err == nil {
		return nil, fmt.Errorf("trailing data")
	}
	return v, nil
}

func decodeValue(d *json.Decoder, level int) (*oval, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	v := &oval{}
	switch t := tok.(type) {
	case nil:
		v.kind = kNull
	case bool:
		v.kind, v.b = kBool, t
	case json.Number:
		v.kind, v.num = kNumber, t.String()
	case string:
		v.kind, v.str = kString, t
	case json.Delim:
		if level > MaxJSONDepth {
			return nil, fmt.Errorf("the filter nests more than %d arrays / objects: %w", MaxJSONDepth, errTooDeep)
		}
		if t == '[' {
			v.kind = kArray
			for d.More() {
				it, err := decodeValue(d, level+1)
				if err != nil {
					return nil, err
				}
				v.arr = append(v.arr, it)
			}
		} else {
			v.kind = kObject
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, err
				}
				key, _ := kt.(string)
				it, err := decodeValue(d, level+1)
				if err != nil {
					return nil, err
				}
				if i := slices.Index(v.keys, key); i >= 0 {
					v.vals[i] = it
				} else {
					v.keys = append(v.keys, key)
					v.vals = append(v.vals, it)
				}
			}
		}
		if _, err := d.Token(); err != nil { // the closing delimiter
			return nil, err
		}
	}
	v.raw = rawOf(v)
	return v, nil
}

// rawOf is the compact encoding of v (a duplicate key written once).
func rawOf(v *oval) []byte {
	switch v.kind {
	case kObject:
		b := []byte{'{'}
		for i, k := range v.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendKey(b, k)
			b = append(b, v.vals[i].raw...)
		}
		return append(b, '}')
	case kArray:
		b := []byte{'['}
		for i, it := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, it.raw...)
		}
		return append(b, ']')
	case kString:
		return appendJSONString(nil, v.str)
	case kNumber:
		return []byte(v.num)
	case kBool:
		if v.b {
			return []byte("true")
		}
		return []byte("false")
	}
	return []byte("null")
}

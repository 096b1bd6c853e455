package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// decoder is a strict YAML-node-to-Go decoder: every mapping key must name a
// field, every scalar must have the right YAML type, and every failure is an
// *Error carrying the file, the line and the dotted key path. yaml.v3's own
// KnownFields mode loses the line once a sub-tree is kept as a yaml.Node, and
// it silently truncates 1.5 into an int; this walker does neither.
//
// Struct fields are matched by their `yaml:"name"` tag (lower-cased field
// name without one; "-" skips the field). A null value leaves the field as it
// was, so defaults survive "key:" and "key: ~". Fields of type yaml.Node keep
// the sub-tree for later decoding; fields of type at[T] record the line.
type decoder struct {
	file string
}

var (
	nodeType        = reflect.TypeFor[yaml.Node]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// positioned is implemented by at[T]: the walker stores the value's line and
// decodes into its target.
type positioned interface {
	setLine(line int)
	target() reflect.Value
}

// at is a decoded value with the line it came from (0: not in the file).
type at[T any] struct {
	V    T
	Line int
}

func (a *at[T]) setLine(line int)      { a.Line = line }
func (a *at[T]) target() reflect.Value { return reflect.ValueOf(&a.V).Elem() }

func (d *decoder) errorf(n *yaml.Node, path string, kind error, format string, args ...any) error {
	return &Error{File: d.file, Line: n.Line, Key: path, Reason: fmt.Sprintf(format, args...), Kind: kind}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// decode decodes n into v, which must be settable.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) error {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if v.CanAddr() {
		if p, ok := v.Addr().Interface().(positioned); ok {
			p.setLine(n.Line)
			return d.decode(n, path, p.target())
		}
	}
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return nil
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		return d.leaf(n, path, v, "a "+v.Type().String())
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, path, v.Elem())
	case reflect.Struct:
		return d.structure(n, path, v)
	case reflect.Map:
		return d.mapping(n, path, v)
	case reflect.Slice:
		return d.sequence(n, path, v)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return d.typeError(n, path, "a string")
		}
		v.SetString(n.Value)
		return nil
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			return d.typeError(n, path, "a boolean")
		}
		return d.leaf(n, path, v, "a boolean")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			return d.typeError(n, path, "an integer")
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			return d.errorf(n, path, ErrConfigInvalid, "integer %s is out of range", n.Value)
		}
		v.SetInt(i)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			return d.typeError(n, path, "a non-negative integer")
		}
		var u uint64
		if err := n.Decode(&u); err != nil || v.OverflowUint(u) {
			return d.errorf(n, path, ErrConfigInvalid, "integer %s is out of range", n.Value)
		}
		v.SetUint(u)
		return nil
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") {
			return d.typeError(n, path, "a number")
		}
		return d.leaf(n, path, v, "a number")
	}
	return d.leaf(n, path, v, "a "+v.Type().String())
}

// leaf hands n to yaml.v3 and turns its error into an *Error.
func (d *decoder) leaf(n *yaml.Node, path string, v reflect.Value, want string) error {
	if err := n.Decode(v.Addr().Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return d.typeError(n, path, want)
		}
		return d.errorf(n, path, ErrConfigInvalid, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

func (d *decoder) typeError(n *yaml.Node, path, want string) error {
	return d.errorf(n, path, ErrConfigType, "want %s, got %s", want, describe(n))
}

// describe names what a node holds, for type errors.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("string %q", n.Value)
		case "!!int":
			return "integer " + n.Value
		case "!!float":
			return "number " + n.Value
		case "!!bool":
			return "boolean " + n.Value
		}
		return fmt.Sprintf("%s %q", n.ShortTag(), n.Value)
	}
	return "an unsupported YAML node"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// pairs walks a mapping's key/value pairs, rejecting non-string and
// duplicate keys.
func (d *decoder) pairs(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node) error) error {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return d.errorf(k, path, ErrConfigType, "want a string key, got %s", describe(k))
		}
		if first, dup := seen[k.Value]; dup {
			return d.errorf(k, join(path, k.Value), ErrConfigInvalid, "duplicate key (first on line %d)", first)
		}
		seen[k.Value] = k.Line
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) error {
	if n.Kind != yaml.MappingNode {
		return d.typeError(n, path, "a mapping")
	}
	fields := fieldsOf(v.Type())
	return d.pairs(n, path, func(key string, k, val *yaml.Node) error {
		idx, ok := fields[key]
		if !ok {
			return d.errorf(k, join(path, key), ErrConfigUnknownKey, "unknown key (known: %s)", knownKeys(v.Type()))
		}
		return d.decode(val, join(path, key), v.Field(idx))
	})
}

func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) error {
	if v.Type().Key().Kind() != reflect.String {
		return d.leaf(n, path, v, "a mapping")
	}
	if n.Kind != yaml.MappingNode {
		return d.typeError(n, path, "a mapping")
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(v.Type(), len(n.Content)/2))
	}
	return d.pairs(n, path, func(key string, _, val *yaml.Node) error {
		elem := reflect.New(v.Type().Elem()).Elem()
		if err := d.decode(val, join(path, key), elem); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem)
		return nil
	})
}

func (d *decoder) sequence(n *yaml.Node, path string, v reflect.Value) error {
	if n.Kind != yaml.SequenceNode {
		return d.typeError(n, path, "a list")
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		if err := d.decode(item, fmt.Sprintf("%s[%d]", path, i), s.Index(i)); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

// fieldsOf maps YAML keys to the exported fields of struct type t.
func fieldsOf(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if name, ok := keyOf(t.Field(i)); ok {
			m[name] = i
		}
	}
	return m
}

func keyOf(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch tag {
	case "-":
		return "", false
	case "":
		return strings.ToLower(f.Name), true
	}
	return tag, true
}

func knownKeys(t reflect.Type) string {
	var keys []string
	for i := range t.NumField() {
		if name, ok := keyOf(t.Field(i)); ok {
			keys = append(keys, name)
		}
	}
	return strings.Join(keys, ", ")
}

// elemOf returns the value a non-nil pointer points to, or the zero Value.
func elemOf(p any) reflect.Value {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return reflect.Value{}
	}
	return v.Elem()
}

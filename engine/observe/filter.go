// Package observe holds the pure parts of the engine's observers: the
// filter language the SDKs and the engine share (iii-filter v1: paths over
// input, output, error, caller and metadata with explicit operators), its
// normal form, the checks of filter paths against a function's formats, and
// the small JSON Schema subset observers' args are checked against. It does
// no I/O.
package observe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Limits of the filter language, as the SDKs enforce them.
const (
	MaxDepth        = 8    // filter nesting; the top-level filter is depth 1
	MaxNodes        = 64   // operators, $or and $not
	MaxSetItems     = 256  // items of one $in / $nin
	MaxPathSegments = 16   // segments after the root
	MaxEncodedBytes = 8192 // compact JSON of the filter as written
	MaxLiteralDepth = 32   // arrays / objects nested in one literal
	MaxJSONDepth    = 120  // arrays / objects nested in the whole filter
	maxSafeInteger  = 1 << 53
)

// Error codes of filter and args errors (the observe protocol's).
const (
	CodeInvalidFilter     = "INVALID_FILTER"
	CodeInvalidFilterPath = "INVALID_FILTER_PATH"
	CodeInvalidArgs       = "INVALID_ARGS"
	CodeInvalidArgsFormat = "INVALID_ARGS_FORMAT"
)

// Error is a filter or args error with its protocol code.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func invalid(format string, args ...any) *Error {
	return &Error{Code: CodeInvalidFilter, Message: fmt.Sprintf(format, args...)}
}

// Roots a filter path may start at.
var roots = []string{"input", "output", "error", "caller", "metadata"}

// Doc is what a filter is evaluated on: the raw JSON of each root; nil is
// an absent root (the bytes null are the value null).
type Doc struct {
	Input, Output, Error, Caller, Metadata json.RawMessage
}

// Filter is a validated, compiled filter.
type Filter struct {
	root       node // nil: matches everything
	normalized json.RawMessage
	paths      []*pathRef // every path clause, for the schema checks
}

// MatchAll is the filter {}.
var MatchAll = &Filter{normalized: json.RawMessage("{}")}

// Parse validates a filter as an observer wrote it and compiles it. Empty
// or null src is {} (match everything). Errors are *Error with
// INVALID_FILTER.
func Parse(src json.RawMessage) (*Filter, error) {
	src = bytes.TrimSpace(src)
	if len(src) == 0 || string(src) == "null" {
		return MatchAll, nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, src); err != nil {
		return nil, invalid("the filter is not JSON: %v", err)
	}
	if compact.Len() > MaxEncodedBytes {
		return nil, invalid("the filter encodes to more than %d bytes", MaxEncodedBytes)
	}
	v, err := decodeOrdered(compact.Bytes())
	if err != nil {
		return nil, invalid("the filter is not JSON: %v", err)
	}
	if v.kind != kObject {
		return nil, invalid("a filter must be a JSON object, found %s", v.kindName())
	}
	p := &parser{}
	n, norm, err := p.filter(v, 1, false)
	if err != nil {
		return nil, err
	}
	f := &Filter{normalized: norm, paths: p.paths}
	if _, all := n.(andNode); !all || len(n.(andNode)) > 0 {
		f.root = n
	}
	return f, nil
}

// Normalized is the filter's normal form: the clauses of each filter
// flattened into one {"$and": [{clause}, ...]} sorted by key and operand,
// duplicates dropped, operators sorted by name; {} for no clauses.
func (f *Filter) Normalized() json.RawMessage { return f.normalized }

// MatchesAll reports whether the filter is {}.
func (f *Filter) MatchesAll() bool { return f.root == nil }

// Matches evaluates the filter on doc. It never fails: a root that is not
// JSON reads as absent.
func (f *Filter) Matches(doc Doc) bool {
	if f.root == nil {
		return true
	}
	d := &docView{raw: [5]json.RawMessage{doc.Input, doc.Output, doc.Error, doc.Caller, doc.Metadata}}
	return f.root.eval(d, nil)
}

// docView decodes each root of a Doc once, when a path first reaches it.
type docView struct {
	raw     [5]json.RawMessage
	decoded [5]any
	done    [5]bool
	present [5]bool
}

func (d *docView) root(i int) (any, bool) {
	if !d.done[i] {
		d.done[i] = true
		if r := d.raw[i]; len(r) > 0 {
			var v any
			if json.Unmarshal(r, &v) == nil {
				d.decoded[i], d.present[i] = v, true
			}
		}
	}
	return d.decoded[i], d.present[i]
}

// absent marks a path that resolves to nothing.
type absentT struct{}

var absent any = absentT{}

type node interface {
	eval(d *docView, el any) bool
}

type andNode []node
type orNode []node
type notNode struct{ n node }

func (a andNode) eval(d *docView, el any) bool {
	for _, n := range a {
		if !n.eval(d, el) {
			return false
		}
	}
	return true
}

func (o orNode) eval(d *docView, el any) bool {
	for _, n := range o {
		if n.eval(d, el) {
			return true
		}
	}
	return false
}

func (n notNode) eval(d *docView, el any) bool { return !n.n.eval(d, el) }

type segment struct {
	key   string
	index int // -1: not a canonical index
}

type path struct {
	raw  string
	root int // index into roots; -1 for @
	segs []segment
}

type pathRef struct {
	p  path
	in *pathRef // the $any clause's path an @ path is relative to, or nil
}

func (p path) resolve(d *docView, el any) any {
	var cur any
	if p.root < 0 {
		cur = el
	} else {
		v, ok := d.root(p.root)
		if !ok {
			return absent
		}
		cur = v
	}
	for _, s := range p.segs {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[s.key]
			if !ok {
				return absent
			}
			cur = v
		case []any:
			if s.index < 0 || s.index >= len(c) {
				return absent
			}
			cur = c[s.index]
		default:
			return absent
		}
	}
	return cur
}

type pathNode struct {
	p   path
	ops []op
}

func (n *pathNode) eval(d *docView, el any) bool {
	v := n.p.resolve(d, el)
	for _, o := range n.ops {
		if !o(v, d) {
			return false
		}
	}
	return true
}

// op tests the value a path resolved to (absent when it resolved to nothing).
type op func(v any, d *docView) bool

// parser validates and compiles one filter, building its normal form.
type parser struct {
	nodes int
	paths []*pathRef
	any   *pathRef // the $any clause being parsed, for @ paths
}

func (p *parser) take() error {
	p.nodes++
	if p.nodes > MaxNodes {
		return invalid("more than %d operator / clause nodes", MaxNodes)
	}
	return nil
}

// clause is one normalized clause {key: operand}.
type clause struct {
	key       string
	operand   []byte // normal form of the operand
	canonical string // the operand with object keys sorted: the tie-breaker
	n         node
}

// filter parses one filter object: its clauses and those of every $and it
// holds, flattened, sorted and deduplicated.
func (p *parser) filter(v *oval, depth int, inAny bool) (node, json.RawMessage, error) {
	if depth > MaxDepth {
		return nil, nil, invalid("filters nested deeper than %d levels", MaxDepth)
	}
	var clauses []clause
	pending := []*oval{v}
	for len(pending) > 0 {
		cur := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		if cur.kind != kObject {
			return nil, nil, invalid("a filter must be a JSON object, found %s", cur.kindName())
		}
		for i, key := range cur.keys {
			val := cur.vals[i]
			switch {
			case key == "$and":
				items, err := filterList("$and", val)
				if err != nil {
					return nil, nil, err
				}
				for j := len(items) - 1; j >= 0; j-- {
					pending = append(pending, items[j])
				}
			case key == "$or":
				if err := p.take(); err != nil {
					return nil, nil, err
				}
				items, err := filterList("$or", val)
				if err != nil {
					return nil, nil, err
				}
				children := make(orNode, 0, len(items))
				enc := []byte{'['}
				for j, it := range items {
					n, norm, err := p.filter(it, depth+1, inAny)
					if err != nil {
						return nil, nil, err
					}
					children = append(children, n)
					if j > 0 {
						enc = append(enc, ',')
					}
					enc = append(enc, norm...)
				}
				enc = append(enc, ']')
				clauses = append(clauses, newClause("$or", enc, children))
			case key == "$not":
				if err := p.take(); err != nil {
					return nil, nil, err
				}
				if val.kind != kObject {
					return nil, nil, invalid("`$not` takes a filter object, found %s", val.kindName())
				}
				n, norm, err := p.filter(val, depth+1, inAny)
				if err != nil {
					return nil, nil, err
				}
				clauses = append(clauses, newClause("$not", norm, notNode{n}))
			case isValueOperator(key):
				return nil, nil, invalid("`%s` needs a path: write {\"<path>\": {\"%s\": ...}}", key, key)
			case strings.HasPrefix(key, "$"):
				return nil, nil, invalid("unknown operator `%s` (a filter holds paths, `$and`, `$or` and `$not`)", key)
			default:
				pa, err := parsePath(key, inAny)
				if err != nil {
					return nil, nil, err
				}
				ref := &pathRef{p: pa, in: p.any}
				p.paths = append(p.paths, ref)
				saved := p.any
				p.any = ref
				ops, norm, err := p.operatorObject(key, val, depth)
				p.any = saved
				if err != nil {
					return nil, nil, err
				}
				clauses = append(clauses, newClause(key, norm, &pathNode{p: pa, ops: ops}))
			}
		}
	}
	slices.SortStableFunc(clauses, func(a, b clause) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return strings.Compare(a.canonical, b.canonical)
	})
	clauses = slices.CompactFunc(clauses, func(a, b clause) bool { return a.key == b.key && a.canonical == b.canonical })
	if len(clauses) == 0 {
		return andNode{}, json.RawMessage("{}"), nil
	}
	nodes := make(andNode, 0, len(clauses))
	enc := []byte(`{"$and":[`)
	for i, c := range clauses {
		if i > 0 {
			enc = append(enc, ',')
		}
		enc = append(enc, '{')
		enc = appendKey(enc, c.key)
		enc = append(enc, c.operand...)
		enc = append(enc, '}')
		nodes = append(nodes, c.n)
	}
	enc = append(enc, ']', '}')
	if len(nodes) == 1 {
		return nodes[0], enc, nil
	}
	return nodes, enc, nil
}

func newClause(key string, operand []byte, n node) clause {
	return clause{key: key, operand: operand, canonical: canonical(operand), n: n}
}

func filterList(name string, v *oval) ([]*oval, error) {
	if v.kind != kArray {
		return nil, invalid("`%s` takes an array of filters, found %s", name, v.kindName())
	}
	if len(v.arr) == 0 {
		return nil, invalid("`%s` takes a non-empty array of filters", name)
	}
	return v.arr, nil
}

func isValueOperator(name string) bool {
	switch name {
	case "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$prefix", "$any":
		return true
	}
	return false
}

func (p *parser) operatorObject(path string, v *oval, depth int) ([]op, []byte, error) {
	if v.kind != kObject || slices.ContainsFunc(v.keys, func(k string) bool { return !strings.HasPrefix(k, "$") }) {
		return nil, nil, invalid("`%s`: expected an operator object such as {\"$eq\": ...}; literal values are not allowed", path)
	}
	if len(v.keys) == 0 {
		return nil, nil, invalid("`%s`: empty operator object", path)
	}
	return p.operators(path, v, depth)
}

// operators parses the operators of an operator object, sorted by name.
func (p *parser) operators(path string, v *oval, depth int) ([]op, []byte, error) {
	type parsed struct {
		name string
		o    op
		norm []byte
	}
	var ps []parsed
	for i, name := range v.keys {
		if err := p.take(); err != nil {
			return nil, nil, err
		}
		o, norm, err := p.operator(path, name, v.vals[i], depth)
		if err != nil {
			return nil, nil, err
		}
		ps = append(ps, parsed{name, o, norm})
	}
	slices.SortStableFunc(ps, func(a, b parsed) int { return strings.Compare(a.name, b.name) })
	ops := make([]op, 0, len(ps))
	enc := []byte{'{'}
	for i, x := range ps {
		if i > 0 {
			enc = append(enc, ',')
		}
		enc = appendKey(enc, x.name)
		enc = append(enc, x.norm...)
		ops = append(ops, x.o)
	}
	return ops, append(enc, '}'), nil
}

func (p *parser) operator(path, name string, v *oval, depth int) (op, []byte, error) {
	wrong := func(expected string) error {
		return invalid("`%s`: `%s` takes %s, found %s", path, name, expected, v.kindName())
	}
	switch name {
	case "$eq", "$ne":
		if err := checkLiteral(path, name, v); err != nil {
			return nil, nil, err
		}
		lit := v.value()
		if name == "$eq" {
			return func(x any, _ *docView) bool { return x != absent && jsonEqual(x, lit) }, v.raw, nil
		}
		return func(x any, _ *docView) bool { return x == absent || !jsonEqual(x, lit) }, v.raw, nil
	case "$in", "$nin":
		if v.kind != kArray {
			return nil, nil, wrong("an array")
		}
		if len(v.arr) > MaxSetItems {
			return nil, nil, invalid("`%s`: `%s` has %d items (limit %d)", path, name, len(v.arr), MaxSetItems)
		}
		items := make([]any, 0, len(v.arr))
		for _, it := range v.arr {
			if err := checkLiteral(path, name, it); err != nil {
				return nil, nil, err
			}
			items = append(items, it.value())
		}
		member := func(x any) bool {
			return slices.ContainsFunc(items, func(it any) bool { return jsonEqual(x, it) })
		}
		if name == "$in" {
			return func(x any, _ *docView) bool { return x != absent && member(x) }, v.raw, nil
		}
		return func(x any, _ *docView) bool { return x == absent || !member(x) }, v.raw, nil
	case "$gt", "$gte", "$lt", "$lte":
		accept := map[string]func(int) bool{
			"$gt": func(c int) bool { return c > 0 }, "$gte": func(c int) bool { return c >= 0 },
			"$lt": func(c int) bool { return c < 0 }, "$lte": func(c int) bool { return c <= 0 },
		}[name]
		switch v.kind {
		case kNumber:
			if err := checkNumber(path, name, v); err != nil {
				return nil, nil, err
			}
			bound, _ := strconv.ParseFloat(v.num, 64)
			return func(x any, _ *docView) bool {
				f, ok := x.(float64)
				return ok && accept(cmpFloat(f, bound))
			}, v.raw, nil
		case kString:
			bound := v.str
			return func(x any, _ *docView) bool {
				s, ok := x.(string)
				return ok && accept(strings.Compare(s, bound))
			}, v.raw, nil
		}
		return nil, nil, wrong("a number or a string")
	case "$exists":
		if v.kind != kBool {
			return nil, nil, wrong("a boolean")
		}
		want := v.b
		return func(x any, _ *docView) bool { return (x != absent) == want }, v.raw, nil
	case "$prefix":
		if v.kind != kString {
			return nil, nil, wrong("a string")
		}
		prefix := v.str
		return func(x any, _ *docView) bool {
			s, ok := x.(string)
			return ok && strings.HasPrefix(s, prefix)
		}, v.raw, nil
	case "$any":
		return p.anyOp(path, v, depth)
	case "$and", "$or", "$not":
		return nil, nil, invalid("`%s`: `%s` combines filters and is not a value operator", path, name)
	}
	return nil, nil, invalid("`%s`: unknown operator `%s`", path, name)
}

// anyOp parses $any: an operator object (every key a value operator) or a
// filter over the element (@ paths, $and, $or, $not). {} matches any
// non-empty array.
func (p *parser) anyOp(path string, v *oval, depth int) (op, []byte, error) {
	if v.kind != kObject {
		return nil, nil, invalid("`%s`: `$any` takes an operator object or a filter over `@`, found %s", path, v.kindName())
	}
	if depth+1 > MaxDepth {
		return nil, nil, invalid("filters nested deeper than %d levels", MaxDepth)
	}
	if len(v.keys) > 0 && !slices.ContainsFunc(v.keys, func(k string) bool { return !isValueOperator(k) }) {
		ops, norm, err := p.operators(path, v, depth+1)
		if err != nil {
			return nil, nil, err
		}
		return func(x any, d *docView) bool {
			arr, ok := x.([]any)
			if !ok {
				return false
			}
			for _, it := range arr {
				all := true
				for _, o := range ops {
					if !o(it, d) {
						all = false
						break
					}
				}
				if all {
					return true
				}
			}
			return false
		}, norm, nil
	}
	n, norm, err := p.filter(v, depth+1, true)
	if err != nil {
		return nil, nil, err
	}
	return func(x any, d *docView) bool {
		arr, ok := x.([]any)
		if !ok {
			return false
		}
		for _, it := range arr {
			if n.eval(d, it) {
				return true
			}
		}
		return false
	}, norm, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func checkNumber(path, name string, v *oval) error {
	ok := false
	if i, err := strconv.ParseInt(v.num, 10, 64); err == nil {
		ok = i <= maxSafeInteger && i >= -maxSafeInteger // integers exactly
	} else if f, err := strconv.ParseFloat(v.num, 64); err == nil {
		ok = math.Abs(f) <= maxSafeInteger
	}
	if !ok {
		return invalid("`%s`: `%s` holds the number %s, outside ±2^53", path, name, v.num)
	}
	return nil
}

// checkLiteral checks one literal: numbers within ±2^53, at most
// MaxLiteralDepth nested arrays / objects.
func checkLiteral(path, name string, v *oval) error {
	var walk func(v *oval, level int) error
	walk = func(v *oval, level int) error {
		switch v.kind {
		case kNumber:
			return checkNumber(path, name, v)
		case kArray, kObject:
			if level > MaxLiteralDepth {
				return invalid("`%s`: `%s` nests a literal deeper than %d arrays / objects", path, name, MaxLiteralDepth)
			}
			for _, m := range append(slices.Clone(v.arr), v.vals...) {
				if err := walk(m, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(v, 1)
}

// jsonEqual is JSON deep equality: numbers as doubles, object key order
// ignored, array order kept, no coercion between types.
func jsonEqual(a, b any) bool {
	switch bv := b.(type) {
	case nil:
		return a == nil
	case bool:
		av, ok := a.(bool)
		return ok && av == bv
	case float64:
		av, ok := a.(float64)
		return ok && av == bv
	case string:
		av, ok := a.(string)
		return ok && av == bv
	case []any:
		av, ok := a.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range bv {
			if !jsonEqual(av[i], bv[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		av, ok := a.(map[string]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for k, x := range bv {
			y, ok := av[k]
			if !ok || !jsonEqual(y, x) {
				return false
			}
		}
		return true
	}
	return false
}

// parsePath parses root ("." segment)*; \. and \\ escape inside keys.
func parsePath(raw string, inAny bool) (path, error) {
	var (
		parts []string
		cur   strings.Builder
		any   bool // cur has content
	)
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '\\':
			if i+1 >= len(raw) {
				return path{}, invalid("path `%s`: dangling `\\` at the end", raw)
			}
			n := raw[i+1]
			if n != '.' && n != '\\' {
				return path{}, invalid("path `%s`: invalid escape `\\%c` (only `\\.` and `\\\\` are allowed)", raw, n)
			}
			cur.WriteByte(n)
			any = true
			i++
		case '.':
			if !any {
				return path{}, emptySegment(raw)
			}
			parts = append(parts, cur.String())
			cur.Reset()
			any = false
		default:
			cur.WriteByte(c)
			any = true
		}
	}
	if !any {
		return path{}, emptySegment(raw)
	}
	parts = append(parts, cur.String())
	first := parts[0]
	p := path{raw: raw, root: slices.Index(roots, first)}
	switch {
	case first == "@" && !inAny:
		return path{}, invalid("path `%s`: `@` paths are only allowed inside `$any`", raw)
	case first != "@" && inAny:
		return path{}, invalid("path `%s`: inside `$any` paths start at `@`, the current element", raw)
	case first != "@" && p.root < 0:
		return path{}, invalid("path `%s`: unknown root `%s` (expected input, output, error, caller or metadata)", raw, first)
	}
	if len(parts)-1 > MaxPathSegments {
		return path{}, invalid("path `%s`: %d segments after the root (limit %d)", raw, len(parts)-1, MaxPathSegments)
	}
	for _, k := range parts[1:] {
		p.segs = append(p.segs, segment{key: k, index: canonicalIndex(k)})
	}
	return p, nil
}

func emptySegment(raw string) error {
	if raw == "" {
		return invalid("empty path")
	}
	return invalid("path `%s`: empty segment", raw)
}

func canonicalIndex(s string) int {
	if len(s) == 0 || len(s) > 15 || (len(s) > 1 && s[0] == '0') {
		return -1
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return -1
		}
	}
	n, _ := strconv.Atoi(s)
	return n
}

// appendKey appends "key": without HTML escaping.
func appendKey(b []byte, key string) []byte {
	b = appendJSONString(b, key)
	return append(b, ':')
}

func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// canonical is compact JSON with object keys sorted (encoding/json sorts
// map keys), the tie-breaker between clauses of the same key.
func canonical(raw []byte) string {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return string(raw)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return string(raw)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

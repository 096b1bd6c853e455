package updateops

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// canon re-encodes JSON so that documents compare independently of
// formatting and key order.
func canon(t *testing.T, s string) string {
	t.Helper()
	if s == "" {
		return ""
	}
	v, err := decode(json.RawMessage(s))
	if err != nil {
		t.Fatalf("bad JSON %s: %v", s, err)
	}
	out, err := encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestApply(t *testing.T) {
	tests := []struct {
		name  string
		doc   string // "" = no stored value
		ops   string
		want  string
		codes []string // "index:code" of the skipped ops
	}{
		// set
		{name: "set top-level", doc: `{"a":1}`, ops: `[{"type":"set","path":"b","value":2}]`, want: `{"a":1,"b":2}`},
		{name: "set replaces", doc: `{"a":1}`, ops: `[{"type":"set","path":"a","value":{"x":[1]}}]`, want: `{"a":{"x":[1]}}`},
		{name: "set nested creates objects", doc: `{}`, ops: `[{"type":"set","path":"a.b.c","value":true}]`, want: `{"a":{"b":{"c":true}}}`},
		{name: "set nested keeps siblings", doc: `{"a":{"x":1}}`, ops: `[{"type":"set","path":"a.y","value":2}]`, want: `{"a":{"x":1,"y":2}}`},
		{name: "set path list is literal", doc: `{}`, ops: `[{"type":"set","path":["a.b"],"value":1}]`, want: `{"a.b":1}`},
		{name: "set root", doc: `{"a":1}`, ops: `[{"type":"set","path":"","value":[1,2]}]`, want: `[1,2]`},
		{name: "set root without path", doc: `{"a":1}`, ops: `[{"type":"set","value":"s"}]`, want: `"s"`},
		{name: "set missing value is null", doc: `{"a":1}`, ops: `[{"type":"set","path":"a"}]`, want: `{"a":null}`},
		{name: "set on missing doc", ops: `[{"type":"set","path":"a","value":1}]`, want: `{"a":1}`},
		{name: "set through number", doc: `{"a":5}`, ops: `[{"type":"set","path":"a.b","value":1}]`, want: `{"a":5}`, codes: []string{"0:set.target_not_object"}},
		{name: "set on non-object doc", doc: `[1]`, ops: `[{"type":"set","path":"a","value":1}]`, want: `[1]`, codes: []string{"0:set.target_not_object"}},
		{name: "set on stored null", doc: `null`, ops: `[{"type":"set","path":"a","value":1}]`, want: `null`, codes: []string{"0:set.target_not_object"}},
		{name: "set empty segment", doc: `{}`, ops: `[{"type":"set","path":"a..b","value":1}]`, want: `{}`, codes: []string{"0:set.path.empty_segment"}},
		{name: "set proto key", doc: `{}`, ops: `[{"type":"set","path":"a.__proto__","value":1}]`, want: `{}`, codes: []string{"0:set.path.proto_polluted"}},
		{name: "set too deep", doc: `{}`, ops: `[{"type":"set","path":"` + strings.Repeat("a.", 32) + `a","value":1}]`, want: `{}`, codes: []string{"0:set.path.too_deep"}},
		{name: "set long segment", doc: `{}`, ops: `[{"type":"set","path":"` + strings.Repeat("x", 257) + `","value":1}]`, want: `{}`, codes: []string{"0:set.path.segment_too_long"}},

		// merge
		{name: "merge root", doc: `{"a":1,"b":2}`, ops: `[{"type":"merge","value":{"b":3,"c":4}}]`, want: `{"a":1,"b":3,"c":4}`},
		{name: "merge is shallow", doc: `{"a":{"x":1,"y":2}}`, ops: `[{"type":"merge","value":{"a":{"x":9}}}]`, want: `{"a":{"x":9}}`},
		{name: "merge at path", doc: `{"a":{"x":1}}`, ops: `[{"type":"merge","path":"a","value":{"y":2}}]`, want: `{"a":{"x":1,"y":2}}`},
		{name: "merge at path list", doc: `{}`, ops: `[{"type":"merge","path":["a","b"],"value":{"y":2}}]`, want: `{"a":{"b":{"y":2}}}`},
		{name: "merge replaces non-object on the way", doc: `{"a":3}`, ops: `[{"type":"merge","path":"a.b","value":{"y":2}}]`, want: `{"a":{"b":{"y":2}}}`},
		{name: "merge on missing doc", ops: `[{"type":"merge","value":{"y":2}}]`, want: `{"y":2}`},
		{name: "merge non-object value", doc: `{}`, ops: `[{"type":"merge","value":[1]}]`, want: `{}`, codes: []string{"0:merge.value.not_an_object"}},
		{name: "merge without value", doc: `{}`, ops: `[{"type":"merge"}]`, want: `{}`, codes: []string{"0:merge.value.not_an_object"}},
		{name: "merge proto key", doc: `{}`, ops: `[{"type":"merge","value":{"constructor":1}}]`, want: `{}`, codes: []string{"0:merge.value.proto_polluted"}},
		{name: "merge too deep", doc: `{}`, ops: `[{"type":"merge","value":{"a":` + strings.Repeat("[", 16) + strings.Repeat("]", 16) + `}}]`, want: `{}`, codes: []string{"0:merge.value.too_deep"}},
		{name: "merge into non-object root", doc: `5`, ops: `[{"type":"merge","value":{"a":1}}]`, want: `5`, codes: []string{"0:merge.target_not_object"}},

		// increment / decrement
		{name: "increment existing", doc: `{"n":2}`, ops: `[{"type":"increment","path":"n","by":3}]`, want: `{"n":5}`},
		{name: "increment missing", doc: `{}`, ops: `[{"type":"increment","path":"n","by":3}]`, want: `{"n":3}`},
		{name: "increment nested missing", doc: `{}`, ops: `[{"type":"increment","path":"a.n","by":1}]`, want: `{"a":{"n":1}}`},
		{name: "increment float", doc: `{"n":1.5}`, ops: `[{"type":"increment","path":"n","by":2}]`, want: `{"n":3.5}`},
		{name: "increment by float", doc: `{"n":1}`, ops: `[{"type":"increment","path":"n","by":0.25}]`, want: `{"n":1.25}`},
		{name: "increment big int exact", doc: `{"n":9007199254740993}`, ops: `[{"type":"increment","path":"n","by":1}]`, want: `{"n":9007199254740994}`},
		{name: "increment overflow", doc: `{"n":9223372036854775807}`, ops: `[{"type":"increment","path":"n","by":1}]`, want: `{"n":9223372036854775807}`, codes: []string{"0:increment.overflow"}},
		{name: "increment string", doc: `{"n":"x"}`, ops: `[{"type":"increment","path":"n","by":1}]`, want: `{"n":"x"}`, codes: []string{"0:increment.not_number"}},
		{name: "increment null", doc: `{"n":null}`, ops: `[{"type":"increment","path":"n","by":1}]`, want: `{"n":null}`, codes: []string{"0:increment.not_number"}},
		{name: "increment zero still checks type", doc: `{"n":"x"}`, ops: `[{"type":"increment","path":"n","by":0}]`, want: `{"n":"x"}`, codes: []string{"0:increment.not_number"}},
		{name: "increment through string", doc: `{"a":"s"}`, ops: `[{"type":"increment","path":"a.n","by":1}]`, want: `{"a":"s"}`, codes: []string{"0:increment.target_not_object"}},
		{name: "increment root number", doc: `7`, ops: `[{"type":"increment","by":2}]`, want: `9`},
		{name: "increment root missing", ops: `[{"type":"increment","path":"","by":2}]`, want: `2`},
		{name: "increment root object", doc: `{}`, ops: `[{"type":"increment","by":2}]`, want: `{}`, codes: []string{"0:increment.not_number"}},
		{name: "decrement existing", doc: `{"n":5}`, ops: `[{"type":"decrement","path":"n","by":3}]`, want: `{"n":2}`},
		{name: "decrement missing", doc: `{}`, ops: `[{"type":"decrement","path":"n","by":3}]`, want: `{"n":-3}`},
		{name: "decrement root missing", ops: `[{"type":"decrement","by":3}]`, want: `-3`},
		{name: "decrement bool", doc: `{"n":true}`, ops: `[{"type":"decrement","path":"n","by":1}]`, want: `{"n":true}`, codes: []string{"0:decrement.not_number"}},
		{name: "decrement underflow", doc: `{"n":-9223372036854775808}`, ops: `[{"type":"decrement","path":"n","by":1}]`, want: `{"n":-9223372036854775808}`, codes: []string{"0:decrement.overflow"}},
		{name: "increment then decrement", doc: `{"n":10}`, ops: `[{"type":"increment","path":"n","by":5},{"type":"decrement","path":"n","by":3}]`, want: `{"n":12}`},

		// append
		{name: "append to array", doc: `{"l":[1]}`, ops: `[{"type":"append","path":"l","value":{"k":2}}]`, want: `{"l":[1,{"k":2}]}`},
		{name: "append to string", doc: `{"s":"ab"}`, ops: `[{"type":"append","path":"s","value":"cd"}]`, want: `{"s":"abcd"}`},
		{name: "append missing string", doc: `{}`, ops: `[{"type":"append","path":"s","value":"x"}]`, want: `{"s":"x"}`},
		{name: "append missing other", doc: `{}`, ops: `[{"type":"append","path":"l","value":1}]`, want: `{"l":[1]}`},
		{name: "append to null", doc: `{"l":null}`, ops: `[{"type":"append","path":"l","value":1}]`, want: `{"l":[1]}`},
		{name: "append nested missing is array", doc: `{}`, ops: `[{"type":"append","path":"a.s","value":"x"}]`, want: `{"a":{"s":["x"]}}`},
		{name: "append nested existing", doc: `{"a":{"l":[0]}}`, ops: `[{"type":"append","path":["a","l"],"value":1}]`, want: `{"a":{"l":[0,1]}}`},
		{name: "append root array", doc: `[1]`, ops: `[{"type":"append","value":2}]`, want: `[1,2]`},
		{name: "append root missing", ops: `[{"type":"append","value":{"a":1}}]`, want: `[{"a":1}]`},
		{name: "append root missing string", ops: `[{"type":"append","value":"hi"}]`, want: `"hi"`},
		{name: "append root object", doc: `{}`, ops: `[{"type":"append","value":1}]`, want: `{}`, codes: []string{"0:append.type_mismatch"}},
		{name: "append non-string to string", doc: `{"s":"a"}`, ops: `[{"type":"append","path":"s","value":1}]`, want: `{"s":"a"}`, codes: []string{"0:append.type_mismatch"}},
		{name: "append to object", doc: `{"o":{}}`, ops: `[{"type":"append","path":"o","value":1}]`, want: `{"o":{}}`, codes: []string{"0:append.type_mismatch"}},
		{name: "append path on non-object doc", doc: `[1]`, ops: `[{"type":"append","path":"l","value":1}]`, want: `[1]`, codes: []string{"0:append.target_not_object"}},

		// remove
		{name: "remove key", doc: `{"a":1,"b":2}`, ops: `[{"type":"remove","path":"a"}]`, want: `{"b":2}`},
		{name: "remove nested", doc: `{"a":{"x":1,"y":2}}`, ops: `[{"type":"remove","path":"a.x"}]`, want: `{"a":{"y":2}}`},
		{name: "remove missing is a no-op", doc: `{"a":1}`, ops: `[{"type":"remove","path":"b.c"}]`, want: `{"a":1}`},
		{name: "remove root", doc: `{"a":1}`, ops: `[{"type":"remove"}]`, want: `null`},
		{name: "remove through number", doc: `{"a":1}`, ops: `[{"type":"remove","path":"a.b"}]`, want: `{"a":1}`, codes: []string{"0:remove.target_not_object"}},

		// mixed: a bad op is skipped, the others apply
		{name: "errors do not stop later ops", doc: `{"n":1,"bad":"x"}`,
			ops:  `[{"type":"increment","path":"n","by":1},{"type":"increment","path":"bad","by":1},{"type":"set","path":"ok","value":true},{"type":"merge","value":3}]`,
			want: `{"n":2,"bad":"x","ok":true}`, codes: []string{"1:increment.not_number", "3:merge.value.not_an_object"}},
		{name: "no ops on missing doc", ops: `[]`, want: `{}`},
		{name: "html is not escaped", doc: `{}`, ops: `[{"type":"set","path":"h","value":"<a&b>"}]`, want: `{"h":"<a&b>"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := ParseOps(json.RawMessage(tt.ops))
			if err != nil {
				t.Fatalf("ParseOps(%s): %v", tt.ops, err)
			}
			got, errs, err := Apply(json.RawMessage(tt.doc), ops)
			if err != nil {
				t.Fatalf("Apply(%s, %s): %v", tt.doc, tt.ops, err)
			}
			if string(got) != canon(t, tt.want) {
				t.Errorf("Apply(%s, %s) = %s, want %s", tt.doc, tt.ops, got, tt.want)
			}
			var codes []string
			for _, e := range errs {
				if e.Message == "" {
					t.Errorf("error %+v has no message", e)
				}
				codes = append(codes, fmt.Sprintf("%d:%s", e.OpIndex, e.Code))
			}
			if strings.Join(codes, ",") != strings.Join(tt.codes, ",") {
				t.Errorf("Apply(%s, %s) errors = %v, want %v (%+v)", tt.doc, tt.ops, codes, tt.codes, errs)
			}
		})
	}
}

func TestApplyDoesNotAliasOpValues(t *testing.T) {
	ops, err := ParseOps(json.RawMessage(`[{"type":"append","path":"l","value":[1]},{"type":"append","path":"m","value":[1]}]`))
	if err != nil {
		t.Fatal(err)
	}
	// Applying twice must give the same result: ops are not mutated.
	for range 2 {
		got, errs, err := Apply(json.RawMessage(`{"l":[],"m":[]}`), ops)
		if err != nil || len(errs) > 0 {
			t.Fatalf("Apply: %v %v", err, errs)
		}
		if want := `{"l":[[1]],"m":[[1]]}`; string(got) != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

func TestApplyBadStoredDocument(t *testing.T) {
	if _, _, err := Apply(json.RawMessage(`{"a":`), nil); err == nil {
		t.Fatal("Apply on invalid JSON succeeded")
	}
}

func TestParseOpsErrors(t *testing.T) {
	tests := []struct {
		ops, want string
	}{
		{`{"type":"set"}`, "ops must be a list"},
		{`[{"path":"a"}]`, `ops[0]: updateops: invalid op: missing "type"`},
		{`[{"type":"set","path":"a"},{"type":"frobnicate"}]`, `ops[1]: updateops: invalid op: unknown type "frobnicate"`},
		{`[{"type":"set","path":5}]`, `"path" must be a string or a list of strings`},
		{`[{"type":"set","path":["a",1]}]`, `"path" must be a string or a list of strings`},
		{`[{"type":"increment","path":"a"}]`, `increment: "by" is required`},
		{`[{"type":"decrement","path":"a","by":"2"}]`, `decrement: "by" must be a number, got a string`},
		{`[{"type":"set","path":"a"} `, "ops must be a list"},
		{`[7]`, "ops[0]: updateops: invalid op"},
	}
	for _, tt := range tests {
		_, err := ParseOps(json.RawMessage(tt.ops))
		if err == nil || !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseOps(%s) error = %v, want one containing %q wrapping ErrDecode", tt.ops, err, tt.want)
		}
	}
}

func TestOpJSONRoundTrip(t *testing.T) {
	in := `[{"type":"set","path":"a.b","value":{"x":1}},{"type":"merge","value":{"y":2}},{"type":"increment","path":"n","by":2},{"type":"remove","path":["k.k"]}]`
	ops, err := ParseOps(json.RawMessage(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseOps(out)
	if err != nil {
		t.Fatalf("re-parse %s: %v", out, err)
	}
	want := `[{"path":["a","b"],"type":"set","value":{"x":1}},{"type":"merge","value":{"y":2}},{"by":2,"path":["n"],"type":"increment"},{"path":["k.k"],"type":"remove"}]`
	if string(out) != want {
		t.Errorf("Marshal = %s, want %s", out, want)
	}
	if len(again) != len(ops) || again[3].Path[0] != "k.k" {
		t.Errorf("round trip lost data: %+v", again)
	}
}

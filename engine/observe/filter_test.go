package observe

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseNormalForm(t *testing.T) {
	tests := []struct{ src, want string }{
		{``, `{}`},
		{`null`, `{}`},
		{`{}`, `{}`},
		{`{"input.n":{"$exists":true}}`, `{"$and":[{"input.n":{"$exists":true}}]}`},
		// implicit and explicit $and flattened, sorted by key, duplicates dropped, operators sorted
		{`{"output.b":{"$lt":3,"$gt":1},"$and":[{"input.a":{"$eq":{"y":1,"x":2}}},{"output.b":{"$gt":1,"$lt":3}}]}`,
			`{"$and":[{"input.a":{"$eq":{"y":1,"x":2}}},{"output.b":{"$gt":1,"$lt":3}}]}`},
		{`{"$or":[{"input.a":{"$eq":1}},{}],"$not":{"caller.worker_name":{"$prefix":"x"}}}`,
			`{"$and":[{"$not":{"$and":[{"caller.worker_name":{"$prefix":"x"}}]}},{"$or":[{"$and":[{"input.a":{"$eq":1}}]},{}]}]}`},
		{`{"input.items":{"$any":{"@.sku":{"$eq":"a"}}}}`, `{"$and":[{"input.items":{"$any":{"$and":[{"@.sku":{"$eq":"a"}}]}}}]}`},
		{`{"input.tags":{"$any":{"$eq":"red"}}}`, `{"$and":[{"input.tags":{"$any":{"$eq":"red"}}}]}`},
		{`{"input.html":{"$eq":"<&>"}}`, `{"$and":[{"input.html":{"$eq":"<&>"}}]}`},
	}
	for _, tt := range tests {
		f, err := Parse(json.RawMessage(tt.src))
		if err != nil {
			t.Errorf("Parse(%s): %v", tt.src, err)
			continue
		}
		if got := string(f.Normalized()); got != tt.want {
			t.Errorf("Parse(%s).Normalized() =\n %s\nwant\n %s", tt.src, got, tt.want)
		}
		// A normal form is its own normal form.
		again, err := Parse(f.Normalized())
		if err != nil || string(again.Normalized()) != tt.want {
			t.Errorf("Parse(normal form %s) = %v, %v; want it unchanged", tt.want, again, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{`[]`, "must be a JSON object"},
		{`{"input.n":5}`, "literal values are not allowed"},
		{`{"input.n":{}}`, "empty operator object"},
		{`{"body.n":{"$eq":1}}`, "unknown root `body`"},
		{`{"$eq":1}`, "needs a path"},
		{`{"$nope":[]}`, "unknown operator `$nope`"},
		{`{"input.n":{"$nope":1}}`, "unknown operator `$nope`"},
		{`{"input.n":{"$gt":true}}`, "takes a number or a string"},
		{`{"input.n":{"$in":1}}`, "takes an array"},
		{`{"input.n":{"$exists":"yes"}}`, "takes a boolean"},
		{`{"input.n":{"$eq":9007199254740993}}`, "outside ±2^53"},
		{`{"input..n":{"$eq":1}}`, "empty segment"},
		{`{"input.a\\b":{"$eq":1}}`, "invalid escape"},
		{`{"@.a":{"$eq":1}}`, "only allowed inside `$any`"},
		{`{"input.a":{"$any":{"input.b":{"$eq":1}}}}`, "paths start at `@`"},
		{`{"$or":[]}`, "non-empty array"},
		{`{"$not":[]}`, "takes a filter object"},
		{`{"input.a":{"$or":[]}}`, "not a value operator"},
		{`{"input.x":{"$eq":"` + strings.Repeat("x", 9000) + `"}}`, "more than 8192 bytes"},
		{`{"$not":{"$not":{"$not":{"$not":{"$not":{"$not":{"$not":{"$not":{"input.a":{"$eq":1}}}}}}}}}}`, "nested deeper than 8"},
	}
	for _, tt := range tests {
		_, err := Parse(json.RawMessage(tt.src))
		var fe *Error
		if !errors.As(err, &fe) || fe.Code != CodeInvalidFilter || !strings.Contains(fe.Message, tt.want) {
			t.Errorf("Parse(%.80s) = %v; want INVALID_FILTER containing %q", tt.src, err, tt.want)
		}
	}
}

func TestMatches(t *testing.T) {
	doc := Doc{
		Input:  json.RawMessage(`{"amount":750,"tags":["a","b"],"items":[{"sku":"x","qty":2}],"n":null,"s":"hello","o":{"b":1,"a":[1,2]}}`),
		Output: json.RawMessage(`{"charged":750}`),
		Caller: json.RawMessage(`{"worker_name":"checkout-1","parent":{"function_id":"a::b"}}`),
	}
	tests := []struct {
		src  string
		want bool
	}{
		{`{}`, true},
		{`{"input.amount":{"$gte":500}}`, true},
		{`{"input.amount":{"$gt":750}}`, false},
		{`{"input.amount":{"$eq":750.0}}`, true},
		{`{"input.amount":{"$eq":"750"}}`, false},
		{`{"input.s":{"$gt":"hell"}}`, true},
		{`{"input.s":{"$prefix":"he"}}`, true},
		{`{"input.n":{"$eq":null}}`, true},
		{`{"input.n":{"$exists":true}}`, true},
		{`{"input.missing":{"$exists":false}}`, true},
		{`{"input.missing":{"$ne":1}}`, true},
		{`{"input.missing":{"$eq":null}}`, false},
		{`{"input.missing":{"$nin":[1]}}`, true},
		{`{"input.tags.1":{"$eq":"b"}}`, true},
		{`{"input.tags.01":{"$exists":true}}`, false},
		{`{"input.tags":{"$any":{"$eq":"b"}}}`, true},
		{`{"input.tags":{"$any":{"$in":["c","d"]}}}`, false},
		{`{"input.items":{"$any":{"@.sku":{"$eq":"x"},"@.qty":{"$gt":1}}}}`, true},
		{`{"input.items":{"$any":{"@.sku":{"$eq":"x"},"@.qty":{"$gt":2}}}}`, false},
		{`{"input.o":{"$eq":{"a":[1,2],"b":1}}}`, true},
		{`{"input.o":{"$eq":{"a":[2,1],"b":1}}}`, false},
		{`{"input.o":{"$eq":{"b":1}}}`, false},
		{`{"output.charged":{"$exists":true},"caller.worker_name":{"$prefix":"checkout-"}}`, true},
		{`{"caller.parent.function_id":{"$eq":"a::b"}}`, true},
		{`{"error":{"$exists":true}}`, false},
		{`{"metadata.x":{"$exists":false}}`, true},
		{`{"$or":[{"input.amount":{"$lt":10}},{"input.s":{"$eq":"hello"}}]}`, true},
		{`{"$not":{"input.amount":{"$lt":10}}}`, true},
		{`{"input.amount":{"$in":[1,750]}}`, true},
	}
	for _, tt := range tests {
		f, err := Parse(json.RawMessage(tt.src))
		if err != nil {
			t.Errorf("Parse(%s): %v", tt.src, err)
			continue
		}
		if got := f.Matches(doc); got != tt.want {
			t.Errorf("%s matches = %v, want %v", tt.src, got, tt.want)
		}
	}
}

func TestCheckPaths(t *testing.T) {
	req := json.RawMessage(`{"type":"object","properties":{"amount":{"type":"number"},"user":{"$ref":"#/$defs/User"}},"additionalProperties":false,
		"$defs":{"User":{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}}}`)
	resp := json.RawMessage(`{"type":"object","properties":{"ok":{"type":"boolean"}}}`)
	tests := []struct {
		src      string
		warnings int
		code     string
	}{
		{`{"input.amount":{"$gt":1}}`, 0, ""},
		{`{"input.user.id":{"$eq":"u"}}`, 0, ""},
		{`{"input.amout":{"$gt":1}}`, 0, CodeInvalidFilterPath},
		{`{"input.user.name":{"$eq":"u"}}`, 0, CodeInvalidFilterPath},
		{`{"output.extra":{"$exists":true}}`, 1, ""},
		{`{"caller.anything":{"$exists":true}}`, 0, ""},
	}
	for _, tt := range tests {
		f, err := Parse(json.RawMessage(tt.src))
		if err != nil {
			t.Fatal(err)
		}
		w, err := f.CheckPaths(req, resp)
		var fe *Error
		switch {
		case tt.code != "" && (!errors.As(err, &fe) || fe.Code != tt.code):
			t.Errorf("%s: CheckPaths = %v; want %s", tt.src, err, tt.code)
		case tt.code == "" && (err != nil || len(w) != tt.warnings):
			t.Errorf("%s: CheckPaths = %v, %v; want %d warnings", tt.src, w, err, tt.warnings)
		}
	}
}

func TestArgs(t *testing.T) {
	format := json.RawMessage(`{"type":"object","required":["topic"],"properties":{"topic":{"type":"string"}},"additionalProperties":false}`)
	if err := CheckArgsFormat(format); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args string
		ok   bool
	}{
		{`{"topic":"a"}`, true},
		{`{}`, false},
		{`{"topic":1}`, false},
		{`{"topic":"a","x":1}`, false},
		{`[]`, false},
	} {
		err := ValidateArgs(format, json.RawMessage(tt.args))
		var fe *Error
		if tt.ok != (err == nil) || (err != nil && (!errors.As(err, &fe) || fe.Code != CodeInvalidArgs)) {
			t.Errorf("ValidateArgs(%s) = %v; want ok=%v", tt.args, err, tt.ok)
		}
	}
	for _, bad := range []string{`5`, `{"type":"thing"}`, `{"properties":[]}`, `{"required":"x"}`, `{"anyOf":[]}`} {
		if err := CheckArgsFormat(json.RawMessage(bad)); err == nil {
			t.Errorf("CheckArgsFormat(%s) = nil; want INVALID_ARGS_FORMAT", bad)
		}
	}
}

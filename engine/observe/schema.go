package observe

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
)

// schema is a decoded JSON Schema document (a subset is understood).
type schema = map[string]any

// CheckPaths checks the filter's input.* paths against the function's
// request_format and its output.* paths against its response_format: a
// path that leaves a schema closed with additionalProperties: false is
// INVALID_FILTER_PATH; one the schema cannot vouch for (an open object,
// composition this walk does not resolve) is accepted with a warning.
// Other roots, and roots without a format, are not checked.
func (f *Filter) CheckPaths(requestFormat, responseFormat json.RawMessage) (warnings []string, err error) {
	docs := map[int]any{}
	for i, raw := range []json.RawMessage{requestFormat, responseFormat} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var s any
		if json.Unmarshal(raw, &s) == nil {
			docs[i] = s
		}
	}
	if len(docs) == 0 {
		return nil, nil
	}
	for _, ref := range f.paths {
		if ref.p.root < 0 || ref.p.root > 1 { // @ paths and other roots
			continue
		}
		doc, ok := docs[ref.p.root]
		if !ok {
			continue
		}
		format := [...]string{"request_format", "response_format"}[ref.p.root]
		w, err := walkSchema(doc, ref.p, format)
		if err != nil {
			return nil, err
		}
		if w != "" && !slices.Contains(warnings, w) {
			warnings = append(warnings, w)
		}
	}
	return warnings, nil
}

func walkSchema(doc any, p path, format string) (string, error) {
	cur := doc
	shown := roots[p.root]
	for _, seg := range p.segs {
		s, why := resolveSchema(doc, cur)
		if s == nil {
			return fmt.Sprintf("filter path `%s`: not verified against %s at `%s` (%s)", p.raw, format, shown, why), nil
		}
		next := shown + "." + seg.key
		if props, ok := s["properties"].(map[string]any); ok {
			if sub, ok := props[seg.key]; ok {
				cur, shown = sub, next
				continue
			}
		}
		if items, ok := s["items"]; ok && seg.index >= 0 {
			if _, isObj := items.(map[string]any); isObj {
				cur, shown = items, next
				continue
			}
		}
		if ap, ok := s["additionalProperties"].(bool); ok && !ap && !hasAny(s, "patternProperties", "anyOf", "oneOf", "allOf", "if", "unevaluatedProperties") {
			if _, hasProps := s["properties"]; hasProps || typeIs(s, "object") {
				return "", &Error{Code: CodeInvalidFilterPath, Message: fmt.Sprintf(
					"filter path `%s`: `%s` is not in the function's %s (additionalProperties is false)", p.raw, next, format)}
			}
		}
		return fmt.Sprintf("filter path `%s`: `%s` is not declared in %s, which is open; not verified", p.raw, next, format), nil
	}
	return "", nil
}

// resolveSchema follows local $refs, a single-branch allOf and a nullable
// anyOf/oneOf; nil and why when it cannot.
func resolveSchema(doc, s any) (schema, string) {
	for hops := 0; hops < 32; hops++ {
		m, ok := s.(map[string]any)
		if !ok {
			return nil, "not an object schema"
		}
		if ref, ok := m["$ref"].(string); ok {
			target, ok := localRef(doc, ref)
			if !ok {
				return nil, "unresolved $ref " + ref
			}
			s = target
			continue
		}
		if all, ok := m["allOf"].([]any); ok && len(all) == 1 && !hasAny(m, "properties") {
			s = all[0]
			continue
		}
		for _, k := range []string{"anyOf", "oneOf"} {
			if alts, ok := m[k].([]any); ok {
				var keep []any
				for _, a := range alts {
					if am, ok := a.(map[string]any); !ok || am["type"] != "null" {
						keep = append(keep, a)
					}
				}
				if len(keep) != 1 {
					return nil, k + " with several branches"
				}
				s = keep[0]
				goto next
			}
		}
		return m, ""
	next:
	}
	return nil, "too many $ref hops"
}

func localRef(doc any, ref string) (any, bool) {
	rest, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, false
	}
	cur := doc
	for _, part := range strings.Split(strings.TrimPrefix(rest, "/"), "/") {
		if part == "" {
			continue
		}
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func hasAny(m schema, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

func typeIs(m schema, t string) bool {
	switch v := m["type"].(type) {
	case string:
		return v == t
	case []any:
		return slices.Contains(v, any(t))
	}
	return false
}

var schemaTypes = []string{"object", "array", "string", "number", "integer", "boolean", "null"}

// CheckArgsFormat checks that raw is a JSON Schema this engine can apply
// to observers' args: an object or a boolean, with known type names and
// well-formed properties, required and items. Errors are
// INVALID_ARGS_FORMAT.
func CheckArgsFormat(raw json.RawMessage) error {
	var s any
	if err := json.Unmarshal(raw, &s); err != nil {
		return &Error{Code: CodeInvalidArgsFormat, Message: "args_format is not JSON: " + err.Error()}
	}
	if err := checkSchemaNode(s, "args_format", 0); err != nil {
		return &Error{Code: CodeInvalidArgsFormat, Message: err.Error()}
	}
	return nil
}

func checkSchemaNode(s any, at string, depth int) error {
	if depth > 64 {
		return fmt.Errorf("%s: nested too deep", at)
	}
	switch m := s.(type) {
	case bool:
		return nil
	case map[string]any:
		switch t := m["type"].(type) {
		case nil:
		case string:
			if !slices.Contains(schemaTypes, t) {
				return fmt.Errorf("%s.type: unknown type %q", at, t)
			}
		case []any:
			for _, x := range t {
				if n, ok := x.(string); !ok || !slices.Contains(schemaTypes, n) {
					return fmt.Errorf("%s.type: unknown type %v", at, x)
				}
			}
		default:
			return fmt.Errorf("%s.type: must be a string or an array of strings", at)
		}
		if p, ok := m["properties"]; ok {
			pm, ok := p.(map[string]any)
			if !ok {
				return fmt.Errorf("%s.properties: must be an object", at)
			}
			for k, sub := range pm {
				if err := checkSchemaNode(sub, at+".properties."+k, depth+1); err != nil {
					return err
				}
			}
		}
		if r, ok := m["required"]; ok {
			ra, ok := r.([]any)
			if !ok {
				return fmt.Errorf("%s.required: must be an array of strings", at)
			}
			for _, x := range ra {
				if _, ok := x.(string); !ok {
					return fmt.Errorf("%s.required: must be an array of strings", at)
				}
			}
		}
		for _, k := range []string{"items", "additionalProperties", "not"} {
			if sub, ok := m[k]; ok {
				if err := checkSchemaNode(sub, at+"."+k, depth+1); err != nil {
					return err
				}
			}
		}
		for _, k := range []string{"anyOf", "oneOf", "allOf"} {
			if sub, ok := m[k]; ok {
				arr, ok := sub.([]any)
				if !ok || len(arr) == 0 {
					return fmt.Errorf("%s.%s: must be a non-empty array of schemas", at, k)
				}
				for i, x := range arr {
					if err := checkSchemaNode(x, fmt.Sprintf("%s.%s[%d]", at, k, i), depth+1); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return fmt.Errorf("%s: a schema must be an object or a boolean", at)
}

// Validate checks the JSON value v against the JSON Schema schema (the
// subset args_format is checked with); the error names the first place
// that fails, under the name at ("value", "value.port", ...).
func Validate(schema, v json.RawMessage, at string) error {
	var s, x any
	if err := json.Unmarshal(schema, &s); err != nil {
		return fmt.Errorf("the schema is not JSON: %w", err)
	}
	if len(v) == 0 {
		v = json.RawMessage("null")
	}
	if err := json.Unmarshal(v, &x); err != nil {
		return fmt.Errorf("%s is not JSON: %w", at, err)
	}
	return validate(s, s, x, at, 0)
}

// ValidateArgs checks args against the function's args_format. Errors
// are INVALID_ARGS naming the first place that fails.
func ValidateArgs(format, args json.RawMessage) error {
	var s, v any
	if err := json.Unmarshal(format, &s); err != nil {
		return &Error{Code: CodeInvalidArgs, Message: "the function's args_format is not JSON"}
	}
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	if err := json.Unmarshal(args, &v); err != nil {
		return &Error{Code: CodeInvalidArgs, Message: "args are not JSON: " + err.Error()}
	}
	if err := validate(s, s, v, "args", 0); err != nil {
		return &Error{Code: CodeInvalidArgs, Message: err.Error()}
	}
	return nil
}

func validate(doc, s, v any, at string, depth int) error {
	if depth > 64 {
		return fmt.Errorf("%s: schema nested too deep", at)
	}
	switch m := s.(type) {
	case bool:
		if !m {
			return fmt.Errorf("%s: not allowed", at)
		}
		return nil
	case map[string]any:
		if ref, ok := m["$ref"].(string); ok {
			target, ok := localRef(doc, ref)
			if !ok {
				return nil // a remote $ref is not checked
			}
			if err := validate(doc, target, v, at, depth+1); err != nil {
				return err
			}
		}
		if t, ok := m["type"]; ok && !matchesType(t, v) {
			return fmt.Errorf("%s: expected %v, found %s", at, t, jsonKind(v))
		}
		if e, ok := m["enum"].([]any); ok && !slices.ContainsFunc(e, func(x any) bool { return jsonEqual(v, x) }) {
			return fmt.Errorf("%s: not one of %v", at, e)
		}
		if c, ok := m["const"]; ok && !jsonEqual(v, c) {
			return fmt.Errorf("%s: must be %v", at, c)
		}
		if n, ok := v.(float64); ok {
			if min, ok := m["minimum"].(float64); ok && n < min {
				return fmt.Errorf("%s: %v is below the minimum %v", at, n, min)
			}
			if max, ok := m["maximum"].(float64); ok && n > max {
				return fmt.Errorf("%s: %v is above the maximum %v", at, n, max)
			}
		}
		if str, ok := v.(string); ok {
			if min, ok := m["minLength"].(float64); ok && float64(len([]rune(str))) < min {
				return fmt.Errorf("%s: shorter than %v characters", at, min)
			}
			if max, ok := m["maxLength"].(float64); ok && float64(len([]rune(str))) > max {
				return fmt.Errorf("%s: longer than %v characters", at, max)
			}
		}
		if obj, ok := v.(map[string]any); ok {
			if req, ok := m["required"].([]any); ok {
				for _, r := range req {
					if k, _ := r.(string); k != "" {
						if _, ok := obj[k]; !ok {
							return fmt.Errorf("%s: missing required property %q", at, k)
						}
					}
				}
			}
			props, _ := m["properties"].(map[string]any)
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				if sub, ok := props[k]; ok {
					if err := validate(doc, sub, obj[k], at+"."+k, depth+1); err != nil {
						return err
					}
					continue
				}
				if ap, ok := m["additionalProperties"]; ok {
					if b, isBool := ap.(bool); isBool && !b {
						return fmt.Errorf("%s: unknown property %q", at, k)
					}
					if err := validate(doc, ap, obj[k], at+"."+k, depth+1); err != nil {
						return err
					}
				}
			}
		}
		if arr, ok := v.([]any); ok {
			if items, ok := m["items"]; ok {
				for i, it := range arr {
					if err := validate(doc, items, it, fmt.Sprintf("%s[%d]", at, i), depth+1); err != nil {
						return err
					}
				}
			}
		}
		if all, ok := m["allOf"].([]any); ok {
			for _, sub := range all {
				if err := validate(doc, sub, v, at, depth+1); err != nil {
					return err
				}
			}
		}
		for _, k := range []string{"anyOf", "oneOf"} {
			if alts, ok := m[k].([]any); ok {
				var first error
				okOne := false
				for _, sub := range alts {
					if err := validate(doc, sub, v, at, depth+1); err == nil {
						okOne = true
						break
					} else if first == nil {
						first = err
					}
				}
				if !okOne {
					return fmt.Errorf("%s: matches none of the %s schemas (%v)", at, k, first)
				}
			}
		}
		if not, ok := m["not"]; ok && validate(doc, not, v, at, depth+1) == nil {
			return fmt.Errorf("%s: matches a schema it must not", at)
		}
	}
	return nil
}

func matchesType(t, v any) bool {
	switch tt := t.(type) {
	case string:
		return isType(tt, v)
	case []any:
		return slices.ContainsFunc(tt, func(x any) bool { s, _ := x.(string); return isType(s, v) })
	}
	return true
}

func isType(t string, v any) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	}
	return false
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

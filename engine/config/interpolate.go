package config

import (
	"bytes"
	"fmt"
	"regexp"
)

// varRef matches ${VAR} and ${VAR:default}. There is no ":-" form: in
// ${VAR:-x} the default is "-x", as in the iii engine.
var varRef = regexp.MustCompile(`\$\{([^}:]+)(?::([^}]*))?\}`)

// EngineVersion is what the special default __III_ENGINE_VERSION__ (as in
// ${SERVICE_VERSION:__III_ENGINE_VERSION__}) expands to: the iii version
// this engine speaks.
var EngineVersion = "0.22.1"

const engineVersionDefault = "__III_ENGINE_VERSION__"

// interpolate replaces every ${VAR} and ${VAR:default} in data. It runs over
// the raw text, comments included, before any YAML parsing. A ${VAR} without
// a default whose variable is unset is an error naming the variable and line.
func interpolate(file string, data []byte, getenv func(string) (string, bool)) ([]byte, error) {
	matches := varRef.FindAllSubmatchIndex(data, -1)
	if len(matches) == 0 {
		return data, nil
	}
	var out bytes.Buffer
	out.Grow(len(data))
	last := 0
	for _, m := range matches {
		out.Write(data[last:m[0]])
		last = m[1]
		name := string(data[m[2]:m[3]])
		if v, ok := getenv(name); ok {
			out.WriteString(v)
			continue
		}
		if m[4] >= 0 { // a default was given, possibly empty
			if def := data[m[4]:m[5]]; string(def) == engineVersionDefault {
				out.WriteString(EngineVersion)
			} else {
				out.Write(def)
			}
			continue
		}
		return nil, &Error{
			File:   file,
			Line:   1 + bytes.Count(data[:m[0]], []byte("\n")),
			Reason: fmt.Sprintf("environment variable %s is not set (use ${%s:default} for a default)", name, name),
			Kind:   ErrConfigUnsetVariable,
		}
	}
	out.Write(data[last:])
	return out.Bytes(), nil
}

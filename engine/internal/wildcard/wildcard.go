// Package wildcard matches the `*` patterns of iii's function filters
// (RBAC expose_functions and match("...") values).
package wildcard

import "strings"

// Match reports whether s matches pattern, anchored at both ends, where
// '*' matches any run of characters (including none) and everything else
// is literal.
func Match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}

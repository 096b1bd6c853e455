package wildcard

import "testing"

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		want   bool
	}{
		{"hello::world", "hello::world", true},
		{"hello::world", "hello::worldx", false},
		{"engine::*", "engine::a::b", true},
		{"engine::*", "other::engine::a", false},
		{"*::public", "x::y::public", true},
		{"*::public", "x::public::y", false},
		{"*public*", "mypublicfn", true},
		{"api::*::read", "api::users::read", true},
		{"api::*::read", "api::users::write", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"*", "", true},
		{"a*", "abc", true}, {"*c", "abc", true}, {"a*c", "ac", true}, {"a*c", "abcbc", true},
		{"a*b*c", "abc", true}, {"a*bc*c", "abc", false}, {"abc", "abcd", false}, {"*b*", "xbx", true},
	} {
		if got := Match(c.pat, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pat, c.s, got, c.want)
		}
	}
}

package devserver

import "testing"

func TestRedisMode(t *testing.T) {
	tests := []struct {
		embedded bool
		url      string
		want     string
	}{
		{true, "", "embedded"},
		{false, "redis://127.0.0.1:6379/0", "external redis://127.0.0.1:6379/0"},
		{false, "redis://user:secret@cache:6379", "external redis://user:xxxxx@cache:6379"},
		{false, "://bad", "external"},
	}
	for _, tt := range tests {
		if got := redisMode(tt.embedded, tt.url); got != tt.want {
			t.Errorf("redisMode(%v, %q) = %q; want %q", tt.embedded, tt.url, got, tt.want)
		}
	}
}

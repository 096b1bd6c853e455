package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseCluster(t *testing.T) {
	good := []struct {
		name, yaml string
		want       *Cluster
	}{
		{"off", "redis: {url: redis://r:6379}\n", nil},
		{"defaults", "redis: {url: redis://r:6379}\ncluster: {name: prod}\n",
			&Cluster{Name: "prod", Heartbeat: time.Second, TTL: 3 * time.Second}},
		{"heartbeat sets ttl", "redis: {url: redis://r:6379}\ncluster: {name: a.b-c, heartbeat_ms: 200}\n",
			&Cluster{Name: "a.b-c", Heartbeat: 200 * time.Millisecond, TTL: 600 * time.Millisecond}},
		{"all", "redis: {url: redis://r:6379}\ncluster:\n  name: x\n  advertise_address: 10.0.0.5:7000\n  heartbeat_ms: 100\n  ttl_ms: 1000\n",
			&Cluster{Name: "x", AdvertiseAddress: "10.0.0.5:7000", Heartbeat: 100 * time.Millisecond, TTL: time.Second}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("config.yaml", []byte(tc.yaml), env())
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == nil && c.Cluster != nil:
				t.Fatalf("cluster = %+v, want off", *c.Cluster)
			case tc.want != nil && (c.Cluster == nil || *c.Cluster != *tc.want):
				t.Fatalf("cluster = %+v, want %+v", c.Cluster, *tc.want)
			}
		})
	}
	bad := []struct{ yaml, want string }{
		{"cluster: {name: prod}\n", "config.yaml:1: cluster: needs redis.url"},
		{"redis: {url: redis://r}\ncluster: {heartbeat_ms: 10}\n", "config.yaml:2: cluster.name: is required"},
		{"redis: {url: redis://r}\ncluster: {name: 'a b'}\n", "config.yaml:2: cluster.name: \"a b\" must be"},
		{"redis: {url: redis://r}\ncluster:\n  name: a\n  heartbeat_ms: 0\n", "config.yaml:4: cluster.heartbeat_ms: 0 must be a positive"},
		{"redis: {url: redis://r}\ncluster:\n  name: a\n  heartbeat_ms: 100\n  ttl_ms: 150\n", "config.yaml:5: cluster.ttl_ms: 150 must be at least twice"},
		{"redis: {url: redis://r}\ncluster:\n  name: a\n  advertise_address: ws://x\n", "config.yaml:4: cluster.advertise_address"},
		{"redis: {url: redis://r}\ncluster:\n  name: a\n  nme: b\n", "config.yaml:4: cluster.nme: unknown key"},
	}
	for _, tc := range bad {
		_, err := Parse("config.yaml", []byte(tc.yaml), env())
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want prefix %q", tc.yaml, err, tc.want)
		}
		var ce *Error
		if err != nil && !errors.As(err, &ce) {
			t.Errorf("%q: %T is not *Error", tc.yaml, err)
		}
	}
}

package config

import (
	"regexp"
	"strings"
	"time"
)

// Cluster defaults.
const (
	DefaultClusterHeartbeat = time.Second
	DefaultClusterTTL       = 3 * time.Second
)

// Cluster makes this engine one of several sharing an external Redis: the
// function table spans them and calls with no local worker are forwarded.
// Off (nil in Config) unless config.yaml has a cluster: section.
//
//	cluster:
//	  name: prod                    # engines with the same name form one cluster
//	  advertise_address: 10.0.0.5:0 # host[:port] peers dial for forwarded calls
//	  heartbeat_ms: 1000            # how often the advertisement is renewed
//	  ttl_ms: 3000                  # how long it outlives its last renewal
type Cluster struct {
	Name string
	// AdvertiseAddress is host[:port] of this engine's link listener, as
	// peers dial it. Empty: engine.host on a free port (a host of 0.0.0.0
	// or :: is advertised as 127.0.0.1). Port 0 or none picks a free one.
	AdvertiseAddress string
	Heartbeat        time.Duration
	TTL              time.Duration
}

type rawCluster struct {
	Name             at[string] `yaml:"name"`
	AdvertiseAddress at[string] `yaml:"advertise_address"`
	HeartbeatMS      at[int64]  `yaml:"heartbeat_ms"`
	TTLMS            at[int64]  `yaml:"ttl_ms"`
}

var clusterName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func (c *Config) setCluster(file string, r *rawCluster) error {
	set := r.Name.Line > 0 || r.AdvertiseAddress.Line > 0 || r.HeartbeatMS.Line > 0 || r.TTLMS.Line > 0
	if !set {
		return nil
	}
	line := max(r.Name.Line, r.AdvertiseAddress.Line, r.HeartbeatMS.Line, r.TTLMS.Line)
	cl := &Cluster{Name: r.Name.V, AdvertiseAddress: r.AdvertiseAddress.V,
		Heartbeat: DefaultClusterHeartbeat, TTL: DefaultClusterTTL}
	if r.Name.Line == 0 {
		return invalid(file, line, "cluster.name", "is required when cluster is configured")
	}
	if c.Redis.URL == "" {
		return invalid(file, r.Name.Line, "cluster", "needs redis.url: the engines of a cluster share one external Redis")
	}
	if !clusterName.MatchString(cl.Name) {
		return invalid(file, r.Name.Line, "cluster.name", "%q must be 1-64 letters, digits, '_', '.' or '-'", cl.Name)
	}
	if a := cl.AdvertiseAddress; r.AdvertiseAddress.Line > 0 && (a == "" || strings.Contains(a, "/")) {
		return invalid(file, r.AdvertiseAddress.Line, "cluster.advertise_address", "%q is not host[:port] (no scheme)", a)
	}
	if r.HeartbeatMS.Line > 0 {
		if r.HeartbeatMS.V <= 0 {
			return invalid(file, r.HeartbeatMS.Line, "cluster.heartbeat_ms", "%d must be a positive number of milliseconds", r.HeartbeatMS.V)
		}
		cl.Heartbeat = time.Duration(r.HeartbeatMS.V) * time.Millisecond
		if r.TTLMS.Line == 0 {
			cl.TTL = 3 * cl.Heartbeat
		}
	}
	if r.TTLMS.Line > 0 {
		cl.TTL = time.Duration(r.TTLMS.V) * time.Millisecond
		if cl.TTL < 2*cl.Heartbeat {
			return invalid(file, r.TTLMS.Line, "cluster.ttl_ms", "%d must be at least twice heartbeat_ms (%d)", r.TTLMS.V, cl.Heartbeat.Milliseconds())
		}
	}
	c.Cluster = cl
	return nil
}

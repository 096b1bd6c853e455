// Package cluster joins several iii engines sharing one external Redis into
// one system: one function table, calls forwarded to the engine whose
// workers serve them, durable topics that reach every engine's subscribers,
// and listings that show every engine.
//
// # Registry (Redis)
//
// Each engine advertises itself under iii:cluster:<name>:engine:<id> (a JSON
// document: its link address, the functions its workers serve, its workers
// and its durable-subscriber bindings), with an expiry of ttl_ms renewed
// every heartbeat_ms, and indexes itself in the sorted set
// iii:cluster:<name>:engines (score: expiry). A change of what it serves is
// published on iii:cluster:<name>:changed; every engine re-reads the
// registry on such a message and every heartbeat, so a new function is
// visible elsewhere within about 100 ms (the engine's functions-available
// debounce) and a heartbeat at worst. An engine that dies stops renewing:
// its advertisement expires within ttl_ms and the others drop it within
// ttl_ms + heartbeat_ms (defaults 3 s and 1 s: at most 4 s). An engine that
// stops cleanly withdraws at once.
//
// # Forwarding (engine-to-engine WebSocket)
//
// The router asks the cluster only for a call with no local handler (local
// workers always win). The call goes to an engine advertising the function
// in the call's namespace (see fnKey), round-robin among them, over a WebSocket from this engine to that one's
// link listener (cluster.advertise_address), found through the registry
// and protected by the engine's auth token. Frames are JSON lines, several
// per WebSocket message under load. The peer runs the call as its own
// (trigger "cluster", never forwarded again) and the result or error comes
// back unchanged. Void calls run the same way with the result dropped;
// enqueue actions go through the queue, whose consumer forwards.
//
// Redis streams were measured as the transport first (request stream per
// engine, reply stream per engine, one XREAD BLOCK loop each): on the same
// machine a round trip at one call in flight cost 460-600 µs at p50 against
// 70-90 µs over a WebSocket (BENCHMARKS.md). Redis still carries everything
// the engines must agree on; a link only carries calls.
//
// # Failures
//
//   - A peer's link drops (its process died, its host went away): every
//     call in flight to it ends at once with invocation_stopped. A peer
//     whose heartbeat lapses is dropped from the table and its link closed,
//     with the same result. Each forwarded call is also bounded by the
//     engine's invocation timeout (code timeout), so none can hang.
//   - Redis unreachable: local calls are unaffected; a call with no local
//     handler fails at once with cluster_unavailable (the table cannot be
//     trusted). When Redis answers again the engine re-advertises and
//     re-reads the registry, and forwarding resumes.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/protocol"
)

// Trigger types whose bindings are advertised so that durable topics reach
// subscribers on every engine (the queue module's durable:subscriber and
// its legacy name).
var advertisedTriggerTypes = []string{"durable:subscriber", "queue"}

// changedFunction is the in-process function bound to the engine's
// functions-available and workers-available triggers: a local change is
// advertised at once instead of at the next heartbeat.
const changedFunction = "engine::cluster::local-changed"

// Options configures a Cluster.
type Options struct {
	Config config.Cluster
	// RedisURL is the shared Redis (config redis.url).
	RedisURL string
	Engine   *engine.Engine
	// AuthToken is required from peers dialling the link listener, and
	// presented when dialling theirs (the engine's worker token).
	AuthToken string
	// Host is the engine's listen host, the link listener's default host.
	Host string
	// WorkerURL is the engine's worker socket, shown to peers.
	WorkerURL string
	// KeyPrefix namespaces the Redis keys ("iii:").
	KeyPrefix string
	Logger    *slog.Logger
}

// advert is what an engine publishes about itself.
type advert struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Link      string      `json:"link"`
	WorkerURL string      `json:"worker_url"`
	StartedAt int64       `json:"started_at_ms"`
	Functions []advFunc   `json:"functions"`
	Workers   []advWorker `json:"workers"`
	Bindings  []advBind   `json:"bindings,omitempty"`
}

type advFunc struct {
	ID string `json:"id"`
	// Namespace is where the function resolves; omitted for the default
	// namespace, so a default-namespace advertisement reads as before
	// namespaces.
	Namespace   string          `json:"namespace,omitempty"`
	Description string          `json:"description,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	Workers     []string        `json:"workers"`
	WorkerIDs   []string        `json:"worker_ids"`
}

type advWorker struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Namespace   string   `json:"namespace,omitempty"` // omitted for the default one
	Description string   `json:"description,omitempty"`
	Runtime     string   `json:"runtime,omitempty"`
	Version     string   `json:"version,omitempty"`
	OS          string   `json:"os,omitempty"`
	PID         int      `json:"pid,omitempty"`
	Status      string   `json:"status"`
	IPAddress   string   `json:"ip,omitempty"`
	ConnectedAt int64    `json:"connected_at_ms"`
	Active      int64    `json:"active"`
	Functions   []string `json:"functions,omitempty"`
}

type advBind struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	FunctionID string          `json:"function_id"`
	Config     json.RawMessage `json:"config,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// peer is another engine of the cluster.
type peer struct {
	ad   advert
	link *link
}

// Cluster is this engine's membership of a cluster. It is the engine's
// Forwarder and ClusterView.
type Cluster struct {
	opts Options
	cfg  config.Cluster
	log  *slog.Logger
	eng  *engine.Engine
	rdb  *redis.Client
	id   string
	name string

	keyEngines, keyChanged string

	ln       net.Listener
	srv      *http.Server
	linkAddr string

	// life owns the cluster's loops, links and link server connections
	// and its function; ctx is its context (nil before Start).
	life module.Lifecycle
	ctx  context.Context

	up       atomic.Bool   // the last Redis round trip worked
	frozen   atomic.Bool   // tests: no more heartbeats (a hung engine)
	kick     chan struct{} // cap 1: advertise now
	resyncCh chan struct{} // cap 1: re-read the registry now

	mu      sync.RWMutex
	peers   map[string]*peer   // by engine id
	byFn    map[string][]*peer // function key (fnKey) -> peers serving it
	lastAd  []byte
	stopped bool
	// rejoinUntil ends the rebuild after a Redis outage: until then a
	// registry read adds peers but drops none that are still connected
	// (Redis may have come back empty and they have not re-advertised
	// yet).
	rejoinUntil time.Time
	rr          atomic.Uint32

	srvMu   sync.Mutex // guards srvConn; taken after ctx is checked
	srvConn map[*serverConn]struct{}
}

// New checks the options and connects to Redis; Start joins the cluster.
func New(opts Options) (*Cluster, error) {
	if opts.Engine == nil || opts.RedisURL == "" || opts.Config.Name == "" {
		return nil, errors.New("cluster: an engine, redis.url and cluster.name are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "iii:"
	}
	cfg := opts.Config
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = config.DefaultClusterHeartbeat
	}
	if cfg.TTL < 2*cfg.Heartbeat {
		cfg.TTL = 3 * cfg.Heartbeat
	}
	ro, err := redis.ParseURL(opts.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: redis.url: %w", err)
	}
	// Fail fast: a Redis that does not answer within a heartbeat (at least
	// 500 ms, so a busy machine does not flap) is down for the cluster's
	// purposes; a refused connection is noticed at once.
	ro.DialTimeout = opTimeout(cfg.Heartbeat)
	ro.ReadTimeout = opTimeout(cfg.Heartbeat)
	ro.WriteTimeout = ro.ReadTimeout
	ro.MaxRetries = -1
	ro.PoolSize = 4
	// One server, no cluster maintenance notifications (the default
	// "auto" prints a failure line at start against a plain Redis).
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	base := opts.KeyPrefix + "cluster:" + cfg.Name + ":"
	c := &Cluster{
		opts: opts, cfg: cfg, eng: opts.Engine,
		log:        opts.Logger.With("component", "cluster", "cluster", cfg.Name),
		rdb:        redis.NewClient(ro),
		id:         uuid.NewString()[:13],
		keyEngines: base + "engines",
		keyChanged: base + "changed",
		kick:       make(chan struct{}, 1),
		resyncCh:   make(chan struct{}, 1),
		peers:      map[string]*peer{},
		byFn:       map[string][]*peer{},
		srvConn:    map[*serverConn]struct{}{},
	}
	c.name = engineName(opts.WorkerURL, c.id)
	return c, nil
}

// engineName is how people see an engine: its host name and worker port.
func engineName(workerURL, id string) string {
	host, _ := os.Hostname()
	if _, port, err := net.SplitHostPort(trimScheme(workerURL)); err == nil && host != "" {
		return host + ":" + port
	}
	return id
}

func trimScheme(u string) string {
	for _, p := range []string{"ws://", "wss://"} {
		if len(u) > len(p) && u[:len(p)] == p {
			return u[len(p):]
		}
	}
	return u
}

func (c *Cluster) engineKey(id string) string {
	return c.keyEngines[:len(c.keyEngines)-len("engines")] + "engine:" + id
}

// ID is this engine's id in the cluster.
func (c *Cluster) ID() string { return c.id }

// EngineName names this engine in listings (host:worker-port).
func (c *Cluster) EngineName() string { return c.name }

// LinkAddr is the address peers dial for forwarded calls.
func (c *Cluster) LinkAddr() string { return c.linkAddr }

// Start opens the link listener, advertises this engine, learns the others
// and installs itself as the engine's forwarder. Redis being down at start
// is not an error: the engine serves locally and joins when Redis answers.
func (c *Cluster) Start(ctx context.Context) error {
	host, port := c.opts.Host, "0"
	if a := c.cfg.AdvertiseAddress; a != "" {
		if h, p, err := net.SplitHostPort(a); err == nil {
			host, port = h, p
		} else {
			host = a
		}
	}
	if host == "" {
		host = config.DefaultHost
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("cluster: link listener on %s: %w", net.JoinHostPort(host, port), err)
	}
	c.ln = ln
	adv := ln.Addr().(*net.TCPAddr)
	if adv.IP.IsUnspecified() {
		adv = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: adv.Port}
	}
	c.linkAddr = adv.String()
	c.srv = &http.Server{Handler: http.HandlerFunc(c.serveLink), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)}
	c.ctx = c.life.Begin(context.Background(), c.eng)

	if err := c.life.RegisterFunction(engine.BuiltinWorker, engine.Function{ID: changedFunction,
		Description: "Advertises this engine's functions to its cluster after a change",
		Handler: func(context.Context, *engine.Call) (json.RawMessage, error) {
			c.advertiseSoon()
			return nil, nil
		}}); err != nil {
		ln.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	for _, typ := range []string{engine.TriggerFunctionsAvailable, engine.TriggerWorkersAvailable} {
		if _, err := c.eng.RegisterTrigger(ctx, engine.Trigger{ID: changedFunction + ":" + typ, Type: typ, FunctionID: changedFunction}); err != nil {
			ln.Close()
			return fmt.Errorf("cluster: bind %s: %w", typ, err)
		}
	}
	c.up.Store(true)
	c.eng.SetForwarder(c)

	// Each exits when Stop cancels c.ctx (Serve when it closes c.srv).
	c.life.Go(func() { c.srv.Serve(ln) })
	c.life.Go(c.registryLoop)
	c.life.Go(c.watchLoop)
	c.life.Go(c.sweepLoop)
	c.log.Info("cluster joined", "engine", c.name, "engine_id", c.id, "link", c.linkAddr,
		"heartbeat_ms", c.cfg.Heartbeat.Milliseconds(), "ttl_ms", c.cfg.TTL.Milliseconds())
	return nil
}

// Withdraw removes this engine's advertisement so peers stop forwarding to
// it (the first step of a clean stop). Calls already forwarded still finish.
func (c *Cluster) Withdraw(ctx context.Context) {
	c.mu.Lock()
	already := c.stopped
	c.stopped = true
	c.mu.Unlock()
	if already || c.ctx == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout(c.cfg.Heartbeat))
	defer cancel()
	pipe := c.rdb.TxPipeline()
	pipe.Del(ctx, c.engineKey(c.id))
	pipe.ZRem(ctx, c.keyEngines, c.id)
	pipe.Publish(ctx, c.keyChanged, "-"+c.id)
	if _, err := pipe.Exec(ctx); err != nil {
		c.log.Debug("cluster: withdraw failed; the advertisement expires on its own", "err", err)
	}
}

// Stop withdraws, fails calls still forwarded from here with
// invocation_stopped, closes the links and waits for the cluster's
// goroutines until ctx is done.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.ctx == nil {
		return c.rdb.Close()
	}
	c.Withdraw(ctx)
	c.eng.SetForwarder(nil)
	err := c.life.Stop(ctx, func() error {
		c.srv.Close() // listener; link conns are hijacked and closed below
		c.srvMu.Lock()
		for sc := range c.srvConn {
			sc.ws.CloseNow()
		}
		c.srvMu.Unlock()
		c.mu.Lock()
		peers := c.peers
		c.peers, c.byFn = map[string]*peer{}, map[string][]*peer{}
		c.mu.Unlock()
		for _, p := range peers {
			p.link.close("engine " + c.name + " left the cluster")
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("cluster: stop: %w", err)
	}
	c.log.Info("cluster left", "engine", c.name)
	return errors.Join(err, c.rdb.Close())
}

func (c *Cluster) advertiseSoon() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Cluster) resyncSoon() {
	select {
	case c.resyncCh <- struct{}{}:
	default:
	}
}

// registryLoop renews this engine's advertisement every heartbeat (at
// once after a local change) and re-reads the others' every heartbeat and
// whenever one of them announces a change.
func (c *Cluster) registryLoop() {
	t := time.NewTicker(c.cfg.Heartbeat)
	defer t.Stop()
	c.heartbeat()
	c.resync()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.heartbeat()
			c.resync()
		case <-c.kick:
			c.heartbeat()
		case <-c.resyncCh:
			c.resync()
		}
	}
}

// setUp records whether Redis answered; on a change it logs, and when Redis
// comes back it re-reads the registry. Only the registry loop calls it.
func (c *Cluster) setUp(ok bool, err error) {
	if c.up.Swap(ok) == ok {
		return
	}
	if ok {
		c.mu.Lock()
		c.rejoinUntil = time.Now().Add(c.cfg.TTL)
		c.mu.Unlock()
		c.log.Info("cluster: Redis reachable again; rebuilding the function table", "rebuild_ms", c.cfg.TTL.Milliseconds())
		c.resyncSoon()
		return
	}
	c.lastAd = nil // advertise and announce again when it returns
	c.log.Warn("cluster: Redis unreachable; calls without a local worker fail with cluster_unavailable until it returns", "err", err)
}

func (c *Cluster) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, opTimeout(c.cfg.Heartbeat))
}

// opTimeout bounds one Redis round trip of the registry.
func opTimeout(heartbeat time.Duration) time.Duration {
	return min(max(heartbeat, 500*time.Millisecond), 2*time.Second)
}

// heartbeat writes this engine's advertisement with its expiry and, when
// it changed, tells the others.
func (c *Cluster) heartbeat() {
	c.mu.RLock()
	stopped := c.stopped
	c.mu.RUnlock()
	if stopped || c.frozen.Load() {
		return
	}
	ad, err := json.Marshal(c.advert())
	if err != nil {
		c.log.Error("cluster: encode advertisement", "err", err)
		return
	}
	ctx, cancel := c.opCtx()
	defer cancel()
	changed := !bytes.Equal(ad, c.lastAd)
	pipe := c.rdb.TxPipeline()
	pipe.Set(ctx, c.engineKey(c.id), ad, c.cfg.TTL)
	pipe.ZAdd(ctx, c.keyEngines, redis.Z{Score: float64(time.Now().Add(c.cfg.TTL).UnixMilli()), Member: c.id})
	if changed {
		pipe.Publish(ctx, c.keyChanged, c.id)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if c.ctx.Err() == nil {
			c.setUp(false, err)
		}
		return
	}
	c.lastAd = ad
	c.setUp(true, nil)
}

// advert describes what this engine's own workers serve.
func (c *Cluster) advert() advert {
	snap := c.eng.Snapshot()
	ad := advert{ID: c.id, Name: c.name, Link: c.linkAddr, WorkerURL: c.opts.WorkerURL,
		Functions: []advFunc{}, Workers: []advWorker{}}
	for _, f := range snap.Functions {
		if len(f.WorkerIDs) == 0 {
			continue // in-process (every engine has its own) or another engine's
		}
		ad.Functions = append(ad.Functions, advFunc{ID: f.ID, Namespace: wireNS(f.Namespace), Description: f.Description,
			Metadata: f.Metadata, Workers: f.Workers, WorkerIDs: f.WorkerIDs})
	}
	for _, w := range snap.Workers {
		if w.Internal {
			continue
		}
		ad.Workers = append(ad.Workers, advWorker{ID: w.ID, Name: w.Name, Namespace: wireNS(w.Namespace), Description: w.Description,
			Runtime: w.Runtime, Version: w.Version, OS: w.OS, PID: w.PID, Status: w.Status, IPAddress: w.IPAddress,
			ConnectedAt: w.ConnectedAt.UnixMilli(), Active: w.ActiveInvocations, Functions: w.Functions})
	}
	for _, typ := range advertisedTriggerTypes {
		for _, t := range c.eng.Bindings(typ) {
			ad.Bindings = append(ad.Bindings, advBind{ID: t.ID, Type: t.Type, FunctionID: t.FunctionID,
				Config: t.Config, Metadata: t.Metadata})
		}
	}
	slices.SortFunc(ad.Bindings, func(a, b advBind) int { return cmpStr(a.ID, b.ID) })
	return ad
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// resync re-reads every live advertisement and rebuilds the table.
func (c *Cluster) resync() {
	ctx, cancel := c.opCtx()
	defer cancel()
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	//lint:ignore SA1019 ZRANGE BYSCORE needs Redis 6.2; ZRANGEBYSCORE works on every Redis we support
	ids, err := c.rdb.ZRangeByScore(ctx, c.keyEngines, &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		if c.ctx.Err() == nil {
			c.setUp(false, err)
		}
		return
	}
	c.rdb.ZRemRangeByScore(ctx, c.keyEngines, "-inf", now)
	ids = slices.DeleteFunc(ids, func(id string) bool { return id == c.id })
	ads := map[string]advert{}
	if len(ids) > 0 {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = c.engineKey(id)
		}
		vals, err := c.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			if c.ctx.Err() == nil {
				c.setUp(false, err)
			}
			return
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // expired since the index was read
			}
			var ad advert
			if err := json.Unmarshal([]byte(s), &ad); err != nil || ad.ID != ids[i] || ad.Link == "" {
				c.log.Warn("cluster: unreadable advertisement ignored", "engine_id", ids[i], "err", err)
				continue
			}
			ads[ad.ID] = ad
		}
	}
	c.setUp(true, nil)
	c.apply(ads, false)
}

// apply replaces the peer table with ads: peers that left have their
// links closed (their calls in flight end with invocation_stopped), new
// ones are dialled. While the table is rebuilt after a Redis outage, a
// peer missing from ads is kept as long as its link is usable, unless
// withdrawn says it left.
func (c *Cluster) apply(ads map[string]advert, withdrawn bool) {
	var joined, left []*peer
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	if !withdrawn && time.Now().Before(c.rejoinUntil) {
		for id, p := range c.peers {
			if _, ok := ads[id]; !ok && p.link.usable() {
				ads[id] = p.ad
			}
		}
	}
	next := make(map[string]*peer, len(ads))
	for id, ad := range ads {
		p := c.peers[id]
		switch {
		case p == nil:
			p = &peer{ad: ad, link: c.newLink(ad)}
			joined = append(joined, p)
		case p.ad.Link != ad.Link:
			left = append(left, p)
			p = &peer{ad: ad, link: c.newLink(ad)}
			joined = append(joined, p)
		default:
			p = &peer{ad: ad, link: p.link}
		}
		next[id] = p
	}
	for id, p := range c.peers {
		if next[id] == nil {
			left = append(left, p)
		}
	}
	byFn := map[string][]*peer{}
	for _, p := range next {
		for _, f := range p.ad.Functions {
			k := fnKey(f.Namespace, f.ID)
			byFn[k] = append(byFn[k], p)
		}
	}
	c.peers, c.byFn = next, byFn
	c.mu.Unlock()
	for _, p := range left {
		c.log.Info("cluster peer left", "engine", p.ad.Name, "engine_id", p.ad.ID)
		p.link.close("engine " + p.ad.Name + " left the cluster")
	}
	for _, p := range joined {
		c.log.Info("cluster peer joined", "engine", p.ad.Name, "engine_id", p.ad.ID, "link", p.ad.Link,
			"workers", len(p.ad.Workers), "functions", len(p.ad.Functions))
		p.link.start()
	}
}

// drop removes one peer at once (it announced it is leaving).
func (c *Cluster) drop(id string) {
	c.mu.RLock()
	ads := make(map[string]advert, len(c.peers))
	for pid, p := range c.peers {
		if pid != id {
			ads[pid] = p.ad
		}
	}
	c.mu.RUnlock()
	c.apply(ads, true)
}

// watchLoop listens for other engines' change announcements. go-redis
// re-subscribes by itself after a connection loss.
func (c *Cluster) watchLoop() {
	ps := c.rdb.Subscribe(c.ctx, c.keyChanged)
	defer ps.Close()
	ch := ps.Channel(redis.WithChannelHealthCheckInterval(c.cfg.Heartbeat))
	for {
		select {
		case <-c.ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch id := m.Payload; {
			case id == c.id:
			case len(id) > 1 && id[0] == '-':
				c.drop(id[1:])
			default:
				c.resyncSoon()
			}
		}
	}
}

// sweepLoop fails forwarded calls past their deadline.
func (c *Cluster) sweepLoop() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			c.mu.RLock()
			links := make([]*link, 0, len(c.peers))
			for _, p := range c.peers {
				links = append(links, p.link)
			}
			c.mu.RUnlock()
			for _, l := range links {
				l.expire(now)
			}
		}
	}
}

// Namespaces. A call resolves by (namespace, function id), on every
// engine alike: the table of peers is keyed by fnKey, and a forwarded call
// names its namespace, so a call for F in namespace N reaches only an
// engine whose workers serve F in N. The default namespace is left out of
// advertisements and link frames (wireNS), which keeps their format as it
// was before namespaces.

// fnKey is the peer table's key of id in namespace ns: the bare id in the
// default namespace, "ns\x00id" elsewhere (the engine's function keys).
func fnKey(ns, id string) string {
	if ns == "" || ns == engine.DefaultNamespace {
		return id
	}
	return ns + "\x00" + id
}

// wireNS is ns as advertisements and link frames carry it: "" for the
// default namespace.
func wireNS(ns string) string {
	if ns == engine.DefaultNamespace {
		return ""
	}
	return ns
}

func nsOrDefault(ns string) string {
	if ns == "" {
		return engine.DefaultNamespace
	}
	return ns
}

// Forward implements engine.Forwarder.
func (c *Cluster) Forward(call *engine.Call, timeout time.Duration, done func(json.RawMessage, *protocol.ErrorBody)) bool {
	if !c.up.Load() {
		done(nil, &protocol.ErrorBody{Code: engine.CodeClusterUnavailable,
			Message: fmt.Sprintf("function %s has no worker on this engine and the cluster registry (Redis) is unreachable", call.FunctionID)})
		return true
	}
	c.mu.RLock()
	ps := c.byFn[fnKey(call.Namespace, call.FunctionID)]
	if len(ps) == 0 && strings.HasPrefix(call.FunctionID, "engine::") {
		ps = c.byFn[call.FunctionID] // engine::* ids resolve in the default namespace from everywhere
	}
	var p *peer
	if n := len(ps); n > 0 {
		start := int(c.rr.Add(1))
		for i := range n {
			q := ps[(start+i)%n]
			if q.link.usable() {
				p = q
				break
			}
		}
		if p == nil {
			p = ps[start%n]
		}
	}
	c.mu.RUnlock()
	if p == nil {
		return false
	}
	p.link.call(call, timeout, done)
	return true
}

// RemoteFunctions implements engine.ClusterView.
func (c *Cluster) RemoteFunctions() []engine.FunctionInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []engine.FunctionInfo
	for _, p := range c.peers {
		for _, f := range p.ad.Functions {
			out = append(out, engine.FunctionInfo{ID: f.ID, Namespace: nsOrDefault(f.Namespace), Description: f.Description, Metadata: f.Metadata,
				Workers: f.Workers, WorkerIDs: f.WorkerIDs, Engines: []string{p.ad.Name}})
		}
	}
	return out
}

// RemoteWorkers implements engine.ClusterView.
func (c *Cluster) RemoteWorkers() []engine.WorkerInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []engine.WorkerInfo
	for _, p := range c.peers {
		for _, w := range p.ad.Workers {
			out = append(out, engine.WorkerInfo{ID: w.ID, Name: w.Name, Namespace: nsOrDefault(w.Namespace), Description: w.Description, Runtime: w.Runtime,
				Version: w.Version, OS: w.OS, PID: w.PID, Status: w.Status, IPAddress: w.IPAddress,
				ConnectedAt: time.UnixMilli(w.ConnectedAt), ActiveInvocations: w.Active, Functions: w.Functions,
				Engine: p.ad.Name})
		}
	}
	return out
}

// RemoteBindings implements engine.ClusterView.
func (c *Cluster) RemoteBindings(triggerType string) []engine.Trigger {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []engine.Trigger
	for _, p := range c.peers {
		for _, b := range p.ad.Bindings {
			if b.Type == triggerType {
				out = append(out, engine.Trigger{ID: b.ID, Type: b.Type, FunctionID: b.FunctionID,
					Config: b.Config, Metadata: b.Metadata})
			}
		}
	}
	return out
}

// RemoteMetadata implements engine.ClusterView.
func (c *Cluster) RemoteMetadata(ns, id string) json.RawMessage {
	ns = nsOrDefault(ns)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, p := range c.byFn[fnKey(ns, id)] {
		for _, f := range p.ad.Functions {
			if f.ID == id && nsOrDefault(f.Namespace) == ns {
				return f.Metadata
			}
		}
	}
	return nil
}

// Peers lists the other engines, by name.
func (c *Cluster) Peers() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.peers))
	for _, p := range c.peers {
		out = append(out, p.ad.Name)
	}
	slices.Sort(out)
	return out
}

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

// ClusterOptions configures `iii bench cluster`: two `iii start` engines of
// one cluster on one real redis-server, loaded by Go SDK workers in this
// process.
type ClusterOptions struct {
	// Concurrency is the number of calls in flight in each throughput case.
	Concurrency int
	// Duration is how long each throughput case runs in each round.
	Duration time.Duration
	// Latency is how long the one-call-at-a-time latency phase runs.
	Latency time.Duration
	Warmup  time.Duration
	// Rounds alternates the throughput cases this many times (the order
	// rotates each round) and reports the median round of each.
	Rounds  int
	Payload int
	// EngineProcs, when positive, is each engine's GOMAXPROCS: with 1,
	// each engine is held to one core, as if each had a host of its own
	// of one core.
	EngineProcs int
	// RedisServer is the redis-server binary (default: from PATH).
	RedisServer string
	Executable  string
	Logger      *slog.Logger
}

func (o *ClusterOptions) check() error {
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Concurrency < 2 {
		return errors.New("bench cluster: --concurrency must be at least 2 (one caller per engine)")
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.Latency <= 0 {
		o.Latency = 5 * time.Second
	}
	if o.Warmup < 0 || o.Payload < 0 || o.EngineProcs < 0 {
		return errors.New("bench cluster: negative --warmup, --payload or --engine-procs")
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.RedisServer == "" {
		p, err := exec.LookPath("redis-server")
		if err != nil {
			return errors.New("bench cluster: redis-server not found on PATH (apt-get install redis-server, brew install redis), or pass --redis-server")
		}
		o.RedisServer = p
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Throughput cases of `iii bench cluster`.
const (
	CaseOneEngine     = "one engine"
	CaseTwoLocal      = "two engines, calls local"
	CaseTwoHalfCross  = "two engines, half cross"
	clusterFnA        = "bench::a"  // served on engine a
	clusterFnA2       = "bench::a2" // a second server on engine a (the one-engine case)
	clusterFnB        = "bench::b"  // served on engine b
	clusterNamePrefix = "bench"
)

// ClusterCase is one throughput case: the median round, with each
// engine's CPU in that round.
type ClusterCase struct {
	Result
	// EngineCPU is the CPU of engine a and engine b in the median round,
	// in percent of one core.
	EngineCPU [2]float64 `json:"engine_cpu_percent"`
	// EngineCPUPerCall is both engines' CPU time (user + system) per
	// successful call in the median round, in microseconds: what a call
	// costs the cluster whatever else the machine runs.
	EngineCPUPerCall float64 `json:"engine_cpu_us_per_call"`
	// LoaderCPU is this process's CPU (the workers making and serving
	// the calls) in the median round.
	LoaderCPU float64 `json:"loader_cpu_percent"`
	// VsOne is the median over the rounds of this case's calls/s divided
	// by the one-engine case's in the same round: each ratio compares
	// measurements seconds apart, so a machine whose load drifts over the
	// run still gives comparable figures.
	VsOne float64 `json:"vs_one_engine,omitempty"`
	// VsOneRounds are the per-round ratios.
	VsOneRounds []float64 `json:"vs_one_engine_rounds,omitempty"`
	// Rounds are each round's calls/s, in round order.
	Rounds []float64 `json:"rounds_calls_per_sec"`
}

// ClusterReport is a whole `iii bench cluster` run.
type ClusterReport struct {
	Concurrency int    `json:"concurrency"`
	Payload     int    `json:"payload_bytes"`
	Rounds      int    `json:"rounds"`
	EngineProcs int    `json:"engine_gomaxprocs,omitempty"`
	CPUs        int    `json:"cpus"`
	GoVersion   string `json:"go_version"`
	// LoadBefore and LoadAfter are the machine's 1, 5 and 15 minute load
	// averages at the start and the end of the run.
	LoadBefore [3]float64 `json:"load_before"`
	LoadAfter  [3]float64 `json:"load_after"`
	// LocalCall and CrossCall: one call at a time from a worker on engine
	// a, alternating a function on a and one on b.
	LocalCall Result `json:"local_call"`
	CrossCall Result `json:"cross_call"`
	// Cases are the throughput cases, in the order above.
	Cases []ClusterCase `json:"cases"`
}

// Cluster runs `iii bench cluster`.
func Cluster(ctx context.Context, o ClusterOptions) (rep *ClusterReport, err error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	rep = &ClusterReport{Concurrency: o.Concurrency, Payload: o.Payload, Rounds: o.Rounds, EngineProcs: o.EngineProcs,
		CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadAvg()}
	rs, err := startRedis(ctx, o.RedisServer, o.Logger)
	if err != nil {
		return nil, err
	}
	defer rs.stop()
	name := fmt.Sprintf("%s%d", clusterNamePrefix, time.Now().UnixNano())
	var engines [2]*child
	defer func() {
		for _, e := range engines {
			if e != nil {
				e.stop()
			}
		}
	}()
	for i := range engines {
		if engines[i], err = startClusterEngine(ctx, o, rs.url, name, i); err != nil {
			return nil, err
		}
	}
	opts := []sdk.Option{sdk.WithTelemetry(false), sdk.WithQueueLimit(o.Concurrency*2 + 16),
		sdk.WithLogger(slog.New(slog.DiscardHandler))}
	var workers []*sdk.Worker
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, w := range workers {
			w.Close(cctx)
		}
	}()
	connect := func(url, wname string) (*sdk.Worker, error) {
		w, err := sdk.Connect(ctx, url, append(opts, sdk.WithName(wname))...)
		if err != nil {
			return nil, fmt.Errorf("bench cluster: connect to %s: %w", url, err)
		}
		workers = append(workers, w)
		return w, nil
	}
	echo := func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }
	for _, s := range []struct {
		engine int
		fn     string
	}{{0, clusterFnA}, {0, clusterFnA2}, {1, clusterFnB}} {
		w, err := connect(engines[s.engine].url, "bench-server-"+s.fn[len("bench::"):])
		if err != nil {
			return nil, err
		}
		if err := w.RegisterFunction(s.fn, echo); err != nil {
			return nil, fmt.Errorf("bench cluster: register %s: %w", s.fn, err)
		}
	}
	callA, err := connect(engines[0].url, "bench-caller-a")
	if err != nil {
		return nil, err
	}
	callA2, err := connect(engines[0].url, "bench-caller-a2")
	if err != nil {
		return nil, err
	}
	callB, err := connect(engines[1].url, "bench-caller-b")
	if err != nil {
		return nil, err
	}
	payload := padded(o.Payload)
	// Each engine learns the other's functions within a heartbeat.
	for _, r := range []struct {
		w  *sdk.Worker
		fn string
	}{{callA, clusterFnA}, {callA2, clusterFnA2}, {callB, clusterFnB}, {callA, clusterFnB}, {callB, clusterFnA}} {
		if err := waitReady(ctx, r.w, r.fn, payload); err != nil {
			return nil, fmt.Errorf("bench cluster: %w", err)
		}
	}

	cases := []struct {
		name  string
		lanes []lane
	}{
		{CaseOneEngine, []lane{{callA, []string{clusterFnA}}, {callA2, []string{clusterFnA2}}}},
		{CaseTwoLocal, []lane{{callA, []string{clusterFnA}}, {callB, []string{clusterFnB}}}},
		{CaseTwoHalfCross, []lane{{callA, []string{clusterFnA, clusterFnB}}, {callB, []string{clusterFnB, clusterFnA}}}},
	}
	if o.Warmup > 0 {
		for _, c := range cases {
			runLanes(ctx, c.lanes, payload, o.Concurrency, o.Warmup)
		}
	}

	// Latency: one call at a time, local and cross alternating, so both
	// meet the same machine.
	local, cross := latencyPairs(ctx, callA, clusterFnA, clusterFnB, payload, o.Latency)
	rep.LocalCall, rep.CrossCall = *local, *cross
	rep.LocalCall.Target, rep.CrossCall.Target = "local call", "cross-engine call"

	type sample struct {
		res     *Result
		cpu     [2]float64
		cpuTime time.Duration // both engines'
		loader  float64
	}
	self := os.Getpid()
	per := make([][]sample, len(cases))
	for r := range o.Rounds {
		for k := range cases {
			i := (k + r) % len(cases) // rotate the order each round
			var before [2]procSample
			for e := range engines {
				before[e] = engines[e].sample()
			}
			selfBefore, _ := readProc(self)
			res := runLanes(ctx, cases[i].lanes, payload, o.Concurrency, o.Duration)
			res.Target = cases[i].name
			selfAfter, _ := readProc(self)
			s := sample{res: res, loader: selfAfter.cpuPercentSince(selfBefore)}
			for e := range engines {
				after := engines[e].sample()
				s.cpu[e] = after.cpuPercentSince(before[e])
				s.cpuTime += after.cpu - before[e].cpu
			}
			per[i] = append(per[i], s)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	for i, ss := range per {
		sorted := slices.Clone(ss)
		slices.SortFunc(sorted, func(a, b sample) int {
			switch {
			case a.res.CallsPerSec < b.res.CallsPerSec:
				return -1
			case a.res.CallsPerSec > b.res.CallsPerSec:
				return 1
			}
			return 0
		})
		med := sorted[len(sorted)/2]
		cc := ClusterCase{Result: *med.res, EngineCPU: med.cpu, LoaderCPU: med.loader}
		if ok := med.res.Calls - med.res.Errors; ok > 0 {
			cc.EngineCPUPerCall = float64(med.cpuTime.Microseconds()) / float64(ok)
		}
		for r, s := range ss {
			cc.Rounds = append(cc.Rounds, s.res.CallsPerSec)
			if one := per[0][r].res.CallsPerSec; i > 0 && one > 0 {
				cc.VsOneRounds = append(cc.VsOneRounds, s.res.CallsPerSec/one)
			}
		}
		if n := len(cc.VsOneRounds); n > 0 {
			sorted := slices.Clone(cc.VsOneRounds)
			slices.Sort(sorted)
			cc.VsOne = sorted[n/2]
			if n%2 == 0 {
				cc.VsOne = (sorted[n/2-1] + sorted[n/2]) / 2
			}
		}
		rep.Cases = append(rep.Cases, cc)
	}
	rep.LoadAfter = loadAvg()
	return rep, nil
}

// lane is one caller and the functions its calls cycle through.
type lane struct {
	w   *sdk.Worker
	fns []string
}

// runLanes keeps concurrency calls in flight for d, spread over the lanes;
// each in-flight slot cycles through its lane's functions.
func runLanes(parent context.Context, lanes []lane, payload json.RawMessage, concurrency int, d time.Duration) *Result {
	ctx, cancel := context.WithTimeout(parent, d)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lat   []time.Duration
		calls atomic.Int64
		errs  atomic.Int64
		codes = map[string]int{}
		start = time.Now()
	)
	for i := range concurrency {
		l := lanes[i%len(lanes)]
		wg.Add(1)
		// Exits when the run's context expires.
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for k := i / len(lanes); ctx.Err() == nil; k++ {
				t0 := time.Now()
				_, err := l.w.Trigger(parent, sdk.TriggerRequest{FunctionID: l.fns[k%len(l.fns)], Payload: payload, Timeout: 30 * time.Second})
				local = append(local, time.Since(t0))
				calls.Add(1)
				if err != nil {
					errs.Add(1)
					mu.Lock()
					codes[errorCode(err)]++
					mu.Unlock()
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(lat, calls.Load(), errs.Load(), codes, time.Since(start))
}

// latencyPairs alternates one call to local and one to cross until d has
// passed and returns the latencies of each.
func latencyPairs(parent context.Context, w *sdk.Worker, local, cross string, payload json.RawMessage, d time.Duration) (*Result, *Result) {
	ctx, cancel := context.WithTimeout(parent, d)
	defer cancel()
	type side struct {
		fn    string
		lat   []time.Duration
		errs  int64
		codes map[string]int
	}
	sides := [2]*side{{fn: local, codes: map[string]int{}}, {fn: cross, codes: map[string]int{}}}
	start := time.Now()
	for k := 0; ctx.Err() == nil; k++ {
		s := sides[k%2]
		t0 := time.Now()
		_, err := w.Trigger(parent, sdk.TriggerRequest{FunctionID: s.fn, Payload: payload, Timeout: 30 * time.Second})
		s.lat = append(s.lat, time.Since(t0))
		if err != nil {
			s.errs++
			s.codes[errorCode(err)]++
		}
	}
	el := time.Since(start)
	var out [2]*Result
	for i, s := range sides {
		out[i] = summarize(s.lat, int64(len(s.lat)), s.errs, s.codes, el)
	}
	return out[0], out[1]
}

func errorCode(err error) string {
	var eb *protocol.ErrorBody
	if errors.As(err, &eb) {
		return eb.Code
	}
	return "error"
}

func summarize(lat []time.Duration, calls, errs int64, codes map[string]int, el time.Duration) *Result {
	slices.Sort(lat)
	res := &Result{Calls: calls, Errors: errs, Seconds: el.Seconds(), CallsPerSec: float64(calls-errs) / el.Seconds()}
	if len(codes) > 0 {
		res.ErrorCodes = codes
	}
	if n := len(lat); n > 0 {
		res.P50, res.P90 = Millis(lat[n*50/100]), Millis(lat[n*90/100])
		res.P99, res.Max = Millis(lat[n*99/100]), Millis(lat[n-1])
	}
	return res
}

// loadAvg reads the 1, 5 and 15 minute load averages (zeros where
// /proc/loadavg does not exist).
func loadAvg() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(b)) {
		if i == len(out) {
			break
		}
		out[i], _ = strconv.ParseFloat(f, 64)
	}
	return out
}

// startClusterEngine runs engine i of the cluster: `iii start` with the
// bare core, the cluster's Redis and default heartbeat and expiry.
func startClusterEngine(ctx context.Context, o ClusterOptions, redisURL, name string, i int) (*child, error) {
	yaml := fmt.Sprintf("engine:\n  host: 127.0.0.1\n  port: 0\nredis:\n  url: %q\ncluster:\n  name: %s\nmodules: []\n", redisURL, name)
	dir, cfg, err := configDir("iii-bench-cluster-*", yaml)
	if err != nil {
		return nil, err
	}
	var env []string
	if o.EngineProcs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(o.EngineProcs))
	}
	return launch(ctx, o.Executable, []string{"start", "--config", cfg, "--log-level", "info"}, env,
		dir, fmt.Sprintf("engine %c", 'a'+i), false, 15*time.Second, o.Logger)
}

// redisProc is the benchmark's own redis-server.
type redisProc struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

// startRedis runs redis-server on a free loopback port, without
// persistence, and waits until it answers.
func startRedis(ctx context.Context, bin string, log *slog.Logger) (*redisProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--loglevel", "warning")
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench cluster: start %s: %w", bin, err)
	}
	r := &redisProc{cmd: cmd, url: fmt.Sprintf("redis://127.0.0.1:%d", port), done: make(chan struct{})}
	// Exits when redis-server exits and its output closes.
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			log.Debug("redis-server output", "line", sc.Text())
		}
		cmd.Wait()
	}()
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return r, nil
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("bench cluster: redis-server exited at start (port %d)", port)
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("bench cluster: redis-server on port %d not answering after 10s: %w", port, err)
		}
	}
}

func (r *redisProc) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
}

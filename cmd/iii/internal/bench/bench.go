// Package bench is the load generator behind `iii bench`: Go SDK workers
// serving an echo function, callers keeping a fixed number of calls in
// flight, and the measurements (throughput, latency percentiles, the
// engine process's CPU and memory). The engine under test runs in a child
// process (this same binary, `iii start`), so what is measured is the
// engine alone; with Baseline the same traffic also goes through a minimal
// relay (package relay) in another child, in the same run, for a ratio.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

// EchoFunction is the function the benchmark workers serve.
const EchoFunction = "bench::echo"

// Options configures a run.
type Options struct {
	// Address of a running engine; empty starts one in a child process.
	Address string
	Token   string
	// Workers serving EchoFunction (ignored with Function).
	Workers int
	// Concurrency is the number of calls kept in flight.
	Concurrency int
	Duration    time.Duration
	Warmup      time.Duration
	// Payload is the size in bytes of the JSON payload of each call.
	Payload int
	// Baseline also measures the minimal relay with the same traffic.
	Baseline bool
	// Rounds alternates baseline and engine this many times (each for
	// Duration) and reports the median round of each, so drift of a busy
	// machine hits both sides alike; odd rounds run the baseline first,
	// even rounds the engine. Default 1.
	Rounds int
	// Function and Data load a user's function on a running engine
	// instead of the echo workers.
	Function string
	Data     json.RawMessage
	// Executable is this binary, used to start the engine and relay
	// children.
	Executable string
	Logger     *slog.Logger
}

func (o *Options) check() error {
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup < 0 {
		return errors.New("bench: negative warmup")
	}
	if o.Payload < 0 {
		return errors.New("bench: negative payload size")
	}
	if o.Function != "" && o.Address == "" {
		return errors.New("bench: --function loads a running engine: give --address too")
	}
	if o.Function != "" && o.Baseline {
		return errors.New("bench: --baseline compares echo traffic; it does not apply to --function")
	}
	if o.Data == nil {
		o.Data = json.RawMessage("null")
	}
	if o.Rounds <= 0 {
		o.Rounds = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Result is one measured target.
type Result struct {
	Target     string         `json:"target"` // engine, baseline, or the address
	Calls      int64          `json:"calls"`  // calls made, successful or not
	Errors     int64          `json:"errors"`
	ErrorCodes map[string]int `json:"error_codes,omitempty"`
	Seconds    float64        `json:"seconds"`
	// CallsPerSec counts successful calls only.
	CallsPerSec float64 `json:"calls_per_sec"`
	P50         Millis  `json:"p50_ms"`
	P90         Millis  `json:"p90_ms"`
	P99         Millis  `json:"p99_ms"`
	Max         Millis  `json:"max_ms"`
	// Of the process serving the target (not this load generator); zero
	// when it runs elsewhere (--address).
	CPUPercent float64 `json:"cpu_percent,omitempty"`
	RSSBytes   int64   `json:"rss_bytes,omitempty"`
	// CPUPerCall is the serving process's CPU time (user + system) per
	// successful call, in microseconds.
	CPUPerCall float64 `json:"cpu_us_per_call,omitempty"`
	// AllocsPerCall and AllocBytesPerCall are the serving process's heap
	// allocations per successful call (a Go child answering probes, see
	// EnvProbe); zero otherwise.
	AllocsPerCall     float64 `json:"allocs_per_call,omitempty"`
	AllocBytesPerCall float64 `json:"alloc_bytes_per_call,omitempty"`
}

// Millis is a duration shown in milliseconds.
type Millis time.Duration

// MarshalJSON writes fractional milliseconds.
func (m Millis) MarshalJSON() ([]byte, error) {
	return json.Marshal(float64(time.Duration(m).Microseconds()) / 1000)
}

func (m Millis) String() string {
	return fmt.Sprintf("%.3fms", float64(time.Duration(m).Microseconds())/1000)
}

// Report is a whole run.
type Report struct {
	Workers     int      `json:"workers"`
	Rounds      int      `json:"rounds"`
	Concurrency int      `json:"concurrency"`
	Payload     int      `json:"payload_bytes"`
	Function    string   `json:"function"`
	Engine      Result   `json:"engine"`
	Baseline    *Result  `json:"baseline,omitempty"`
	Ratio       *float64 `json:"ratio,omitempty"` // engine calls/s ÷ baseline calls/s
	P50Ratio    *float64 `json:"p50_ratio,omitempty"`
	P99Ratio    *float64 `json:"p99_ratio,omitempty"`
	CPURatio    *float64 `json:"cpu_per_call_ratio,omitempty"` // engine ÷ baseline
	// NoRatio says why no ratio is given: a side had errors in a round.
	NoRatio   string `json:"no_ratio,omitempty"`
	GoVersion string `json:"go_version"`
	CPUs      int    `json:"cpus"`
}

// Run measures the engine (and the baseline relay, when asked).
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	rep := &Report{Workers: o.Workers, Rounds: o.Rounds, Concurrency: o.Concurrency, Payload: o.Payload,
		Function: cmp(o.Function, EchoFunction), GoVersion: runtime.Version(), CPUs: runtime.NumCPU()}
	var engines, baselines []*Result
	var engineErrs, baselineErrs int64
	measureBaseline := func() error {
		res, err := measureChild(ctx, o, "baseline")
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		baselineErrs += res.Errors
		baselines = append(baselines, res)
		return nil
	}
	for round := range o.Rounds {
		// Alternate which side runs first, so neither always gets the
		// cooler (or warmer) machine.
		baselineFirst := round%2 == 0
		if o.Baseline && baselineFirst {
			if err := measureBaseline(); err != nil {
				return nil, err
			}
		}
		var (
			res *Result
			err error
		)
		if o.Address != "" {
			res, err = measure(ctx, o, o.Address, nil)
			if res != nil {
				res.Target = o.Address
			}
		} else {
			res, err = measureChild(ctx, o, "engine")
		}
		if err != nil {
			return nil, err
		}
		engineErrs += res.Errors
		engines = append(engines, res)
		if o.Baseline && !baselineFirst {
			if err := measureBaseline(); err != nil {
				return nil, err
			}
		}
	}
	rep.Engine = *median(engines)
	if len(baselines) > 0 {
		rep.Baseline = median(baselines)
	}
	res := &rep.Engine
	if o.Baseline && (engineErrs > 0 || baselineErrs > 0) {
		// Errors are not throughput, and a side that failed calls did
		// less work: no ratio then, only the counts.
		rep.NoRatio = fmt.Sprintf("no ratio: the engine had %d failed calls and the baseline %d over %d round(s)",
			engineErrs, baselineErrs, o.Rounds)
		return rep, nil
	}
	if b := rep.Baseline; b != nil && b.CallsPerSec > 0 {
		if b.CPUPerCall > 0 && res.CPUPerCall > 0 {
			c := res.CPUPerCall / b.CPUPerCall
			rep.CPURatio = &c
		}
		r := res.CallsPerSec / b.CallsPerSec
		rep.Ratio = &r
		if b.P50 > 0 {
			p := float64(res.P50) / float64(b.P50)
			rep.P50Ratio = &p
		}
		if b.P99 > 0 {
			p := float64(res.P99) / float64(b.P99)
			rep.P99Ratio = &p
		}
	}
	return rep, nil
}

// median is the round with the median throughput.
func median(rs []*Result) *Result {
	slices.SortFunc(rs, func(a, b *Result) int {
		switch {
		case a.CallsPerSec < b.CallsPerSec:
			return -1
		case a.CallsPerSec > b.CallsPerSec:
			return 1
		}
		return 0
	})
	return rs[len(rs)/2]
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// measureChild starts the target in a child process and measures it.
func measureChild(ctx context.Context, o Options, target string) (*Result, error) {
	child, err := startChild(ctx, o.Executable, target, o.Logger)
	if err != nil {
		return nil, err
	}
	defer child.stop()
	res, err := measure(ctx, o, child.url, child)
	if res != nil {
		res.Target = target
	}
	return res, err
}

// measure runs the traffic against url. probe, when not nil, samples the
// serving process.
func measure(ctx context.Context, o Options, url string, probe *child) (*Result, error) {
	var opts []sdk.Option
	if o.Token != "" {
		opts = append(opts, sdk.WithBearerToken(o.Token))
	}
	// The load's own workers export no spans: the benchmark measures the
	// router (and the relay does not take telemetry).
	opts = append(opts, sdk.WithQueueLimit(o.Concurrency*2+16), sdk.WithTelemetry(false))
	var closers []*sdk.Worker
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, w := range closers {
			w.Close(cctx)
		}
	}()
	connect := func(name string) (*sdk.Worker, error) {
		w, err := sdk.Connect(ctx, url, append(opts, sdk.WithName(name))...)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", url, err)
		}
		closers = append(closers, w)
		return w, nil
	}
	fn := o.Function
	if fn == "" {
		fn = EchoFunction
		for i := range o.Workers {
			w, err := connect(fmt.Sprintf("bench-worker-%d", i))
			if err != nil {
				return nil, err
			}
			if err := w.RegisterFunction(EchoFunction, func(_ context.Context, in json.RawMessage) (any, error) {
				return in, nil
			}); err != nil {
				return nil, err
			}
		}
	}
	payload := o.Data
	if o.Function == "" {
		payload = padded(o.Payload)
	}
	callers := make([]*sdk.Worker, max(1, min(o.Workers, o.Concurrency)))
	for i := range callers {
		w, err := connect(fmt.Sprintf("bench-caller-%d", i))
		if err != nil {
			return nil, err
		}
		callers[i] = w
	}
	if err := waitReady(ctx, callers[0], fn, payload); err != nil {
		return nil, err
	}
	if o.Warmup > 0 {
		run(ctx, callers, fn, payload, o.Concurrency, o.Warmup)
	}
	var (
		before       procSample
		allocsBefore allocCounts
		probed       bool
	)
	if probe != nil {
		allocsBefore, probed = probe.allocs()
		before = probe.sample()
	}
	res := run(ctx, callers, fn, payload, o.Concurrency, o.Duration)
	if probe != nil {
		after := probe.sample()
		res.CPUPercent = after.cpuPercentSince(before)
		res.RSSBytes = after.rss
		if ok := res.Calls - res.Errors; ok > 0 {
			res.CPUPerCall = float64((after.cpu - before.cpu).Microseconds()) / float64(ok)
			if allocsAfter, answered := probe.allocs(); probed && answered {
				res.AllocsPerCall = float64(allocsAfter.Objects-allocsBefore.Objects) / float64(ok)
				res.AllocBytesPerCall = float64(allocsAfter.Bytes-allocsBefore.Bytes) / float64(ok)
			}
		}
	}
	return res, ctx.Err()
}

// padded is a JSON object of exactly n bytes (at least the 10 of its
// frame), so calls carry the payload size asked for.
func padded(n int) json.RawMessage {
	const frame = `{"p":""}`
	if n <= len(frame) {
		return json.RawMessage(frame)
	}
	return json.RawMessage(`{"p":"` + strings.Repeat("x", n-len(frame)) + `"}`)
}

// waitReady calls fn until it succeeds: the workers' registrations and
// the callers' connections have reached the target.
func waitReady(ctx context.Context, w *sdk.Worker, fn string, payload json.RawMessage) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: fn, Payload: payload, Timeout: time.Second})
		var eb *protocol.ErrorBody
		if err == nil || (errors.As(err, &eb) && eb.Code != "function_not_found" && eb.Code != "TIMEOUT") {
			return nil // a user function may fail; it is reachable
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not callable after 10s: %w", fn, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// run keeps concurrency calls of fn in flight for d, spread over the
// callers, and collects latencies (runLanes with one function per lane).
func run(parent context.Context, callers []*sdk.Worker, fn string, payload json.RawMessage, concurrency int, d time.Duration) *Result {
	lanes := make([]lane, len(callers))
	for i, w := range callers {
		lanes[i] = lane{w: w, fns: []string{fn}}
	}
	return runLanes(parent, lanes, payload, concurrency, d)
}

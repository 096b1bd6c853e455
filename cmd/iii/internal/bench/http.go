package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iii-workbench/iii/cmd/iii/internal/bench/relay"
	"github.com/iii-workbench/iii/sdk"
)

// HTTPFunction is the function behind the HTTP benchmark's route.
const HTTPFunction = "bench::http"

// HTTPPath is the route the HTTP benchmark requests.
const HTTPPath = "/bench/echo"

// HTTPOptions configures `iii bench http`.
type HTTPOptions struct {
	Duration    time.Duration
	Connections int
	Baseline    bool
	// Loader is "wrk" (a separate process, when on PATH), "go" (this
	// process), or "" to pick wrk when it is installed.
	Loader     string
	Executable string
	Logger     *slog.Logger
}

// HTTPResult is one measured HTTP target.
type HTTPResult struct {
	Target      string  `json:"target"`
	Loader      string  `json:"loader"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	RequestsSec float64 `json:"requests_per_sec"`
	P50         Millis  `json:"p50_ms"`
	P99         Millis  `json:"p99_ms"`
	CPUPercent  float64 `json:"cpu_percent,omitempty"`
}

// HTTPReport compares the HTTP trigger with the baseline.
type HTTPReport struct {
	Connections int         `json:"connections"`
	Engine      HTTPResult  `json:"engine"`
	Baseline    *HTTPResult `json:"baseline,omitempty"`
	Ratio       *float64    `json:"ratio,omitempty"`
}

// HTTP measures requests/s through the HTTP module to a Go SDK worker, and
// with Baseline through a bare net/http handler that relays each request
// over one WebSocket to the same kind of worker.
func HTTP(ctx context.Context, o HTTPOptions) (*HTTPReport, error) {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Connections <= 0 {
		o.Connections = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch o.Loader {
	case "":
		o.Loader = "go"
		if _, err := exec.LookPath("wrk"); err == nil {
			o.Loader = "wrk"
		}
	case "go", "wrk":
	default:
		return nil, fmt.Errorf("bench: unknown loader %q (wrk or go)", o.Loader)
	}
	rep := &HTTPReport{Connections: o.Connections}
	if o.Baseline {
		res, err := measureHTTP(ctx, o, "baseline-http")
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		rep.Baseline = res
	}
	res, err := measureHTTP(ctx, o, "engine-http")
	if err != nil {
		return nil, err
	}
	rep.Engine = *res
	if b := rep.Baseline; b != nil && b.RequestsSec > 0 {
		r := res.RequestsSec / b.RequestsSec
		rep.Ratio = &r
	}
	return rep, nil
}

func measureHTTP(ctx context.Context, o HTTPOptions, target string) (*HTTPResult, error) {
	c, err := startChild(ctx, o.Executable, target, o.Logger)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	w, err := sdk.Connect(ctx, c.url, sdk.WithName("bench-http-worker"), sdk.WithTelemetry(false))
	if err != nil {
		return nil, err
	}
	defer w.Close(context.WithoutCancel(ctx))
	body := map[string]any{"ok": true}
	if err := w.RegisterFunction(HTTPFunction, func(context.Context, json.RawMessage) (any, error) {
		return map[string]any{"status_code": 200, "body": body}, nil
	}); err != nil {
		return nil, err
	}
	if _, err := w.RegisterTrigger(sdk.Trigger{Type: "http", FunctionID: HTTPFunction,
		Config: map[string]any{"api_path": strings.TrimPrefix(HTTPPath, "/"), "http_method": "GET"}}); err != nil {
		return nil, err
	}
	url := "http://" + c.httpAddr + HTTPPath
	if err := waitHTTP(ctx, url); err != nil {
		return nil, err
	}
	before := c.sample()
	var res *HTTPResult
	if o.Loader == "wrk" {
		res, err = runWrk(ctx, url, o.Connections, o.Duration)
	} else {
		res = runGoLoad(ctx, url, o.Connections, o.Duration)
	}
	if err != nil {
		return nil, err
	}
	res.CPUPercent = c.sample().cpuPercentSince(before)
	res.Target, res.Loader = strings.TrimSuffix(target, "-http"), o.Loader
	return res, nil
}

func waitHTTP(ctx context.Context, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never answered 200", url)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var (
	wrkRate    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal   = regexp.MustCompile(`(\d+) requests in`)
	wrkErrors  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockets = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// runWrk loads url with wrk, a separate process, and parses its report.
func runWrk(ctx context.Context, url string, conns int, d time.Duration) (*HTTPResult, error) {
	threads := max(1, min(conns, 2))
	out, err := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", max(1, int(d.Seconds()))), "--latency", url).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (*HTTPResult, error) {
	res := &HTTPResult{}
	m := wrkRate.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("wrk: no Requests/sec in its output:\n%s", out)
	}
	res.RequestsSec, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		res.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkErrors.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		res.Errors += n
	}
	if m := wrkSockets.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			res.Errors += n
		}
	}
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[3]]
		d := Millis(time.Duration(v * float64(unit)))
		if m[1] == "50" {
			res.P50 = d
		} else {
			res.P99 = d
		}
	}
	return res, nil
}

// runGoLoad loads url from this process when wrk is not installed.
func runGoLoad(ctx context.Context, url string, conns int, d time.Duration) *HTTPResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	defer client.CloseIdleConnections()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lat  []time.Duration
		n    atomic.Int64
		errs atomic.Int64
	)
	start := time.Now()
	for range conns {
		wg.Add(1)
		// Exits when the run's context expires.
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := client.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = errors.New(resp.Status)
					}
				}
				if ctx.Err() != nil {
					break
				}
				n.Add(1)
				local = append(local, time.Since(t0))
				if err != nil {
					errs.Add(1)
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	res := &HTTPResult{Requests: n.Load(), Errors: errs.Load(), RequestsSec: float64(n.Load()) / elapsed.Seconds()}
	if k := len(lat); k > 0 {
		res.P50, res.P99 = Millis(lat[k/2]), Millis(lat[k*99/100])
	}
	return res
}

// RelayHTTPHandler is the HTTP baseline: each request becomes one call of
// HTTPFunction over the relay's WebSocket, and the function's body is the
// response. It does what the HTTP module must do at the least (a request
// object in, a response object out), nothing more.
func RelayHTTPHandler(r *relay.Relay) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		headers := make(map[string]string, len(req.Header))
		for k, v := range req.Header {
			headers[strings.ToLower(k)] = v[len(v)-1]
		}
		data, _ := json.Marshal(map[string]any{"method": req.Method, "path": req.URL.Path, "headers": headers,
			"query_params": req.URL.Query(), "body": nil})
		res, err := r.Invoke(req.Context(), HTTPFunction, data)
		if err != nil || res.Error != nil {
			http.Error(w, "relay call failed", http.StatusBadGateway)
			return
		}
		var out struct {
			StatusCode int             `json:"status_code"`
			Body       json.RawMessage `json:"body"`
		}
		json.Unmarshal(res.Result, &out)
		if out.StatusCode == 0 {
			out.StatusCode = 200
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(out.StatusCode)
		w.Write(out.Body)
	})
}

package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/cmd/iii/internal/bench"
	"github.com/iii-workbench/iii/cmd/iii/internal/bench/relay"
)

func newBench(env Env) *cobra.Command {
	var (
		o      bench.Options
		data   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure call throughput and latency",
		Long: `Load an engine with cross-worker calls and report calls/s, latency
percentiles and the engine's CPU and memory.

Without --address an engine is started in a child process (this binary,
"iii start" with the bare core) and N Go SDK workers serve an echo function
while callers keep C calls in flight. --baseline also sends the same traffic
through a minimal WebSocket relay in the same run and prints the ratio.
--function loads one of your own functions on a running engine.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data != "" {
				if !json.Valid([]byte(data)) {
					return usageError{fmt.Errorf("--data is not valid JSON: %s", data)}
				}
				o.Data = json.RawMessage(data)
			}
			if o.Token == "" {
				o.Token, _ = env.Getenv("III_TOKEN")
			}
			o.Logger = env.Logger
			rep, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			printReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Address, "address", "", "a running engine (ws://host:port); default: start one")
	f.StringVar(&o.Token, "token", "", "worker token for --address (default $III_TOKEN)")
	f.IntVar(&o.Workers, "workers", 1, "workers serving the echo function")
	f.IntVar(&o.Concurrency, "concurrency", 64, "calls in flight")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to measure")
	f.DurationVar(&o.Warmup, "warmup", time.Second, "traffic before measuring")
	f.IntVar(&o.Payload, "payload", 128, "payload size in bytes")
	f.BoolVar(&o.Baseline, "baseline", false, "also measure a minimal relay with the same traffic, same run")
	f.IntVar(&o.Rounds, "rounds", 1, "alternate baseline and engine this many times and report the median round of each")
	f.StringVar(&o.Function, "function", "", "load this function of a running engine instead of echo")
	f.StringVar(&data, "data", "", "JSON payload for --function")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(newBenchConns(env), newBenchHTTP(env), newBenchRelay(env), newBenchCluster(env))
	return cmd
}

func newBenchHTTP(env Env) *cobra.Command {
	var (
		o      bench.HTTPOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "http",
		Short: "Measure HTTP trigger requests/s",
		Long: `Serve GET /bench/echo through the HTTP module from a Go SDK worker and load it
with wrk (a separate process) when installed, else from this process.
--baseline also measures a bare net/http handler that relays each request over
one WebSocket to the same kind of worker, in the same run.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Logger = env.Logger
			rep, err := bench.HTTP(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			out := cmd.OutOrStdout()
			w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(out, "GET %s, %d connections\n\n", bench.HTTPPath, rep.Connections)
			fmt.Fprintln(w, "target\tloader\treq/s\tp50\tp99\terrors\tCPU\t")
			row := func(r *bench.HTTPResult) {
				fmt.Fprintf(w, "%s\t%s\t%.0f\t%v\t%v\t%d\t%.0f%%\t\n", r.Target, r.Loader, r.RequestsSec, r.P50, r.P99, r.Errors, r.CPUPercent)
			}
			row(&rep.Engine)
			if rep.Baseline != nil {
				row(rep.Baseline)
			}
			w.Flush()
			if rep.Ratio != nil {
				fmt.Fprintf(out, "\nHTTP trigger / baseline: %.2f of the throughput\n", *rep.Ratio)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&o.Duration, "duration", 10*time.Second, "how long to measure each target")
	cmd.Flags().IntVar(&o.Connections, "connections", 64, "concurrent HTTP connections")
	cmd.Flags().BoolVar(&o.Baseline, "baseline", false, "also measure a bare net/http relay, same run")
	cmd.Flags().StringVar(&o.Loader, "loader", "", "wrk or go (default: wrk when installed)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newBenchConns(env Env) *cobra.Command {
	var (
		o      bench.ConnsOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "conns",
		Short: "Hold many idle worker connections and measure their cost",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Logger = env.Logger
			rep, err := bench.Conns(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "connections held\t%d of %d\n", rep.Held, rep.Requested)
			if rep.LimitNote != "" {
				fmt.Fprintf(w, "note\t%s\n", rep.LimitNote)
			}
			fmt.Fprintf(w, "open-file limit\t%d\n", rep.FileLimit)
			fmt.Fprintf(w, "engine RSS\t%s -> %s\n", mib(rep.RSSBefore), mib(rep.RSSAfter))
			fmt.Fprintf(w, "RSS per connection\t%.1f KB\n", rep.BytesPerConn/1024)
			fmt.Fprintf(w, "call while held\tp50 %v  p99 %v  max %v  (%d calls, %d errors)\n",
				rep.Call.P50, rep.Call.P99, rep.Call.Max, rep.Call.Calls, rep.Call.Errors)
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&o.N, "n", 15000, "idle worker connections to open")
	cmd.Flags().DurationVar(&o.CallFor, "call-duration", 3*time.Second, "how long to measure calls while connections are held")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// newBenchRelay serves the baseline relay; bench starts it as a child.
func newBenchRelay(env Env) *cobra.Command {
	var withHTTP bool
	cmd := &cobra.Command{
		Use:    "relay",
		Short:  "Serve the minimal baseline relay (used by iii bench --baseline)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			defer bench.ServeProbes(cmd.OutOrStdout())()
			r := relay.New()
			srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
			if withHTTP {
				hln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return err
				}
				hsrv := &http.Server{Handler: bench.RelayHTTPHandler(r), ReadHeaderTimeout: 10 * time.Second}
				// Exits when hsrv is closed below.
				go hsrv.Serve(hln)
				defer hsrv.Close()
				fmt.Fprintf(cmd.OutOrStdout(), "%s%s\n", bench.RelayHTTPPrefix, hln.Addr())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s%s\n", bench.RelayReadyPrefix, ln.Addr())
			if f, ok := cmd.OutOrStdout().(*os.File); ok {
				f.Sync()
			}
			errc := make(chan error, 1)
			// Exits when the server is shut down below.
			go func() { errc <- srv.Serve(ln) }()
			select {
			case <-cmd.Context().Done():
				srv.Close()
				<-errc
			case err := <-errc:
				return err
			}
			r.Wait()
			return nil
		},
	}
	cmd.Flags().BoolVar(&withHTTP, "http", false, "also serve the HTTP baseline front")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func printReport(out io.Writer, rep *bench.Report) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(out, "%s: %d worker(s), %d in flight, %d B payload, %d CPUs, %s, median of %d round(s)\n\n",
		rep.Function, rep.Workers, rep.Concurrency, rep.Payload, rep.CPUs, rep.GoVersion, rep.Rounds)
	fmt.Fprintln(w, "target\tcalls/s\tp50\tp90\tp99\tmax\terrors\tCPU\tCPU/call\tallocs/call\tRSS\t")
	row := func(r *bench.Result) {
		allocs := "-"
		if r.AllocsPerCall > 0 {
			allocs = fmt.Sprintf("%.1f (%.0f B)", r.AllocsPerCall, r.AllocBytesPerCall)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%v\t%v\t%v\t%v\t%d\t%.0f%%\t%.1fµs\t%s\t%s\t\n", r.Target, r.CallsPerSec,
			r.P50, r.P90, r.P99, r.Max, r.Errors, r.CPUPercent, r.CPUPerCall, allocs, mib(r.RSSBytes))
	}
	row(&rep.Engine)
	if rep.Baseline != nil {
		row(rep.Baseline)
	}
	w.Flush()
	if rep.Ratio != nil {
		fmt.Fprintf(out, "\nengine / baseline: %.2f of the throughput", *rep.Ratio)
		if rep.P50Ratio != nil && rep.P99Ratio != nil {
			fmt.Fprintf(out, ", %.2fx the p50 and %.2fx the p99 latency", *rep.P50Ratio, *rep.P99Ratio)
		}
		if rep.CPURatio != nil {
			fmt.Fprintf(out, ", %.2fx the CPU per call", *rep.CPURatio)
		}
		fmt.Fprintln(out)
	}
	if rep.NoRatio != "" {
		fmt.Fprintf(out, "\n%s\n", rep.NoRatio)
	}
	for code, n := range rep.Engine.ErrorCodes {
		fmt.Fprintf(out, "engine error %s: %d\n", code, n)
	}
}

package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/cmd/iii/internal/bench"
)

func newBenchCluster(env Env) *cobra.Command {
	var (
		o      bench.ClusterOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Measure two engines of one cluster against one engine",
		Long: `Start a redis-server and two "iii start" engines of one cluster on it (child
processes of this binary, bare core, default heartbeat and expiry), connect Go
SDK workers to both, and measure in the same run:

  latency      one call at a time from a worker on engine a, alternating a
               function served on a (local) and one served on b (forwarded)
  throughput   C calls in flight, the cases alternated for --rounds rounds
               (median round reported): one engine (callers and servers all
               on a); two engines with every call local; two engines with
               half of each engine's calls crossing to the other

The machine's load average at the start and the end is printed with the
figures: on a shared machine compare only figures of the same run.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Logger = env.Logger
			rep, err := bench.Cluster(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			printClusterReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Concurrency, "concurrency", 64, "calls in flight in each throughput case")
	f.DurationVar(&o.Duration, "duration", 3*time.Second, "how long each throughput case runs in each round")
	f.DurationVar(&o.Latency, "latency-duration", 5*time.Second, "how long the one-at-a-time latency phase runs")
	f.DurationVar(&o.Warmup, "warmup", time.Second, "traffic of each case before measuring")
	f.IntVar(&o.Rounds, "rounds", 3, "alternate the throughput cases this many times; report the median round")
	f.IntVar(&o.Payload, "payload", 128, "payload size in bytes")
	f.IntVar(&o.EngineProcs, "engine-procs", 0, "GOMAXPROCS of each engine (1: each engine held to one core); 0: Go's default")
	f.StringVar(&o.RedisServer, "redis-server", "", "redis-server binary (default: from PATH)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printClusterReport(out io.Writer, rep *bench.ClusterReport) {
	procs := "Go's default GOMAXPROCS"
	if rep.EngineProcs > 0 {
		procs = fmt.Sprintf("GOMAXPROCS=%d each", rep.EngineProcs)
	}
	fmt.Fprintf(out, "two engines on one redis-server (%s), %d CPUs, %s\n", procs, rep.CPUs, rep.GoVersion)
	fmt.Fprintf(out, "load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end\n\n",
		rep.LoadBefore[0], rep.LoadBefore[1], rep.LoadBefore[2], rep.LoadAfter[0], rep.LoadAfter[1], rep.LoadAfter[2])
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "one at a time\tcalls\tp50\tp90\tp99\terrors\t")
	for _, r := range []*bench.Result{&rep.LocalCall, &rep.CrossCall} {
		fmt.Fprintf(w, "%s\t%d\t%v\t%v\t%v\t%d\t\n", r.Target, r.Calls, r.P50, r.P90, r.P99, r.Errors)
	}
	w.Flush()
	fmt.Fprintf(out, "\n%d in flight, %d B, median of %d round(s); vs one: the median of each round's ratio to the one-engine case of that round\n",
		rep.Concurrency, rep.Payload, rep.Rounds)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "case\tcalls/s\tvs one\tp50\tp99\terrors\tCPU a\tCPU b\tengine CPU/call\tCPU load\trounds (vs one)\t")
	for _, c := range rep.Cases {
		vs := "1.00"
		if c.VsOne > 0 {
			vs = fmt.Sprintf("%.2f", c.VsOne)
		}
		rounds := ""
		for i, r := range c.Rounds {
			if i > 0 {
				rounds += " "
			}
			rounds += fmt.Sprintf("%.0f", r)
			if i < len(c.VsOneRounds) {
				rounds += fmt.Sprintf(" (%.2f)", c.VsOneRounds[i])
			}
		}
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%v\t%v\t%d\t%.0f%%\t%.0f%%\t%.1fµs\t%.0f%%\t%s\t\n", c.Target, c.CallsPerSec, vs, c.P50, c.P99,
			c.Errors, c.EngineCPU[0], c.EngineCPU[1], c.EngineCPUPerCall, c.LoaderCPU, rounds)
	}
	w.Flush()
	for _, c := range append([]bench.Result{rep.LocalCall, rep.CrossCall}, results(rep.Cases)...) {
		for code, n := range c.ErrorCodes {
			fmt.Fprintf(out, "%s error %s: %d\n", c.Target, code, n)
		}
	}
}

func results(cs []bench.ClusterCase) []bench.Result {
	out := make([]bench.Result, len(cs))
	for i, c := range cs {
		out[i] = c.Result
	}
	return out
}

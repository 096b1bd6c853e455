package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/sdk"
)

// The listing commands, iii functions / workers / triggers, call the
// engine's engine::*::list functions and print a table, or with --json the
// function's result.

// listTimeout bounds a listing command, connection included.
const listTimeout = 10 * time.Second

// descriptionWidth is where the tables cut long descriptions.
const descriptionWidth = 60

type listFlags struct {
	engineFlags
	json bool
	all  bool
}

func (f *listFlags) register(cmd *cobra.Command, all string) {
	f.engineFlags.register(cmd)
	cmd.Flags().BoolVar(&f.json, "json", false, "print the engine's JSON result instead of a table")
	cmd.Flags().BoolVar(&f.all, "all", false, all)
}

// list calls one of the engine's list functions. self is the ID of the
// connection it used, which every workers list includes.
func (f *listFlags) list(ctx context.Context, env Env, function string, in any) (res json.RawMessage, self string, err error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	w, err := f.connect(ctx, env)
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if cerr := closeWorker(ctx, w); cerr != nil && err == nil {
			err = fmt.Errorf("closing the connection: %w", cerr)
		}
	}()
	res, err = call(ctx, w, sdk.TriggerRequest{FunctionID: function, Payload: in, Timeout: listTimeout})
	return res, w.ID(), err
}

// output prints res as JSON with --json, else decodes it into v and prints
// the table.
func output[T any](env Env, f *listFlags, res json.RawMessage, table func(io.Writer, T) error) error {
	if f.json {
		return printJSON(env.Stdout, res, isTerminal(env.Stdout))
	}
	var v T
	if err := json.Unmarshal(res, &v); err != nil {
		return fmt.Errorf("unexpected result from the engine: %w", err)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	if err := table(tw, v); err != nil {
		return err
	}
	return tw.Flush()
}

func newFunctions(env Env) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:   "functions",
		Short: "List the functions registered with a running engine",
		Long: `List the functions registered with a running engine (engine::functions::list):
ID, the workers serving it, description. Internal functions (engine::*, and
those registered with metadata {"internal": true}) show with --all.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, _, err := f.list(cmd.Context(), env, "engine::functions::list", map[string]any{"include_internal": f.all})
			if err != nil {
				return err
			}
			return output(env, &f, res, func(w io.Writer, v functionList) error {
				if !f.all {
					// The engine leaves a module's engine::* functions in.
					v.Functions = slices.DeleteFunc(v.Functions, func(r functionRow) bool { return internalID(r.ID) })
				}
				if len(v.Functions) == 0 {
					fmt.Fprintln(env.Stderr, "no functions registered"+hiddenNote(f.all))
				}
				return writeFunctions(w, v)
			})
		},
	}
	f.register(cmd, "include internal functions (engine::*)")
	return cmd
}

func newWorkers(env Env) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List the workers connected to a running engine",
		Long: `List the workers connected to a running engine (engine::workers::list):
name, runtime, version, pid, status, functions, calls in flight, and how
long ago it connected. The engine's in-process workers show with --all.
Connections of iii commands (this one included) are left out, from --json
too.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, self, err := f.list(cmd.Context(), env, "engine::workers::list", map[string]any{})
			if err != nil {
				return err
			}
			if res, err = dropWorker(res, self); err != nil {
				return err
			}
			now := time.Now()
			return output(env, &f, res, func(w io.Writer, v workerList) error {
				if !f.all {
					v.Workers = slices.DeleteFunc(v.Workers, func(w workerRow) bool { return w.Internal })
				}
				if len(v.Workers) == 0 {
					fmt.Fprintln(env.Stderr, "no workers connected"+hiddenNote(f.all))
				}
				return writeWorkers(w, v, now)
			})
		},
	}
	f.register(cmd, "include the engine's in-process workers")
	return cmd
}

func newTriggers(env Env) *cobra.Command {
	var (
		f     listFlags
		types bool
	)
	cmd := &cobra.Command{
		Use:   "triggers",
		Short: "List the triggers registered with a running engine",
		Long: `List the trigger bindings of a running engine (engine::registered-triggers::list):
ID, trigger type, function, the worker that registered it, whether it is
active (a binding waits, parked, until a worker or module provides its
type) and its config. With --types, list the trigger types instead
(engine::triggers::list). Internal ones (engine::*) show with --all.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := map[string]any{"include_internal": f.all}
			if types {
				res, _, err := f.list(cmd.Context(), env, "engine::triggers::list", in)
				if err != nil {
					return err
				}
				return output(env, &f, res, func(w io.Writer, v triggerTypeList) error {
					if len(v.Triggers) == 0 {
						fmt.Fprintln(env.Stderr, "no trigger types registered"+hiddenNote(f.all))
					}
					return writeTriggerTypes(w, v)
				})
			}
			res, _, err := f.list(cmd.Context(), env, "engine::registered-triggers::list", in)
			if err != nil {
				return err
			}
			return output(env, &f, res, func(w io.Writer, v triggerList) error {
				if !f.all {
					v.Triggers = slices.DeleteFunc(v.Triggers, func(r triggerRow) bool { return internalID(r.FunctionID) })
				}
				if len(v.Triggers) == 0 {
					fmt.Fprintln(env.Stderr, "no triggers registered"+hiddenNote(f.all))
				}
				return writeTriggers(w, v)
			})
		},
	}
	f.register(cmd, "include internal triggers (engine::*)")
	cmd.Flags().BoolVar(&types, "types", false, "list the trigger types instead of the bindings")
	return cmd
}

// internalID reports whether id is one of the engine's own functions
// (engine::*, configuration::*), hidden without --all.
func internalID(id string) bool {
	return strings.HasPrefix(id, "engine::") || strings.HasPrefix(id, "configuration::")
}

func hiddenNote(all bool) string {
	if all {
		return ""
	}
	return " (--all shows internal ones)"
}

// dropWorker removes the CLI's connections from a workers list: the one
// with the given ID, and others named iii-cli (a previous command's that
// the engine has not dropped yet, or a concurrent one's). Everything else
// stays as the engine sent it.
func dropWorker(res json.RawMessage, id string) (json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(res, &top); err != nil {
		return nil, fmt.Errorf("unexpected result from the engine: %w", err)
	}
	var workers []json.RawMessage
	if err := json.Unmarshal(top["workers"], &workers); err != nil {
		return nil, fmt.Errorf("unexpected result from the engine: workers: %w", err)
	}
	workers = slices.DeleteFunc(workers, func(w json.RawMessage) bool {
		var row struct{ ID, Name string }
		return json.Unmarshal(w, &row) == nil && (row.ID == id || row.Name == clientName)
	})
	if workers == nil {
		workers = []json.RawMessage{}
	}
	b, err := json.Marshal(workers)
	if err != nil {
		return nil, err
	}
	top["workers"] = b
	return json.Marshal(top)
}

// Result shapes of the engine's list functions, as far as the tables use
// them.

type functionRow struct {
	ID          string   `json:"function_id"`
	Namespace   string   `json:"namespace"`
	Workers     []string `json:"workers"`
	Description string   `json:"description"`
	Engines     []string `json:"engines"` // in a cluster
}

type functionList struct {
	Functions []functionRow `json:"functions"`
}

type workerRow struct {
	ID                string  `json:"id"`
	Name              string  `json:"name"`
	Namespace         string  `json:"namespace"`
	Runtime           *string `json:"runtime"`
	Version           *string `json:"version"`
	PID               *int    `json:"pid"`
	Status            string  `json:"status"`
	FunctionCount     int     `json:"function_count"`
	ActiveInvocations int64   `json:"active_invocations"`
	ConnectedAtMS     int64   `json:"connected_at_ms"`
	Internal          bool    `json:"internal"`
	Engine            string  `json:"engine"` // in a cluster
}

type workerList struct {
	Workers []workerRow `json:"workers"`
}

type triggerRow struct {
	ID            string  `json:"id"`
	Type          string  `json:"trigger_type"`
	FunctionID    string  `json:"function_id"`
	Namespace     string  `json:"namespace"`
	Worker        *string `json:"worker_name"`
	ConfigSummary string  `json:"config_summary"`
	Active        bool    `json:"active"`
}

type triggerList struct {
	Triggers []triggerRow `json:"registered_triggers"`
}

type triggerTypeRow struct {
	ID          string `json:"id"`
	Namespace   string `json:"namespace"`
	Worker      string `json:"worker_name"`
	Description string `json:"description"`
}

type triggerTypeList struct {
	Triggers []triggerTypeRow `json:"triggers"`
}

// The tables. Each writes tab-separated cells to a tabwriter, sorted by
// the first column.

func writeFunctions(w io.Writer, v functionList) error {
	fs := slices.Clone(v.Functions)
	slices.SortStableFunc(fs, func(a, b functionRow) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace, b.Namespace)
	})
	// A cluster's engines name themselves, and namespaces other than
	// default show; a single engine of one namespace shows neither column.
	clustered := slices.ContainsFunc(fs, func(f functionRow) bool { return len(f.Engines) > 0 })
	spaced := slices.ContainsFunc(fs, func(f functionRow) bool { return namespaced(f.Namespace) })
	head := "ID"
	if spaced {
		head += "\tNAMESPACE"
	}
	head += "\tWORKER(S)"
	if clustered {
		head += "\tENGINE(S)"
	}
	fmt.Fprintln(w, head+"\tDESCRIPTION")
	for _, f := range fs {
		fmt.Fprint(w, cell(f.ID))
		if spaced {
			fmt.Fprintf(w, "\t%s", orDefault(f.Namespace))
		}
		fmt.Fprintf(w, "\t%s", orDash(strings.Join(f.Workers, ",")))
		if clustered {
			fmt.Fprintf(w, "\t%s", orDash(cell(strings.Join(f.Engines, ","))))
		}
		fmt.Fprintf(w, "\t%s\n", orDash(truncate(f.Description, descriptionWidth)))
	}
	return nil
}

// namespaced reports whether ns is a namespace other than the default one.
func namespaced(ns string) bool { return ns != "" && ns != "default" }

func orDefault(ns string) string {
	if ns == "" {
		return "default"
	}
	return cell(ns)
}

func writeWorkers(w io.Writer, v workerList, now time.Time) error {
	ws := slices.Clone(v.Workers)
	slices.SortStableFunc(ws, func(a, b workerRow) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	clustered := slices.ContainsFunc(ws, func(r workerRow) bool { return r.Engine != "" })
	spaced := slices.ContainsFunc(ws, func(r workerRow) bool { return namespaced(r.Namespace) })
	head := "NAME\tRUNTIME\tVERSION\tPID\tSTATUS\tFUNCTIONS\tIN-FLIGHT\tCONNECTED"
	if spaced {
		head = "NAME\tNAMESPACE" + strings.TrimPrefix(head, "NAME")
	}
	if clustered {
		head += "\tENGINE"
	}
	fmt.Fprintln(w, head)
	for _, r := range ws {
		pid := "-"
		if r.PID != nil {
			pid = strconv.Itoa(*r.PID)
		}
		fmt.Fprint(w, orDash(r.Name))
		if spaced {
			fmt.Fprintf(w, "\t%s", orDefault(r.Namespace))
		}
		fmt.Fprintf(w, "\t%s\t%s\t%s\t%s\t%d\t%d\t%s", orDash(deref(r.Runtime)), orDash(deref(r.Version)),
			pid, orDash(r.Status), r.FunctionCount, r.ActiveInvocations, ago(now, time.UnixMilli(r.ConnectedAtMS)))
		if clustered {
			fmt.Fprintf(w, "\t%s", orDash(cell(r.Engine)))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func writeTriggers(w io.Writer, v triggerList) error {
	ts := slices.Clone(v.Triggers)
	slices.SortStableFunc(ts, func(a, b triggerRow) int { return strings.Compare(a.ID, b.ID) })
	spaced := slices.ContainsFunc(ts, func(t triggerRow) bool { return namespaced(t.Namespace) })
	if spaced {
		fmt.Fprintln(w, "ID\tTYPE\tFUNCTION\tNAMESPACE\tWORKER\tSTATE\tCONFIG")
	} else {
		fmt.Fprintln(w, "ID\tTYPE\tFUNCTION\tWORKER\tSTATE\tCONFIG")
	}
	for _, t := range ts {
		state := "parked"
		if t.Active {
			state = "active"
		}
		fmt.Fprintf(w, "%s\t%s\t%s", cell(t.ID), cell(t.Type), cell(t.FunctionID))
		if spaced {
			fmt.Fprintf(w, "\t%s", orDefault(t.Namespace))
		}
		fmt.Fprintf(w, "\t%s\t%s\t%s\n", orDash(deref(t.Worker)), state, orDash(cell(t.ConfigSummary)))
	}
	return nil
}

func writeTriggerTypes(w io.Writer, v triggerTypeList) error {
	ts := slices.Clone(v.Triggers)
	slices.SortStableFunc(ts, func(a, b triggerTypeRow) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace, b.Namespace)
	})
	// A NAMESPACE column once a worker provides a type in a namespace of
	// its own (two namespaces may each provide one of the same id).
	spaced := slices.ContainsFunc(ts, func(t triggerTypeRow) bool { return namespaced(t.Namespace) })
	if spaced {
		fmt.Fprintln(w, "ID\tNAMESPACE\tWORKER\tDESCRIPTION")
	} else {
		fmt.Fprintln(w, "ID\tWORKER\tDESCRIPTION")
	}
	for _, t := range ts {
		fmt.Fprintf(w, "%s\t", cell(t.ID))
		if spaced {
			fmt.Fprintf(w, "%s\t", orDefault(t.Namespace))
		}
		fmt.Fprintf(w, "%s\t%s\n", orDash(t.Worker), orDash(truncate(t.Description, descriptionWidth)))
	}
	return nil
}

// cell makes s safe for one table cell: tabs and line breaks (which would
// break the columns) become spaces.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '\t', '\n', '\r', '\v', '\f':
			return ' '
		}
		return r
	}, s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// truncate cuts s to n runes, marking the cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// ago is a short, rounded "how long ago": 12s ago, 5m ago, 3h5m ago,
// 2d4h ago.
func ago(now, t time.Time) string {
	if t.IsZero() || t.UnixMilli() <= 0 {
		return "-"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh ago", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

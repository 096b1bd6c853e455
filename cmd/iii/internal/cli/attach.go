package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/engine/event"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/watch"
	"github.com/iii-workbench/iii/tui"
	"github.com/iii-workbench/iii/tui/remote"
)

// This file is the commands that attach to a running engine over its own
// protocol: iii tui (the workbench) and iii break (breakpoints on calls).

// attach connects a remote source, with the same diagnosis of a missing
// engine or a refused token as the other client commands.
func (f *engineFlags) attach(ctx context.Context, env Env, allowInvoke bool) (*remote.Source, error) {
	u, err := f.url(env)
	if err != nil {
		return nil, err
	}
	token := f.bearer(env)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	src, err := remote.Dial(dctx, remote.Options{URL: u, Token: token, AllowInvoke: allowInvoke,
		Version: env.Build.Version, Logger: env.Logger})
	if err != nil {
		if ctx.Err() != nil {
			return nil, err // interrupted
		}
		env.Logger.DebugContext(ctx, "attach failed", "url", u, "error", err)
		return nil, diagnose(ctx, u, token)
	}
	// An engine without the watch functions (an older one, or another
	// implementation of the protocol) cannot be attached to.
	if _, err := src.Query(dctx, watch.FnSnapshot, nil); err != nil {
		src.Close(context.WithoutCancel(ctx))
		var eb *protocol.ErrorBody
		if errors.As(err, &eb) && eb.Code == "function_not_found" {
			return nil, connectError("the engine at %s does not serve %s: iii tui and iii break need an iii engine of this version", u, watch.FnSnapshot)
		}
		return nil, connectError("the engine at %s did not answer %s: %v", u, watch.FnSnapshot, err)
	}
	return src, nil
}

func newTUI(env Env) *cobra.Command {
	var (
		ef          engineFlags
		allowInvoke bool
		noTUI       bool
	)
	cmd := &cobra.Command{
		Use:   "tui",
		Short: "Open the workbench on a running engine (iii start, another iii dev)",
		Long: `Attach the terminal UI of iii dev to a running engine through its own
protocol: the engine streams its events to this connection (engine::events)
and answers the views' queries (engine::snapshot, traces, logs). Everything
but restarting processes works as in iii dev.

It is read-only unless --allow-invoke is given: then i invokes functions,
r replays calls, b sets breakpoints and f fires triggers. Breakpoints set
here end, and the calls they hold continue, when the TUI quits.
Without a terminal, or with --no-tui, it prints one line per event.`,
		Example: `  iii tui
  iii tui --address ws://staging:49134 --token "$III_TOKEN"
  iii tui --allow-invoke`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			src, err := ef.attach(ctx, env, allowInvoke)
			if err != nil {
				return err
			}
			defer src.Close(context.WithoutCancel(ctx))
			if noTUI || !isTerminal(env.Stdout) || !isTerminal(devStdin(env)) {
				return tui.Print(ctx, src, env.Stdout)
			}
			if err := tui.Run(ctx, src, tui.Options{}, tea.WithInput(devStdin(env)), tea.WithOutput(env.Stdout)); err != nil {
				return fmt.Errorf("tui: %w", err)
			}
			return nil
		},
	}
	ef.register(cmd)
	cmd.Flags().BoolVar(&allowInvoke, "allow-invoke", false, "allow calling functions, breakpoints and firing triggers (read-only without)")
	cmd.Flags().BoolVar(&noTUI, "no-tui", false, "print a line per event instead of the terminal UI")
	return cmd
}

func newBreak(env Env) *cobra.Command {
	var ef engineFlags
	cmd := &cobra.Command{
		Use:   "break FUNCTION...",
		Short: "Hold calls of functions on a running engine until you release them",
		Long: `Set a breakpoint on each FUNCTION: the engine holds their calls before
they reach a worker (the caller's timeout keeps running) and this command
prints each held call with its payload. Then type, one per line:

  c [ID] [JSON]   continue (with JSON as the new payload)
  f [ID] [TEXT]   fail the call with an error
  d [ID]          drop it: it is never delivered and its caller times out
  l               list the held calls

ID is a held call's number, or the oldest held call when left out. When
the command ends (ctrl+c, end of input) its breakpoints go and the calls
they hold continue unchanged.`,
		Example: `  iii break orders::create
  iii break --address ws://staging:49134 billing::charge`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("%s needs at least one FUNCTION", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			src, err := ef.attach(ctx, env, true)
			if err != nil {
				return err
			}
			defer src.Close(context.WithoutCancel(ctx))
			return runBreak(ctx, env, src, args)
		},
	}
	ef.register(cmd)
	return cmd
}

// breakSession is iii break's state: the calls held so far, numbered.
type breakSession struct {
	env  Env
	src  *remote.Source
	out  io.Writer
	held []heldLine
	next int
}

type heldLine struct {
	n  int
	id string
	fn string
}

func runBreak(ctx context.Context, env Env, src *remote.Source, fns []string) error {
	sub := src.Subscribe(4096)
	defer sub.Close()
	b := &breakSession{env: env, src: src, out: env.Stdout}
	args, _ := json.Marshal(watch.BreakArgs{FunctionIDs: fns})
	if _, err := src.Control(ctx, watch.FnBreakSet, args); err != nil {
		return breakErr("set breakpoints", err)
	}
	fmt.Fprintf(b.out, "breakpoint on %s: calls are held here (c continue, f fail, d drop, l list; ctrl+c ends and lets them go)\n",
		strings.Join(fns, ", "))
	// Catch up with calls held before the subscription delivered anything.
	b.list(ctx, false)

	lines := make(chan string)
	inputDone := make(chan error, 1)
	// Reads stdin until it ends; the process (or the test closing the
	// pipe) ends it.
	go func() {
		sc := bufio.NewScanner(devStdin(env))
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		inputDone <- sc.Err()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-inputDone:
			return err
		case ev := <-sub.C():
			b.event(ev)
		case line := <-lines:
			if err := b.command(ctx, line); err != nil {
				fmt.Fprintf(env.Stderr, "iii break: %v\n", err)
			}
		}
	}
}

func breakErr(what string, err error) error {
	if errors.Is(err, tui.ErrReadOnly) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (b *breakSession) event(ev event.Event) {
	switch e := ev.(type) {
	case event.CallHeld:
		b.add(e.HoldID, e.FunctionID, e.CallerWorkerID, e.Data, e.Deadline)
	case event.CallResumed:
		for i, h := range b.held {
			if h.id == e.HoldID {
				fmt.Fprintf(b.out, "#%d %s %s\n", h.n, h.fn, e.Outcome)
				b.held = append(b.held[:i], b.held[i+1:]...)
				break
			}
		}
	}
}

func (b *breakSession) add(id, fn, caller string, data json.RawMessage, deadline time.Time) {
	for _, h := range b.held {
		if h.id == id {
			return
		}
	}
	b.next++
	b.held = append(b.held, heldLine{n: b.next, id: id, fn: fn})
	from := caller
	if from == "" {
		from = "engine"
	}
	fmt.Fprintf(b.out, "#%d held %s from %s, times out in %s: %s\n", b.next, fn, from,
		time.Until(deadline).Round(time.Second), compact(data))
}

func compact(data json.RawMessage) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return string(data)
	}
	return buf.String()
}

// list asks the engine for the held calls; print shows them all.
func (b *breakSession) list(ctx context.Context, print bool) {
	raw, err := b.src.Query(ctx, watch.FnBreakList, nil)
	if err != nil {
		fmt.Fprintf(b.env.Stderr, "iii break: list: %v\n", err)
		return
	}
	var l watch.BreakList
	if err := json.Unmarshal(raw, &l); err != nil {
		fmt.Fprintf(b.env.Stderr, "iii break: list: %v\n", err)
		return
	}
	for _, h := range l.Held {
		b.add(h.HoldID, h.FunctionID, h.Caller, h.Data, h.Deadline)
	}
	if print {
		if len(b.held) == 0 {
			fmt.Fprintln(b.out, "no calls held")
		}
		for _, h := range b.held {
			fmt.Fprintf(b.out, "#%d %s\n", h.n, h.fn)
		}
	}
}

// command runs one input line.
func (b *breakSession) command(ctx context.Context, line string) error {
	verb, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	rest = strings.TrimSpace(rest)
	r := watch.Release{}
	switch verb {
	case "":
		return nil
	case "l", "list":
		b.list(ctx, true)
		return nil
	case "c", "continue":
		r.Action = watch.ActionContinue
	case "f", "fail":
		r.Action = watch.ActionFail
	case "d", "drop":
		r.Action = watch.ActionDrop
	default:
		return fmt.Errorf("unknown command %q: c [ID] [JSON], f [ID] [TEXT], d [ID] or l", verb)
	}
	// An optional #n or n first.
	var target *heldLine
	if first, after, _ := strings.Cut(rest, " "); first != "" {
		var n int
		if _, err := fmt.Sscanf(strings.TrimPrefix(first, "#"), "%d", &n); err == nil && !strings.HasPrefix(first, "{") {
			for i := range b.held {
				if b.held[i].n == n {
					target = &b.held[i]
				}
			}
			if target == nil {
				return fmt.Errorf("no held call #%d", n)
			}
			rest = strings.TrimSpace(after)
		}
	}
	if target == nil {
		if len(b.held) == 0 {
			return errors.New("no call is held")
		}
		target = &b.held[0]
	}
	r.HoldID = target.id
	switch r.Action {
	case watch.ActionContinue:
		if rest != "" {
			if !json.Valid([]byte(rest)) {
				return fmt.Errorf("the new payload is not valid JSON: %s", rest)
			}
			r.Data = json.RawMessage(rest)
		}
	case watch.ActionFail:
		r.Error = rest
	}
	data, _ := json.Marshal(r)
	if _, err := b.src.Control(ctx, watch.FnBreakRelease, data); err != nil {
		return breakErr("release", err)
	}
	return nil
}

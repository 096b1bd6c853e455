package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/sdk"
)

// DefaultInvokeTimeout is how long iii invoke waits for a result.
const DefaultInvokeTimeout = 30 * time.Second

// maxInput bounds the JSON read from stdin.
const maxInput = 64 << 20

func newInvoke(env Env) *cobra.Command {
	var (
		ef      engineFlags
		timeout time.Duration
		async   bool
		queue   string
	)
	cmd := &cobra.Command{
		Use:   "invoke FUNCTION [JSON]",
		Short: "Call a function on a running engine and print its result",
		Long: `Call FUNCTION with JSON as its input and print the result as JSON:
indented on a terminal, compact otherwise, null when there is none.

The input is the JSON argument, or stdin when the argument is "-" or
missing and stdin is not a terminal; with neither it is null.

Exit status: 0 on success; 1 when the function (or the engine) returned an
error, printed as "error <code>: <message>", also when no result arrived in
--timeout (code TIMEOUT); 2 for a bad command line or input, or when the
engine cannot be reached.`,
		Example: `  iii invoke orders::create '{"sku":"A1","qty":2}'
  echo '{"x":1}' | iii invoke demo::hello
  iii invoke --async audit::record '{"event":"login"}'
  iii invoke --enqueue emails mail::send '{"to":"a@b.c"}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError{fmt.Errorf("%s takes FUNCTION and an optional JSON input, got %d arguments", cmd.CommandPath(), len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			function := args[0]
			if strings.TrimSpace(function) == "" {
				return usageError{errors.New("the function ID is empty")}
			}
			if timeout <= 0 {
				return usageError{fmt.Errorf("--timeout %v: must be positive", timeout)}
			}
			if async && queue != "" {
				return usageError{errors.New("--async and --enqueue exclude each other")}
			}
			if cmd.Flags().Changed("enqueue") && strings.TrimSpace(queue) == "" {
				return usageError{errors.New("--enqueue needs a queue name")}
			}
			input, err := readInput(env, args[1:])
			if err != nil {
				return err
			}
			req := sdk.TriggerRequest{FunctionID: function, Payload: input, Timeout: timeout}
			switch {
			case async:
				req.Action = sdk.Void()
			case queue != "":
				req.Action = sdk.Enqueue(queue)
			}
			return invoke(cmd.Context(), env, &ef, req, async)
		},
	}
	ef.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&timeout, "timeout", DefaultInvokeTimeout, "how long to wait for the engine and for the result")
	f.BoolVar(&async, "async", false, "fire and forget: send the call, do not wait for a result")
	f.StringVar(&queue, "enqueue", "", "route the call through `QUEUE` and print the receipt")
	return cmd
}

func invoke(ctx context.Context, env Env, ef *engineFlags, req sdk.TriggerRequest, async bool) (err error) {
	cctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	w, err := ef.connect(cctx, env)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeWorker(ctx, w); cerr != nil && err == nil {
			err = fmt.Errorf("closing the connection: %w", cerr)
		}
	}()
	res, err := call(ctx, w, req)
	if err != nil {
		return err
	}
	if async { // nothing comes back
		fmt.Fprintf(env.Stderr, "sent %s (--async: not waiting for a result)\n", req.FunctionID)
		return nil
	}
	return printJSON(env.Stdout, res, isTerminal(env.Stdout))
}

// readInput returns the invocation's input: the JSON argument, or stdin
// for "-" or no argument when stdin is not a terminal, else null. Invalid
// JSON is an exit-2 error that points at the offending spot.
func readInput(env Env, args []string) (json.RawMessage, error) {
	var (
		data []byte
		from string
	)
	stdin := env.Stdin
	if stdin == nil {
		stdin = os.Stdin
	}
	switch {
	case len(args) == 1 && args[0] != "-":
		data, from = []byte(args[0]), "the JSON argument"
	case len(args) == 1 || !isTerminal(stdin):
		b, err := io.ReadAll(io.LimitReader(stdin, maxInput+1))
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		if len(b) > maxInput {
			return nil, codedError{ExitUsage, fmt.Errorf("the JSON on stdin is larger than %d MiB", maxInput>>20)}
		}
		data, from = b, "the JSON on stdin"
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return json.RawMessage("null"), nil
	}
	if err := checkJSON(data); err != nil {
		return nil, codedError{ExitUsage, fmt.Errorf("%s is not valid JSON: %w", from, err)}
	}
	return json.RawMessage(data), nil
}

// checkJSON validates data and, when it is not JSON, says where: line and
// column, and the line itself with a caret under the spot.
func checkJSON(data []byte) error {
	var v json.RawMessage
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return err
	}
	off := min(max(int(se.Offset)-1, 0), len(data))
	if se.Offset == 0 || strings.HasPrefix(se.Error(), "unexpected end") {
		off = len(data)
	}
	lineStart := bytes.LastIndexByte(data[:off], '\n') + 1
	lineEnd := len(data)
	if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
		lineEnd = off + i
	}
	line := bytes.Count(data[:off], []byte("\n")) + 1
	col := utf8.RuneCount(data[lineStart:off]) + 1
	text := []rune(strings.TrimRight(string(data[lineStart:lineEnd]), "\r"))
	// Show at most 60 runes around the spot.
	from := max(col-1-40, 0)
	to := min(from+60, len(text))
	snippet := string(text[from:to])
	caret := strings.Repeat(" ", col-1-from) + "^"
	return fmt.Errorf("line %d, column %d: %s\n    %s\n    %s", line, col, se, snippet, caret)
}

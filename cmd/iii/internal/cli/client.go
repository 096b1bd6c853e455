package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
	"github.com/iii-workbench/iii/tui"
)

// This file is what the commands that talk to a running engine share
// (iii invoke, iii functions, iii workers, iii triggers): the --address and
// --token flags, connecting as a short-lived worker, and how results and
// errors are printed.

// DefaultAddress is where iii start and iii dev listen for workers.
const DefaultAddress = "ws://127.0.0.1:49134"

// Environment variables read by the client commands.
const (
	envURL   = "III_URL"
	envToken = "III_TOKEN"
)

// clientName is the worker name the CLI's connections report.
const clientName = tui.CLIClientName

// closeTimeout bounds the CLI's goodbye to the engine.
const closeTimeout = 5 * time.Second

// codedError ends a run with its own exit code. Run prints it like any
// error, without the usage hint.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

// connectError is an exit-2 error: the engine could not be reached.
func connectError(format string, args ...any) error {
	return codedError{ExitUsage, fmt.Errorf(format, args...)}
}

// functionError is an error a called function (or the engine on its
// behalf) returned. Run prints "error <code>: <message>" and exits 1.
type functionError struct{ body *protocol.ErrorBody }

func (e functionError) Error() string { return e.body.Error() }
func (e functionError) Unwrap() error { return e.body }

func (e functionError) print(w io.Writer) {
	fmt.Fprintf(w, "error %s: %s\n", e.body.Code, e.body.Message)
	if st := strings.TrimSpace(e.body.Stacktrace); st != "" {
		for line := range strings.SplitSeq(st, "\n") {
			fmt.Fprintf(w, "    %s\n", line)
		}
	}
}

// engineFlags are the flags of the commands that talk to a running engine.
type engineFlags struct {
	address string
	token   string
}

func (f *engineFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.address, "address", "", "engine URL (default $"+envURL+", else "+DefaultAddress+")")
	cmd.Flags().StringVar(&f.token, "token", "", "token the engine requires, sent as Authorization: Bearer (default $"+envToken+")")
}

// url is the engine URL from --address, else $III_URL, else the default.
// A bare host:port gets ws://.
func (f *engineFlags) url(env Env) (string, error) {
	raw, from := f.address, "--address"
	if raw == "" {
		if v, ok := env.Getenv(envURL); ok && v != "" {
			raw, from = v, envURL
		} else {
			raw = DefaultAddress
		}
	}
	if !strings.Contains(raw, "://") {
		raw = "ws://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", usageError{fmt.Errorf("%s %q is not an engine URL (like %s)", from, raw, DefaultAddress)}
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", usageError{fmt.Errorf("%s %q: the scheme must be ws or wss (like %s)", from, raw, DefaultAddress)}
	}
	return u.String(), nil
}

func (f *engineFlags) bearer(env Env) string {
	if f.token != "" {
		return f.token
	}
	tok, _ := env.Getenv(envToken)
	return tok
}

// connect opens a worker connection to the engine for one command. It does
// not retry: an unreachable engine fails at once, with an exit-2 error
// that says what to do.
func (f *engineFlags) connect(ctx context.Context, env Env) (*sdk.Worker, error) {
	u, err := f.url(env)
	if err != nil {
		return nil, err
	}
	token := f.bearer(env)
	opts := []sdk.Option{sdk.WithName(clientName), sdk.WithLogger(env.Logger)}
	if token != "" {
		opts = append(opts, sdk.WithBearerToken(token))
	}
	w, err := sdk.Connect(ctx, u, opts...)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, err // interrupted
		}
		env.Logger.DebugContext(ctx, "connect failed", "url", u, "error", err)
		return nil, diagnose(ctx, u, token)
	}
	return w, nil
}

// diagnose dials url once more, without the SDK, to tell a missing engine
// from one that wants a token (the SDK does not keep the HTTP response).
func diagnose(ctx context.Context, u, token string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	switch {
	case err == nil:
		c.CloseNow()
		return connectError("the engine at %s accepted a connection but did not register the worker in time; try again", u)
	case resp != nil && resp.StatusCode == http.StatusUnauthorized && token == "":
		return connectError("the engine requires a token: pass --token or set %s", envToken)
	case resp != nil && resp.StatusCode == http.StatusUnauthorized:
		return connectError("the engine at %s rejected the token: check --token or %s", u, envToken)
	case resp != nil:
		return connectError("%s is not an iii engine (HTTP %d on the WebSocket upgrade): check --address", u, resp.StatusCode)
	}
	return connectError("no engine at %s: start one with \"iii dev\" or \"iii start\", or pass --address", u)
}

// closeWorker says goodbye to the engine, flushing what is queued (an
// --async call, for one).
func closeWorker(ctx context.Context, w *sdk.Worker) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	return w.Close(ctx)
}

// call triggers a function and maps its error: a function's (or the
// engine's) error becomes a functionError.
func call(ctx context.Context, w *sdk.Worker, req sdk.TriggerRequest) (json.RawMessage, error) {
	res, err := w.Trigger(ctx, req)
	var body *protocol.ErrorBody
	if errors.As(err, &body) {
		return nil, functionError{body}
	}
	if err != nil {
		return nil, fmt.Errorf("calling %s: %w", req.FunctionID, err)
	}
	return res, nil
}

// printJSON writes raw (null when empty) and a newline: indented by two
// spaces when pretty, compact otherwise.
func printJSON(w io.Writer, raw json.RawMessage, pretty bool) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("null")
	}
	var b bytes.Buffer
	var err error
	if pretty {
		err = json.Indent(&b, raw, "", "  ")
	} else {
		err = json.Compact(&b, raw)
	}
	if err != nil {
		return fmt.Errorf("the result is not valid JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err = w.Write(b.Bytes())
	return err
}

// isTerminal reports whether v is a character device, such as a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

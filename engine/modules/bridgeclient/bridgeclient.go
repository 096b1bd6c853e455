// Package bridgeclient is iii's iii-bridge worker: it connects this engine
// to another one as a worker of that engine, so that functions of each can
// be called from the other.
//
//   - bridge.invoke {function_id, data, timeout_ms?} calls a function of the
//     remote engine and answers with its result; bridge.invoke_async sends
//     the call and answers with nothing.
//   - Each forward entry registers local_function here; calling it calls
//     remote_function there (timeout_ms, default 30 s).
//   - Each expose entry registers remote_function (default: the same id)
//     there; calling it calls local_function here.
//
// A failure reaching the remote, or the remote function's error, answers
// with code bridge_error, as iii does.
//
// Config (config.yaml; iii's format names the worker iii-bridge):
//
//	modules:
//	  - class: bridge
//	    config:
//	      url: ws://other:49134    # default: $III_URL, else ws://0.0.0.0:49134
//	      expose:
//	        - {local_function: orders::list, remote_function: shop::orders::list}
//	      forward:
//	        - {local_function: remote::state::get, remote_function: state::get, timeout_ms: 5000}
package bridgeclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/module"
	"github.com/iii-workbench/iii/engine/modules/internal/bridge"
	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/sdk"
)

// Names on the engine.
const (
	WorkerName    = "iii-bridge"
	FnInvoke      = "bridge.invoke"
	FnInvokeAsync = "bridge.invoke_async"
	// CodeBridge is the code of every failed call through the bridge.
	CodeBridge = "bridge_error"
)

// defaultTimeout bounds a call through the bridge that names no timeout.
const defaultTimeout = 30 * time.Second

func init() {
	module.Register(module.Info{ID: "bridge", Aliases: []string{WorkerName, "BridgeClientModule"},
		New: func() module.Module { return &Module{} }})
}

// Module is the iii-bridge worker. Its exported fields are its config.yaml
// keys.
type Module struct {
	URL     string    `yaml:"url"`
	Expose  []Expose  `yaml:"expose"`
	Forward []Forward `yaml:"forward"`

	eng    *engine.Engine
	log    *slog.Logger
	remote *bridge.Remote
	life   module.Lifecycle
}

// Expose makes a function of this engine callable on the remote one.
type Expose struct {
	LocalFunction  string `yaml:"local_function"`
	RemoteFunction string `yaml:"remote_function"` // default: LocalFunction
}

// Forward makes a function of the remote engine callable here.
type Forward struct {
	LocalFunction  string `yaml:"local_function"`
	RemoteFunction string `yaml:"remote_function"`
	TimeoutMS      int    `yaml:"timeout_ms"` // default 30000
}

var (
	_ module.Module    = (*Module)(nil)
	_ module.Validator = (*Module)(nil)
)

// ID implements module.Module.
func (m *Module) ID() string { return "bridge" }

// Validate implements module.Validator.
func (m *Module) Validate() error {
	for i, x := range m.Expose {
		if x.LocalFunction == "" {
			return fmt.Errorf("expose[%d]: local_function is required", i)
		}
	}
	for i, f := range m.Forward {
		switch {
		case f.LocalFunction == "":
			return fmt.Errorf("forward[%d]: local_function is required", i)
		case f.RemoteFunction == "":
			return fmt.Errorf("forward[%d]: remote_function is required", i)
		case f.TimeoutMS < 0:
			return fmt.Errorf("forward[%d]: timeout_ms must not be negative (0: 30 s), got %d", i, f.TimeoutMS)
		}
	}
	return nil
}

// Start implements module.Module: it connects to the remote engine,
// registers the exposed functions there and the bridge's functions here.
func (m *Module) Start(ctx context.Context, h *module.Host) (err error) {
	m.eng, m.log = h.Engine, h.Logger
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	url := m.URL
	if url == "" {
		url = os.Getenv("III_URL")
	}
	if url == "" {
		url = "ws://0.0.0.0:49134" // iii's default
	}
	m.life.Begin(ctx, h.Engine)
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("bridge: %w", err), m.Stop(context.WithoutCancel(ctx)))
		}
	}()
	if m.remote, err = bridge.Dial(url, WorkerName, m.log, m.expose); err != nil {
		return err
	}
	fns := []engine.Function{
		{ID: FnInvoke, Description: "Invoke a function on the remote iii engine", Handler: m.invoke},
		{ID: FnInvokeAsync, Description: "Fire-and-forget invoke on the remote iii engine", Handler: m.invokeAsync},
	}
	for _, f := range m.Forward {
		timeout := defaultTimeout
		if f.TimeoutMS > 0 {
			timeout = time.Duration(f.TimeoutMS) * time.Millisecond
		}
		fns = append(fns, engine.Function{ID: f.LocalFunction, Description: "Forward to remote function " + f.RemoteFunction,
			Handler: m.forward(f.RemoteFunction, timeout)})
	}
	for _, fn := range fns {
		if err = m.life.RegisterFunction(WorkerName, fn); err != nil {
			return err
		}
	}
	m.log.Info("bridge: connecting", "url", url, "exposed", len(m.Expose), "forwarded", len(m.Forward))
	return nil
}

// expose registers the exposed functions on the remote engine, on the
// first connection (the SDK replays them on reconnects).
func (m *Module) expose(w *sdk.Worker) error {
	var errs []error
	for _, x := range m.Expose {
		local, remote := x.LocalFunction, x.RemoteFunction
		if remote == "" {
			remote = local
		}
		if err := w.RegisterFunction(remote, m.callLocal(local), sdk.WithDescription("Exposed by a bridged engine: "+local)); err != nil {
			errs = append(errs, fmt.Errorf("expose %s as %s: %w", local, remote, err))
		}
	}
	return errors.Join(errs...)
}

// Stop implements module.Module.
func (m *Module) Stop(ctx context.Context) error {
	var closers []func() error
	if r := m.remote; r != nil {
		closers = append(closers, func() error { return r.Close(ctx) })
	}
	return m.life.Stop(ctx, closers...)
}

type invokeInput struct {
	FunctionID *string         `json:"function_id"`
	Data       json.RawMessage `json:"data"`
	TimeoutMS  *int64          `json:"timeout_ms"`
}

func decodeInvoke(data json.RawMessage) (invokeInput, error) {
	var in invokeInput
	err := json.Unmarshal(data, &in)
	if err == nil && in.FunctionID == nil {
		err = errors.New("missing field `function_id`")
	}
	if err != nil {
		return in, &protocol.ErrorBody{Code: engine.CodeDeserialization, Message: "Failed to parse invoke input: " + err.Error()}
	}
	if in.Data == nil {
		in.Data = json.RawMessage("null")
	}
	return in, nil
}

func (m *Module) invoke(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	in, err := decodeInvoke(call.Data)
	if err != nil {
		return nil, err
	}
	timeout := defaultTimeout
	if in.TimeoutMS != nil && *in.TimeoutMS > 0 {
		timeout = time.Duration(*in.TimeoutMS) * time.Millisecond
	}
	return m.call(ctx, *in.FunctionID, in.Data, timeout)
}

func (m *Module) invokeAsync(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
	in, err := decodeInvoke(call.Data)
	if err != nil {
		return nil, err
	}
	if _, err := m.remote.Trigger(ctx, sdk.TriggerRequest{FunctionID: *in.FunctionID, Payload: in.Data, Action: sdk.Void()}); err != nil {
		return nil, bridgeError(err)
	}
	return nil, nil
}

func (m *Module) forward(remote string, timeout time.Duration) engine.Handler {
	return func(ctx context.Context, call *engine.Call) (json.RawMessage, error) {
		return m.call(ctx, remote, call.Data, timeout)
	}
}

// call calls fn on the remote engine within timeout.
func (m *Module) call(ctx context.Context, fn string, data json.RawMessage, timeout time.Duration) (json.RawMessage, error) {
	res, err := m.remote.Trigger(ctx, sdk.TriggerRequest{FunctionID: fn, Payload: data, Timeout: timeout})
	if err != nil {
		return nil, bridgeError(err)
	}
	return res, nil
}

// bridgeError is iii's answer for a failed call through the bridge: code
// bridge_error, the failure (the remote function's code and message, for
// its own errors) as the message.
func bridgeError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &protocol.ErrorBody{Code: CodeBridge, Message: err.Error()}
}

// callLocal is the handler of an exposed function: it calls local on this
// engine; that function's own error goes back as it is.
func (m *Module) callLocal(local string) sdk.Handler {
	return func(ctx context.Context, in json.RawMessage) (any, error) {
		res, err := m.eng.Invoke(ctx, engine.Request{FunctionID: local, Data: in})
		if err != nil {
			return nil, err
		}
		if res == nil {
			return nil, nil
		}
		return res, nil
	}
}

// Package bridge connects a module to another engine as one of that
// engine's workers: iii's `bridge` adapter of the state and stream modules
// (the module calls the same functions there: state::set there for a
// state::set here; it still validates its input, fires its own triggers and
// tells its own subscribers; only the storage is remote), and the iii-bridge
// worker (package bridgeclient).
package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

// DefaultURL is iii's bridge_url when the adapter names none.
const DefaultURL = sdk.DefaultURL

// connectTimeout bounds the first connection: an unreachable remote fails
// the module's start.
const connectTimeout = 10 * time.Second

// Remote is a connection to the engine that holds a module's data.
type Remote struct {
	url string
	w   *sdk.Worker
}

// Dial connects to the engine at url as a worker named name. After the
// first connection the worker reconnects on its own; calls made while it
// is away wait for it, up to the SDK's invocation timeout.
func Dial(ctx context.Context, url, name string, log *slog.Logger) (*Remote, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	w, err := sdk.Connect(ctx, url, sdk.WithName(name), sdk.WithLogger(log), sdk.WithTelemetry(false))
	if err != nil {
		return nil, fmt.Errorf("bridge to %s: %w", url, err)
	}
	return &Remote{url: url, w: w}, nil
}

// Worker is the connection itself, for registering functions on the
// remote engine or calling with options of its own.
func (r *Remote) Worker() *sdk.Worker { return r.w }

// URL is the remote engine's address.
func (r *Remote) URL() string { return r.url }

// Call calls fn on the remote engine with in (any JSON-encodable value, or
// raw JSON). A JSON null answer is no result (nil). The remote's own errors
// come back as *protocol.ErrorBody.
func (r *Remote) Call(ctx context.Context, fn string, in any) (json.RawMessage, error) {
	res, err := r.w.Trigger(ctx, sdk.TriggerRequest{FunctionID: fn, Payload: in})
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(res); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	return res, nil
}

// Close disconnects from the remote engine.
func (r *Remote) Close(ctx context.Context) error {
	if err := r.w.Close(ctx); err != nil {
		return fmt.Errorf("bridge to %s: close: %w", r.url, err)
	}
	return nil
}

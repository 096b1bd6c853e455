package cli

import (
	"context"
	"log/slog"
)

// withoutWorkerOutput is a handler that drops the exec module's records of
// worker output (those with a "stream" attribute): iii dev --no-tui prints
// each of those lines once, from the event stream, on stdout.
type withoutWorkerOutput struct{ slog.Handler }

func (h withoutWorkerOutput) Handle(ctx context.Context, r slog.Record) error {
	output := false
	r.Attrs(func(a slog.Attr) bool {
		output = a.Key == "stream"
		return !output
	})
	if output {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h withoutWorkerOutput) WithAttrs(as []slog.Attr) slog.Handler {
	return withoutWorkerOutput{h.Handler.WithAttrs(as)}
}

func (h withoutWorkerOutput) WithGroup(name string) slog.Handler {
	return withoutWorkerOutput{h.Handler.WithGroup(name)}
}

// Command iii runs the iii function-routing engine.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/iii-workbench/iii/cmd/iii/internal/cli"
	_ "github.com/iii-workbench/iii/engine/modules/standard" // the built-in modules
)

// Stamped at release time with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "dev"
	date    = "dev"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default handling so a second
	// Ctrl-C kills a shutdown that hangs.
	context.AfterFunc(ctx, stop)

	level := new(slog.LevelVar)
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if isTerminal(os.Stderr) {
		h = slog.NewTextHandler(os.Stderr, opts)
	}

	os.Exit(cli.Run(ctx, cli.Env{
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Logger: slog.New(h),
		Level:  level,
		Getenv: os.LookupEnv,
		Build:  cli.Build{Version: version, Commit: commit, Date: date},
	}, os.Args[1:]))
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Command tmuxworker is the worker of the tmux test: it connects to
// III_URL as III_WORKER_NAME, serves NAME::hello and exits on SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name := os.Getenv("III_WORKER_NAME")
	w, err := sdk.Connect(ctx, os.Getenv("III_URL"), sdk.WithName(name))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	err = w.RegisterFunction(name+"::hello", func(_ context.Context, in json.RawMessage) (any, error) {
		return map[string]any{"greeting": "hello from " + name, "input": in}, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "register:", err)
		os.Exit(1)
	}
	fmt.Println(name, "ready")
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.Close(cctx)
}

// Command echoworker is a worker process for the chaos tests: it serves
// chaos::echo (answering after a short, random delay) until it is killed.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w, err := sdk.Connect(ctx, os.Getenv("III_URL"), sdk.WithName(os.Getenv("III_WORKER_NAME")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w.RegisterFunction("chaos::echo", func(ctx context.Context, in json.RawMessage) (any, error) {
		select {
		case <-time.After(time.Duration(rand.IntN(5)) * time.Millisecond):
		case <-ctx.Done():
		}
		return in, nil
	})
	fmt.Println("READY")
	<-ctx.Done()
	w.Close(context.Background())
}

// Command go is the quickstart's Go worker: it serves quickstart::greet.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/iii-workbench/iii/sdk"
)

type greetIn struct {
	Name string `json:"name"`
}

type greetOut struct {
	Greeting string `json:"greeting"`
	By       string `json:"by"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	url := os.Getenv("III_URL")
	if url == "" {
		url = "ws://127.0.0.1:49134"
	}
	w, err := sdk.Connect(ctx, url) // the name comes from III_WORKER_NAME
	if err != nil {
		log.Fatal(err)
	}
	w.RegisterFunction("quickstart::greet", sdk.Typed(func(_ context.Context, in greetIn) (greetOut, error) {
		if in.Name == "" {
			in.Name = "world"
		}
		return greetOut{Greeting: fmt.Sprintf("Hello, %s!", in.Name), By: "go"}, nil
	}), sdk.WithDescription("Greets someone by name"))
	log.Printf("go worker ready on %s", url)
	<-ctx.Done()
	w.Close(context.Background())
}

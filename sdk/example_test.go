package sdk_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

type greeting struct {
	Name string `json:"name"`
}

type reply struct {
	Message string `json:"message"`
}

// A worker that serves one function, calls it through the engine, and
// shuts down on interrupt. It needs a running engine.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := sdk.Connect(dialCtx, sdk.DefaultURL, sdk.WithName("greeter"))
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Close(closeCtx)
	}()

	err = w.RegisterFunction("greeter::hello", sdk.Typed(func(ctx context.Context, in greeting) (reply, error) {
		if in.Name == "" {
			return reply{}, sdk.Errorf("INVALID_ARGUMENTS", "name is required")
		}
		return reply{Message: "Hello, " + in.Name + "!"}, nil
	}), sdk.WithDescription("Returns a greeting"))
	if err != nil {
		log.Fatal(err)
	}

	r, err := sdk.Call[reply](ctx, w, "greeter::hello", greeting{Name: "World"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Message)

	<-ctx.Done()
}

// Command worker is the exec module's test worker. It reads its version
// from version.txt in its working directory:
//
//	exit  exits with code 3 at once
//	hang  runs without ever connecting to the engine
//	else  connects to $III_URL and serves echo::hello (returns the version),
//	      echo::env, echo::crash (exits with code 3) and echo::slow;
//	      versions starting with "partial" serve only echo::hello and echo::env.
//
// With WORKER_CHILD=1 it starts a `sleep` child in its process group (for
// the orphan tests). With WORKER_TRIGGERS=1 it also binds echo::hello to
// GET /echo/hello and echo::tick (which reports each firing to
// ticks::record) to a cron trigger firing every second. SIGTERM closes the worker gracefully.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/iii-workbench/iii/sdk"
)

func main() {
	b, err := os.ReadFile("version.txt")
	if err != nil {
		fmt.Fprintln(os.Stderr, "read version:", err)
		os.Exit(2)
	}
	version := strings.TrimSpace(string(b))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	childPID := 0
	if os.Getenv("WORKER_CHILD") == "1" {
		child := exec.Command("sleep", "1000")
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "start child:", err)
			os.Exit(2)
		}
		childPID = child.Process.Pid
		go child.Wait()
	}

	switch version {
	case "exit":
		fmt.Fprintln(os.Stderr, "version exit: exiting with code 3")
		os.Exit(3)
	case "hang":
		fmt.Println("version hang: not connecting")
		<-ctx.Done()
		return
	}

	var opts []sdk.Option
	if tok := os.Getenv("III_TOKEN"); tok != "" {
		opts = append(opts, sdk.WithBearerToken(tok))
	}
	w, err := sdk.Connect(ctx, os.Getenv("III_URL"), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(2)
	}
	must := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "register:", err)
			os.Exit(2)
		}
	}
	must(w.RegisterFunction("echo::hello", func(context.Context, json.RawMessage) (any, error) {
		return map[string]string{"version": version}, nil
	}))
	must(w.RegisterFunction("echo::env", func(context.Context, json.RawMessage) (any, error) {
		return map[string]any{"III_URL": os.Getenv("III_URL"), "III_WORKER_NAME": os.Getenv("III_WORKER_NAME"),
			"III_ENGINE_PID": os.Getenv("III_ENGINE_PID"), "III_TOKEN": os.Getenv("III_TOKEN"),
			"pid": os.Getpid(), "child_pid": childPID, "version": version}, nil
	}))
	if strings.HasPrefix(version, "partial") {
		fmt.Println("ready", version)
		<-ctx.Done()
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Close(cctx)
		return
	}
	must(w.RegisterFunction("echo::crash", func(context.Context, json.RawMessage) (any, error) {
		go func() {
			time.Sleep(20 * time.Millisecond)
			fmt.Fprintln(os.Stderr, "crashing on request")
			os.Exit(3)
		}()
		return map[string]string{"crashing": version}, nil
	}))
	must(w.RegisterFunction("echo::slow", sdk.Typed(func(ctx context.Context, in struct{ MS int }) (map[string]string, error) {
		select {
		case <-time.After(time.Duration(in.MS) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return map[string]string{"version": version}, nil
	})))
	if os.Getenv("WORKER_TRIGGERS") == "1" {
		// GET /echo/hello serves echo::hello; every second echo::tick
		// reports its scheduled time to ticks::record (the test's).
		must(w.RegisterFunction("echo::tick", func(ctx context.Context, in json.RawMessage) (any, error) {
			var tick struct {
				ScheduledTime string `json:"scheduled_time"`
			}
			if err := json.Unmarshal(in, &tick); err != nil {
				return nil, err
			}
			_, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "ticks::record", Action: sdk.Void(),
				Payload: map[string]any{"scheduled_time": tick.ScheduledTime, "version": version, "pid": os.Getpid()}})
			return nil, err
		}))
		_, err := w.RegisterTrigger(sdk.Trigger{Type: "http", FunctionID: "echo::hello",
			Config: map[string]any{"api_path": "echo/hello", "http_method": "GET"}})
		must(err)
		_, err = w.RegisterTrigger(sdk.Trigger{Type: "cron", FunctionID: "echo::tick",
			Config: map[string]any{"expression": "* * * * * *"}})
		must(err)
	}
	fmt.Println("ready", version)
	fmt.Fprintln(os.Stderr, "stderr line from", version)
	<-ctx.Done()
	fmt.Println("closing", version)
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = w.Close(cctx)
}

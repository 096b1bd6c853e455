package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/watch"
	"github.com/iii-workbench/iii/sdk"
)

// TestBreak runs `iii break test::echo` in-process against an engine with
// a real worker: it prints each held call with its payload and deadline,
// c continues with a new payload, f fails one, and ending the command
// lets the call it still holds continue.
func TestBreak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startEngine(t, "")
	w := connectWorker(t, srv.URL(), "svc")
	serveTestFunctions(t, w)
	caller := connectWorker(t, srv.URL(), "caller")

	env, stdout, stderr, _ := testEnv(nil)
	in, typed := io.Pipe()
	env.Stdin = in
	bctx, stop := context.WithCancel(ctx)
	exited := make(chan int, 1)
	// Ends when stop cancels its context.
	go func() { exited <- Run(bctx, env, []string{"break", "--address", srv.URL(), "test::echo"}) }()
	defer func() {
		stop()
		typed.Close()
	}()
	waitOutput(ctx, t, stdout, regexp.MustCompile(`breakpoint on test::echo`))

	type answer struct {
		res json.RawMessage
		err error
	}
	call := func(n int) chan answer {
		ch := make(chan answer, 1)
		go func() { // ends with the call
			res, err := caller.Trigger(ctx, sdk.TriggerRequest{FunctionID: "test::echo", Payload: map[string]int{"n": n}, Timeout: 20 * time.Second})
			ch <- answer{res, err}
		}()
		return ch
	}
	type_ := func(line string) {
		t.Helper()
		if _, err := io.WriteString(typed, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	ch := call(1)
	waitOutput(ctx, t, stdout, regexp.MustCompile(`#1 held test::echo from \S+, times out in \S+: \{"n":1,`))
	type_(`c {"n":2}`)
	if a := <-ch; a.err != nil || string(withoutCaller(a.res)) != `{"n":2}` {
		t.Errorf("continued with n=2: %s, %v", a.res, a.err)
	}
	waitOutput(ctx, t, stdout, regexp.MustCompile(`#1 test::echo continued`))

	ch = call(3)
	waitOutput(ctx, t, stdout, regexp.MustCompile(`#2 held test::echo`))
	type_(`f 2 nope`)
	var eb *protocol.ErrorBody
	if a := <-ch; !errors.As(a.err, &eb) || eb.Code != "breakpoint_failed" || eb.Message != "nope" {
		t.Errorf("failed call: %s, %v; want breakpoint_failed: nope", a.res, a.err)
	}

	type_("x")
	waitOutput(ctx, t, stderr, regexp.MustCompile(`unknown command "x"`))

	ch = call(4)
	waitOutput(ctx, t, stdout, regexp.MustCompile(`#3 held test::echo`))
	stop()
	if code := <-exited; code != ExitOK {
		t.Errorf("iii break exited %d; want 0\n%s", code, stderr.String())
	}
	if a := <-ch; a.err != nil || string(withoutCaller(a.res)) != `{"n":4}` {
		t.Errorf("after iii break ended: %s, %v; want the call delivered unchanged", a.res, a.err)
	}
}

// TestTUINoTUI attaches `iii tui --no-tui` to an engine: without a
// terminal it prints a line per event it receives over the protocol.
func TestTUINoTUI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startEngine(t, "")
	env, stdout, stderr, _ := testEnv(nil)
	env.Stdin = strings.NewReader("")
	tctx, stop := context.WithCancel(ctx)
	exited := make(chan int, 1)
	// Ends when stop cancels its context.
	go func() { exited <- Run(tctx, env, []string{"tui", "--address", srv.URL(), "--no-tui"}) }()
	defer func() {
		stop()
		<-exited
	}()
	// Attached once its event subscription is bound.
	deadline := time.Now().Add(20 * time.Second)
	for len(srv.Engine().Bindings(watch.TriggerType)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("iii tui never subscribed; stderr %q", stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	w := connectWorker(t, srv.URL(), "joiner")
	serveTestFunctions(t, w)
	if _, err := w.Trigger(ctx, sdk.TriggerRequest{FunctionID: "test::echo", Payload: map[string]int{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	waitOutput(ctx, t, stdout, regexp.MustCompile(`worker +joined joiner`))
	waitOutput(ctx, t, stdout, regexp.MustCompile(`function +registered test::echo by joiner`))
	waitOutput(ctx, t, stdout, regexp.MustCompile(`call +test::echo joiner → joiner \S+ ok`))
	stop()
	if code := <-exited; code != ExitOK {
		t.Errorf("iii tui --no-tui exited %d; want 0\n%s", code, stderr.String())
	}
	exited <- ExitOK // for the deferred wait
}

// TestTUIRefusesBadToken: a wrong token is the usual clear error.
func TestTUIRefusesBadToken(t *testing.T) {
	srv := startEngine(t, "engine: {port: 0, auth_token: right}\n")
	r := runIn(t, nil, nil, "tui", "--address", srv.URL(), "--token", "wrong", "--no-tui")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "rejected the token") {
		t.Errorf("iii tui with a wrong token: exit %d, stderr %q; want 2 and the token named", r.code, r.stderr)
	}
}

// Package chaos holds fault tests of the engine under load: workers killed
// mid-call, slow consumers, and garbage frames at scale. Every test is
// bounded in time and checks that every call ended and nothing leaked.
package chaos_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/iii-workbench/iii/engine/protocol"
	"github.com/iii-workbench/iii/engine/server"
	"github.com/iii-workbench/iii/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func buildWorker(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "echoworker")
	out, err := exec.Command("go", "build", "-o", exe, "./testdata/echoworker").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// proc is one worker process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func spawn(t *testing.T, exe, url, name string) *proc {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "III_URL="+url, "III_WORKER_NAME="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	// Exits when the process exits.
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("worker %s exited at start", name)
	case <-time.After(10 * time.Second):
		t.Fatalf("worker %s not ready", name)
	}
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// TestChaosKillWorkers kills a random worker every 200 ms for a few
// seconds (and starts a new one) while callers keep 16 calls in flight.
// Every call must end — with a result, invocation_stopped or a timeout —
// and none may hang past its timeout; afterwards the engine's goroutines
// come back to where they were.
func TestChaosKillWorkers(t *testing.T) {
	exe := buildWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := server.Start(ctx, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(ctx)
	baseGoroutines := runtime.NumGoroutine()
	baseHeap := heapInUse()

	const nWorkers = 4
	var pmu sync.Mutex
	procs := make([]*proc, nWorkers)
	for i := range procs {
		procs[i] = spawn(t, exe, srv.URL(), fmt.Sprintf("chaos-%d", i))
	}
	defer func() {
		for _, p := range procs {
			p.kill()
		}
	}()
	caller, err := sdk.Connect(ctx, srv.URL(), sdk.WithName("chaos-caller"))
	if err != nil {
		t.Fatal(err)
	}

	duration := 10 * time.Second
	if testing.Short() {
		duration = 3 * time.Second
	}
	const callTimeout = 5 * time.Second
	// What BENCHMARKS.md states for this test: no call times out, and none
	// takes longer than half its timeout (a killed worker's calls end at
	// once with invocation_stopped; they never wait for the timeout).
	const latencyBound = callTimeout / 2
	var (
		ok, stopped, timedOut, notFound, other atomic.Int64
		maxDur                                 atomic.Int64
		wg                                     sync.WaitGroup
	)
	loadCtx, stopLoad := context.WithTimeout(ctx, duration)
	defer stopLoad()
	for range 16 {
		wg.Add(1)
		// Exits when the load period ends.
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				start := time.Now()
				_, err := caller.Trigger(ctx, sdk.TriggerRequest{FunctionID: "chaos::echo", Payload: map[string]int{"n": 1}, Timeout: callTimeout})
				d := time.Since(start)
				for {
					m := maxDur.Load()
					if int64(d) <= m || maxDur.CompareAndSwap(m, int64(d)) {
						break
					}
				}
				var eb *protocol.ErrorBody
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &eb) && eb.Code == "invocation_stopped":
					stopped.Add(1)
				case errors.As(err, &eb) && eb.Code == protocol.CodeTimeout:
					timedOut.Add(1)
				case errors.As(err, &eb) && eb.Code == "function_not_found":
					notFound.Add(1) // every worker was down at that instant
				default:
					other.Add(1)
					t.Errorf("unexpected call error: %v", err)
				}
			}
		}()
	}
	kills := 0
	tick := time.NewTicker(200 * time.Millisecond)
	for loadCtx.Err() == nil {
		select {
		case <-tick.C:
			i := rand.IntN(nWorkers)
			pmu.Lock()
			procs[i].kill()
			procs[i] = spawn(t, exe, srv.URL(), fmt.Sprintf("chaos-%d", i))
			pmu.Unlock()
			kills++
		case <-loadCtx.Done():
		}
	}
	tick.Stop()
	wg.Wait()
	t.Logf("%d kills: %d ok, %d invocation_stopped, %d timeouts, %d function_not_found, max call %v",
		kills, ok.Load(), stopped.Load(), timedOut.Load(), notFound.Load(), time.Duration(maxDur.Load()))
	if ok.Load() == 0 || stopped.Load() == 0 {
		t.Errorf("chaos did not bite: %d ok, %d stopped", ok.Load(), stopped.Load())
	}
	if n := timedOut.Load(); n != 0 {
		t.Errorf("%d calls timed out; a killed worker's calls must end with invocation_stopped", n)
	}
	if d := time.Duration(maxDur.Load()); d > latencyBound {
		t.Errorf("a call took %v, over the %v bound (timeout %v)", d, latencyBound, callTimeout)
	}
	caller.Close(ctx)
	for _, p := range procs {
		p.kill()
	}
	procs = nil
	// Everything the load created is gone again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		snap := srv.Engine().Snapshot()
		remote := 0
		for _, w := range snap.Workers {
			if !w.Internal {
				remote++
			}
		}
		heap := heapInUse()
		if n <= baseGoroutines+2 && remote == 0 && heap < baseHeap+16<<20 {
			t.Logf("after chaos: %d goroutines (baseline %d), heap %d KiB (baseline %d KiB)", n, baseGoroutines, heap>>10, baseHeap>>10)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after chaos: %d goroutines (baseline %d), %d workers still listed, heap %d KiB (baseline %d KiB)",
				n, baseGoroutines, remote, heap>>10, baseHeap>>10)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGarbageAtScale replays malformed and random frames from several
// sockets at once while real workers keep calling each other: no call of
// theirs fails.
func TestGarbageAtScale(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := server.Start(ctx, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(ctx)
	worker, err := sdk.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close(ctx)
	worker.RegisterFunction("calm::echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil })
	// The registration travels on the worker's socket, the calls on the
	// caller's: wait until the engine has it.
	for !srv.Engine().HasFunction("calm::echo") {
		if ctx.Err() != nil {
			t.Fatal("calm::echo never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	caller, err := sdk.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close(ctx)

	frames := garbage()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		// Exits when stop is closed.
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				sendGarbage(ctx, t, srv.URL(), frames, r, stop)
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	calls := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); calls++ {
		got, err := sdk.Call[map[string]any](ctx, caller, "calm::echo", map[string]int{"i": calls})
		if err != nil || got["i"] != float64(calls) {
			t.Fatalf("call %d during garbage: %v, %v", calls, got, err)
		}
	}
	t.Logf("%d clean calls while garbage flowed", calls)
}

// garbage is malformed frames of every kind plus random mutations of
// valid ones (none of which registers or answers calm::echo: a socket
// that serves a function and never answers is a slow worker, not garbage).
func garbage() [][]byte {
	valid := []string{
		`{"type":"invokefunction","invocation_id":"3f0c1a2b-1111-4222-8333-444455556666","function_id":"other::fn","data":{"x":[1,2,{"y":null}]}}`,
		`{"type":"invocationresult","invocation_id":"3f0c1a2b-1111-4222-8333-444455556666","function_id":"calm::echo","result":1}`,
		`{"type":"registertrigger","id":"t","trigger_type":"webhook","function_id":"x","config":{"a":1}}`,
		`{"type":"registertriggertype","id":"webhook","description":"d"}`,
		`{"type":"triggerregistrationresult","id":"t","trigger_type":"webhook","function_id":"x","error":{"code":"c","message":"m"}}`,
		`{"type":"reattach","previous_worker_id":"x","reattach_token":"y"}`,
		`{"type":"registerservice","id":"s","name":"n"}`,
		`{"type":"unregistertrigger","id":"t"}`,
		`{"type":"ping"}`,
	}
	out := [][]byte{
		[]byte(`{"type":`), []byte(`null`), []byte(`[]`), []byte("\x00\xff\xfe"), []byte(`OTLP{`),
		[]byte(`MTRC` + strings.Repeat("[", 1000)), []byte(strings.Repeat("{", 10000)),
		[]byte(`{"type":"invokefunction","function_id":"calm::echo","data":` + strings.Repeat("[", 5000) + `}`),
		[]byte(`{"type":"invokefunction","invocation_id":"nope","function_id":"calm::echo","data":1}`),
		[]byte(`{"type":"invocationresult","invocation_id":"3f0c1a2b-1111-4222-8333-444455556666"}`),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, v := range valid {
		out = append(out, []byte(v))
		for range 20 {
			b := []byte(v)
			switch r.IntN(3) {
			case 0:
				b = b[:r.IntN(len(b))]
			case 1:
				for range 3 {
					b[r.IntN(len(b))] = byte(r.IntN(256))
				}
			default:
				i := r.IntN(len(b))
				b = append(b[:i:i], append([]byte(v[r.IntN(len(v)):]), b[i:]...)...)
			}
			out = append(out, b)
		}
	}
	return out
}

// sendGarbage opens a socket, sends a burst of garbage and closes it.
func sendGarbage(ctx context.Context, t *testing.T, url string, frames [][]byte, r *rand.Rand, stop <-chan struct{}) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(dctx, url, nil)
	if err != nil {
		select {
		case <-stop:
		default:
			t.Errorf("dial: %v", err)
		}
		return
	}
	defer ws.CloseNow()
	for range 50 {
		typ := websocket.MessageText
		if r.IntN(4) == 0 {
			typ = websocket.MessageBinary
		}
		if err := ws.Write(dctx, typ, frames[r.IntN(len(frames))]); err != nil {
			return
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

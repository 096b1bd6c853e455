package tui

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/golden"

	"github.com/iii-workbench/iii/engine/event"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPrint: one line per event, worker names resolved, crashes with
// their last output; the output is testdata/TestPrint.golden.
func TestPrint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := newFakeSource()
	snap, evs := fixture()
	src.setSnapshot(snap)
	var out lockedBuffer
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	// Exits when stop cancels runCtx.
	go func() { done <- Print(runCtx, src, &out) }()

	// Wait for the subscription, then publish.
	for tick := time.NewTicker(5 * time.Millisecond); ; <-tick.C {
		src.mu.Lock()
		n := len(src.subs)
		src.mu.Unlock()
		if n > 0 {
			tick.Stop()
			break
		}
	}
	at := t0.Add(-time.Second)
	src.publish(
		event.WorkerConnected{WorkerID: "w-new", At: at},
		event.FunctionRegistered{FunctionID: "payments::refund", WorkerID: "w-new", Worker: "w-new", At: at},
		event.WorkerUpdated{WorkerID: "w-new", Name: "payments", Runtime: "python", Version: "0.11.2", PID: 99, At: at},
		event.TriggerRegistered{TriggerID: "t-9", TriggerType: "http", FunctionID: "payments::refund", WorkerID: "w-new",
			Config: []byte(`{"api_path":"/refund"}`), Active: true, At: at},
		event.InvocationFinished{InvocationID: "q", FunctionID: FnTracesTree, Trigger: TriggerQuery, Status: "ok", At: at},
		// A Go worker's slog records, text and JSON: one line each, the
		// worker's level and fields, not a log line inside ours.
		event.LogLine{Worker: "greeter-go", Stream: "stderr", At: at,
			Line: `time=2026-12-04T20:41:31.179Z level=INFO msg="greeter ready: say \"hi\"" url=ws://127.0.0.1:49134`},
		event.LogLine{Worker: "greeter-go", Stream: "stderr", At: at,
			Line: `{"time":"2026-12-04T20:41:31.179Z","level":"WARN","msg":"slow call","ms":1200}`},
		event.LogLine{Worker: "greeter-go", Stream: "stdout", Line: "time=soon level=INFO plain text", At: at},
		// iii invoke: its call shows as iii-cli's; its connection and its
		// engine::workers::register call do not.
		event.WorkerConnected{WorkerID: "w-cli", At: at},
		event.WorkerUpdated{WorkerID: "w-cli", Name: CLIClientName, Runtime: "go", At: at},
		event.InvocationFinished{InvocationID: "r", FunctionID: FnRegisterWorker, CallerWorkerID: "w-cli", Trigger: "worker", Status: "ok", At: at},
		event.InvocationFinished{InvocationID: "c", FunctionID: "payments::refund", CallerWorkerID: "w-cli", Worker: "payments", Trigger: "worker",
			Status: "ok", Duration: time.Millisecond, At: at},
		event.WorkerDisconnected{WorkerID: "w-cli", Reason: "closed 1000", At: at},
		// A failed reload: the old pid keeps serving.
		event.ProcessChanged{Worker: "payments", Status: event.ProcessRunning, PID: 99,
			Error: "reload failed: new process (pid 120) exited with code 1", At: at},
	)
	src.publish(evs...)
	src.publish(
		event.ProcessChanged{Worker: "mailer", Status: event.ProcessCrashed, ExitCode: 2, Error: "exited with code 2",
			Restarts: 3, LastLines: []string{"Traceback (most recent call last):", "ModuleNotFoundError: smtplib2"}, At: t0},
		event.WorkerUpdated{WorkerID: "w-new", Name: "payments", Draining: true, At: t0},
		event.WorkerDisconnected{WorkerID: "w-new", Reason: "closed 1000", At: t0},
	)
	for tick := time.NewTicker(5 * time.Millisecond); !strings.Contains(out.String(), "left payments"); {
		select {
		case <-ctx.Done():
			t.Fatalf("no line for the last event; output:\n%s", out.String())
		case <-tick.C:
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Print = %v", err)
	}
	golden.RequireEqual(t, []byte(out.String()))
}

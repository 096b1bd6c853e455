package tui

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/iii-workbench/iii/engine/event"
)

// Print writes one line per event to w until ctx ends: workers joining and
// leaving, registrations, finished invocations with duration and status,
// worker output and process changes (crashes with their last output). It
// is `iii dev` without a terminal, for scripts and CI. Lines are buffered
// while events are pending and flushed when the stream is idle.
func Print(ctx context.Context, src Source, w io.Writer) error {
	sub := src.Subscribe(1 << 16)
	defer sub.Close()
	p := &printer{w: bufio.NewWriterSize(w, 64<<10), names: map[string]string{}}
	// Workers that connected before the subscription are announced too.
	for _, wk := range src.Snapshot().Workers {
		if !wk.Internal {
			p.event(event.WorkerUpdated{WorkerID: wk.ID, Name: wk.Name, Runtime: wk.Runtime, Version: wk.Version,
				PID: wk.PID, Draining: wk.Draining, Namespace: wk.Namespace, At: wk.ConnectedAt})
		}
	}
	var dropped uint64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return p.w.Flush()
		case <-tick.C:
		case ev := <-sub.C():
			p.event(ev)
		}
		if d := sub.Dropped(); d > dropped {
			fmt.Fprintf(p.w, "%s events    %d dropped: output could not keep up\n", time.Now().Format(stamp), d-dropped)
			dropped = d
		}
		if len(sub.C()) == 0 {
			if err := p.w.Flush(); err != nil {
				return fmt.Errorf("tui: print: %w", err)
			}
		}
	}
}

const stamp = "15:04:05.000"

type printer struct {
	w     *bufio.Writer
	names map[string]string // worker id -> name
}

func (p *printer) line(at time.Time, kind, format string, args ...any) {
	fmt.Fprintf(p.w, "%s %-9s %s\n", at.Format(stamp), kind, fmt.Sprintf(format, args...))
}

func (p *printer) name(id string) string {
	if n := p.names[id]; n != "" {
		return n
	}
	return shortID(id)
}

func (p *printer) event(ev event.Event) {
	switch e := ev.(type) {
	case event.WorkerUpdated:
		_, known := p.names[e.WorkerID]
		p.names[e.WorkerID] = oneLine(e.Name)
		if e.Name == CLIClientName {
			return // iii invoke and friends: their calls show, not their connections
		}
		switch {
		case !known:
			ns := ""
			if n := nsOf(e.Namespace); n != "" {
				ns = ", namespace " + n
			}
			p.line(e.At, "worker", "joined %s (%s %s, pid %d, id %s%s)", p.name(e.WorkerID), dash(e.Runtime), e.Version, e.PID, e.WorkerID, ns)
		case e.Draining:
			p.line(e.At, "worker", "draining %s", p.name(e.WorkerID))
		}
	case event.WorkerDisconnected:
		if p.names[e.WorkerID] == CLIClientName {
			delete(p.names, e.WorkerID)
			return
		}
		p.line(e.At, "worker", "left %s (%s)", p.name(e.WorkerID), dash(e.Reason))
		delete(p.names, e.WorkerID)
	case event.FunctionRegistered:
		by := oneLine(e.Worker)
		if n := p.names[e.WorkerID]; n != "" || e.Worker == e.WorkerID {
			by = p.name(e.WorkerID)
		}
		p.line(e.At, "function", "registered %s by %s", e.FunctionID, dash(by))
	case event.FunctionUnregistered:
		p.line(e.At, "function", "unregistered %s", e.FunctionID)
	case event.TriggerRegistered:
		state := ""
		if !e.Active {
			state = " (parked: no provider yet)"
		}
		p.line(e.At, "trigger", "registered %s → %s %s%s", e.TriggerType, e.FunctionID, compactJSON(e.Config, 120), state)
	case event.TriggerUnregistered:
		p.line(e.At, "trigger", "unregistered %s → %s", e.TriggerType, e.FunctionID)
	case event.InvocationFinished:
		if e.Trigger == TriggerQuery || e.FunctionID == FnRegisterWorker && p.names[e.CallerWorkerID] == CLIClientName {
			return
		}
		caller := e.Trigger
		if e.CallerWorkerID != "" {
			caller = p.name(e.CallerWorkerID)
		}
		status := e.Status
		if e.Status != event.StatusOK {
			status += " " + e.ErrorCode
			if e.ErrorMessage != "" {
				status += ": " + oneLine(e.ErrorMessage)
			}
		}
		p.line(e.At, "call", "%s %s → %s %s %s", e.FunctionID, dash(caller), dash(oneLine(e.Worker)), fmtDuration(e.Duration), status)
	case event.LogLine:
		if level, rest, ok := workerRecord(e.Line); ok {
			// A worker's own slog record: its level and fields, not a log
			// line nested inside ours.
			p.line(e.At, "log", "%s %s | %-5s %s", e.Worker, e.Stream, level, oneLine(rest))
			return
		}
		p.line(e.At, "log", "%s %s | %s", e.Worker, e.Stream, oneLine(e.Line))
	case event.ProcessChanged:
		msg := fmt.Sprintf("%s %s", e.Worker, e.Status)
		if e.PID > 0 {
			msg += fmt.Sprintf(" pid %d", e.PID)
		}
		if e.Status == event.ProcessCrashed || e.Status == event.ProcessFailed {
			if e.ExitCode != 0 {
				msg += fmt.Sprintf(" exit %d", e.ExitCode)
			}
			if e.Error != "" {
				msg += ": " + oneLine(e.Error)
			}
			msg += fmt.Sprintf(" (restarts %d)", e.Restarts)
			for _, l := range e.LastLines {
				msg += "\n    | " + oneLine(l)
			}
		} else if e.Status == event.ProcessRunning && e.Error != "" {
			// A failed reload: the pid is the old process, still serving;
			// the error names the new one that failed.
			msg += " keeps serving: " + oneLine(e.Error)
		} else if e.Error != "" {
			msg += ": " + oneLine(e.Error)
		}
		p.line(e.At, "process", "%s", strings.TrimRight(msg, "\n"))
	}
}

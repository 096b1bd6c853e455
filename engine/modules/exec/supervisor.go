package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iii-workbench/iii/engine"
	"github.com/iii-workbench/iii/engine/event"
)

const (
	statusStarting   = event.ProcessStarting
	statusRunning    = event.ProcessRunning
	statusReloading  = event.ProcessReloading
	statusDraining   = event.ProcessDraining
	statusRestarting = event.ProcessRestarting
	statusCrashed    = event.ProcessCrashed
	statusFailed     = event.ProcessFailed
	statusStopped    = event.ProcessStopped
)

const (
	// drainPoll is how often a draining worker's in-flight count is read.
	drainPoll = 10 * time.Millisecond
	// drainSettle is how long the in-flight count must stay at zero before
	// the old process is stopped: a call routed just before the worker was
	// marked draining is counted a moment after the routing decision.
	drainSettle = 100 * time.Millisecond
	// readyPoll is how often registration is rechecked besides on events.
	readyPoll = 100 * time.Millisecond
	// noFunctionsSettle is how long a new worker that registers no
	// functions must be connected before it counts as ready.
	noFunctionsSettle = 500 * time.Millisecond
	// crashReportLines is how many output lines a crash log message quotes.
	crashReportLines = 10
)

var (
	errExited         = errors.New("exited before it registered with the engine")
	errStartupTimeout = errors.New("did not register with the engine in time")
	errInterrupted    = errors.New("interrupted by a change")
)

// supervisor runs one configured worker: its run goroutine owns the
// processes and every decision about them; the rest only read the status
// or post requests to the bounded channels.
type supervisor struct {
	m          *Module
	w          worker
	env        []string
	log        *slog.Logger
	watch      *watcher
	changes    <-chan string // debounced file changes; nil without watch
	restartReq chan struct{} // manual restarts, capacity 1

	// Owned by run.
	cur         *proc              // the serving process, nil when none
	live        map[*proc]struct{} // every process not yet reaped
	nextBackoff time.Duration
	retry       *time.Timer
	retryC      <-chan time.Time
	installed   string // hash of the last successful install
	failedHash  string // hash of the last failed install
	pending     bool   // a change arrived while starting
	pendingHard bool   // a manual restart arrived while starting

	mu sync.Mutex // guards st
	st WorkerStatus
}

func (s *supervisor) status() WorkerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.clone()
}

// update changes the status and publishes it.
func (s *supervisor) update(fn func(st *WorkerStatus)) {
	s.mu.Lock()
	fn(&s.st)
	st := s.st.clone()
	s.mu.Unlock()
	s.m.host.Engine.Events().Publish(event.ProcessChanged{Worker: st.Name, Status: st.Status, PID: st.PID,
		Restarts: st.Restarts, Reloads: st.Reloads, ExitCode: st.ExitCode, Error: st.Error,
		RestartIn: st.RestartIn, LastLines: st.LastLines, FailedPID: st.FailedPID, At: time.Now()})
}

// line records one output line of p. Blank lines of an install (npm
// prints one before its summary) are left out.
func (s *supervisor) line(p *proc, stream, line string) {
	if stream == streamInstall && strings.TrimSpace(line) == "" {
		return
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, line,
		slog.String("stream", stream), slog.Int("pid", p.pid))
	s.m.host.Engine.Events().Publish(event.LogLine{Worker: s.w.name, PID: p.pid, Stream: stream, Line: line, At: time.Now()})
}

func (s *supervisor) run(ctx context.Context) {
	defer s.shutdown()
	s.installed = readInstallState(s.w.dir)
	s.start(ctx, false)
	for ctx.Err() == nil {
		if s.pending || s.pendingHard {
			hard := s.pendingHard
			s.pending, s.pendingHard = false, false
			s.changed(ctx, "", hard)
			continue
		}
		var exited <-chan struct{}
		if s.cur != nil {
			exited = s.cur.done
		}
		select {
		case <-ctx.Done():
			return
		case path := <-s.changes:
			s.changed(ctx, path, false)
		case <-s.restartReq:
			s.changed(ctx, "", true)
		case <-exited:
			s.crashed()
		case <-s.retryC:
			s.retryC = nil
			s.start(ctx, false)
		}
	}
}

// changed handles a file change (path) or a manual restart (hard).
func (s *supervisor) changed(ctx context.Context, path string, hard bool) {
	switch {
	case hard:
		s.log.Info("restart requested")
	case path != "":
		s.log.Info("files changed", "file", path)
	}
	if s.cur == nil || s.cur.exited() {
		if s.cur != nil {
			s.crashed()
		}
		s.stopRetry()
		s.start(ctx, hard)
		return
	}
	s.reload(ctx, hard)
}

// start installs if needed and starts a process when none is serving.
func (s *supervisor) start(ctx context.Context, force bool) {
	s.update(func(st *WorkerStatus) {
		st.Status, st.PID, st.WorkerIDs, st.RestartIn = statusStarting, 0, nil, 0
	})
	if err := s.install(ctx, force); err != nil {
		if ctx.Err() == nil {
			s.installFailed(err)
		}
		return
	}
	s.drainChanges()
	p, err := s.spawn()
	if err != nil {
		s.log.Error("cannot start worker process", "err", err)
		s.update(func(st *WorkerStatus) { st.Error = err.Error() })
		s.scheduleRestart(0)
		return
	}
	s.cur = p
	s.update(func(st *WorkerStatus) { st.PID, st.StartedAt = p.pid, p.started })
	ws, err := s.waitReady(ctx, p, nil, true)
	switch {
	case ctx.Err() != nil, errors.Is(err, errExited):
		return // shutdown, or the run loop reports the crash
	case errors.Is(err, errStartupTimeout):
		s.log.Warn("process runs but has not registered with the engine; is it an iii worker?",
			"pid", p.pid, "waited", s.w.startupTimeout)
	case err == nil:
		s.log.Info("worker ready", "pid", p.pid, "workers", workerIDs(ws))
	}
	s.update(func(st *WorkerStatus) { st.Status, st.WorkerIDs = statusRunning, workerIDs(ws) })
}

// reload replaces the serving process by a new one without dropping calls.
func (s *supervisor) reload(ctx context.Context, hard bool) {
	old := s.cur
	s.update(func(st *WorkerStatus) { st.Status = statusReloading })
	oldWs := s.attribute(s.m.host.Engine.Snapshot())[old]
	if err := s.install(ctx, hard); err != nil {
		if ctx.Err() == nil {
			s.reloadFailed(fmt.Errorf("install: %w", err), nil, 0)
		}
		return
	}
	if len(oldWs) == 0 {
		// Not an engine worker (or not yet): nothing to hand calls over
		// to, so stop it and start again.
		s.log.Info("restarting (the process has no engine worker to drain)", "pid", old.pid)
		s.update(func(st *WorkerStatus) { st.Status = statusDraining })
		s.stop(old)
		s.cur = nil
		s.start(ctx, false)
		if s.cur != nil && !s.cur.exited() {
			s.update(func(st *WorkerStatus) { st.Reloads++; st.Error, st.FailedPID = "", 0 })
		}
		return
	}
	// The new process is ready when it serves every function of the old
	// one and holds every trigger binding the old one holds (the same
	// trigger registered again joins the old binding, so the old process
	// can leave without taking a route or a schedule with it).
	var want []string
	for _, w := range oldWs {
		want = append(want, w.Functions...)
		for _, id := range w.Triggers {
			want = append(want, triggerWant+id)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)

	// The new process registers the old one's worker name and functions
	// while the old one still serves: that is a replacement, not a
	// namespace conflict (engine.SetRetiring).
	s.setRetiring(oldWs, true)
	s.drainChanges()
	np, err := s.spawn()
	if err != nil {
		s.setRetiring(oldWs, false)
		s.reloadFailed(err, nil, 0)
		return
	}
	ws, err := s.waitReady(ctx, np, want, false)
	if err != nil {
		if ctx.Err() != nil {
			return // shutdown stops both
		}
		s.setRetiring(oldWs, false)
		s.stop(np)
		s.reloadFailed(fmt.Errorf("new process (pid %d) %s: %w", np.pid, describeFailure(np, err), err), np.tail.snapshot(), np.pid)
		return
	}
	s.cur = np
	s.update(func(st *WorkerStatus) {
		st.Status, st.PID, st.StartedAt, st.WorkerIDs = statusDraining, np.pid, np.started, workerIDs(ws)
		// The new process serves: an earlier failure is not its own.
		st.Error, st.FailedPID, st.LastLines = "", 0, nil
	})
	s.drain(ctx, old, oldWs)
	if ctx.Err() != nil || np.exited() {
		return // shutdown, or the run loop reports the new process's crash
	}
	s.log.Info("reloaded", "old_pid", old.pid, "pid", np.pid, "workers", workerIDs(ws))
	s.update(func(st *WorkerStatus) { st.Status, st.Error, st.FailedPID = statusRunning, "", 0; st.Reloads++ })
}

// setRetiring marks (or unmarks) the engine workers of a process being
// replaced; a worker that has left already is no matter.
func (s *supervisor) setRetiring(ws []engine.WorkerInfo, retiring bool) {
	for _, w := range ws {
		if err := s.m.host.Engine.SetRetiring(w.ID, retiring); err != nil && !errors.Is(err, engine.ErrWorkerNotFound) {
			s.log.Warn("cannot mark worker retiring", "worker_id", w.ID, "err", err)
		}
	}
}

func describeFailure(p *proc, err error) string {
	if errors.Is(err, errExited) {
		<-p.done
		return p.describeExit()
	}
	return "failed"
}

// reloadFailed reports a failed reload; the old process keeps serving
// (the status's PID). lines and failed, when known, are the output and
// pid of the new process that failed.
func (s *supervisor) reloadFailed(err error, lines []string, failed int) {
	s.log.Error("reload failed; the old process keeps serving", "err", err, "pid", s.status().PID, "failed_pid", failed,
		"last_lines", lastN(lines, crashReportLines))
	s.update(func(st *WorkerStatus) {
		st.Status, st.Error, st.FailedPID = statusRunning, "reload failed: "+err.Error(), failed
		if lines != nil {
			st.LastLines = lines
		}
	})
}

// drain hands the old process's calls over and stops it: mark its engine
// workers draining, wait for their in-flight calls (bounded), stop it.
// On shutdown (ctx) it returns at once, leaving the stop to shutdown.
func (s *supervisor) drain(ctx context.Context, old *proc, ws []engine.WorkerInfo) {
	eng := s.m.host.Engine
	for _, w := range ws {
		if err := eng.SetDraining(w.ID, true); err != nil && !errors.Is(err, engine.ErrWorkerNotFound) {
			s.log.Warn("cannot mark worker draining", "worker_id", w.ID, "err", err)
		}
	}
	deadline := time.Now().Add(s.w.drainTimeout)
	var zeroSince time.Time
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		var busy int64
		for _, w := range ws {
			if n, err := eng.InFlight(w.ID); err == nil {
				busy += n
			}
		}
		now := time.Now()
		switch {
		case busy > 0:
			zeroSince = time.Time{}
		case zeroSince.IsZero():
			zeroSince = now
		case now.Sub(zeroSince) >= drainSettle:
			s.stop(old)
			return
		}
		if now.After(deadline) {
			s.log.Warn("drain timeout: stopping the old process with calls still running",
				"pid", old.pid, "in_flight", busy, "drain_timeout", s.w.drainTimeout)
			s.stop(old)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-old.done:
			if !old.wasStopped() {
				s.log.Warn("old process exited while draining", "pid", old.pid, "exit", old.describeExit())
			}
			delete(s.live, old)
			return
		case <-tick.C:
		}
	}
}

// crashed handles the exit of the serving process that nobody asked for.
func (s *supervisor) crashed() {
	p := s.cur
	s.cur = nil
	<-p.done
	delete(s.live, p)
	lines := p.tail.snapshot()
	msg := p.describeExit()
	s.log.Error("worker process crashed", "pid", p.pid, "exit", msg, "uptime", time.Since(p.started).Round(time.Millisecond),
		"last_lines", lastN(lines, crashReportLines))
	s.update(func(st *WorkerStatus) {
		st.Status, st.PID, st.WorkerIDs, st.ExitCode, st.LastLines = statusCrashed, 0, nil, p.exitCode, lines
		st.Error, st.FailedPID = fmt.Sprintf("crashed: %s", msg), p.pid
	})
	s.scheduleRestart(time.Since(p.started))
}

// scheduleRestart arms the backoff timer after a crash of a process that
// had been up for uptime.
func (s *supervisor) scheduleRestart(uptime time.Duration) {
	if uptime >= s.w.backoffReset || s.nextBackoff == 0 {
		s.nextBackoff = s.w.backoff
	}
	delay := s.nextBackoff
	s.nextBackoff = min(2*delay, s.w.backoffMax)
	s.stopRetry()
	s.retry = time.NewTimer(delay)
	s.retryC = s.retry.C
	s.log.Info("restarting after backoff", "in", delay)
	s.update(func(st *WorkerStatus) { st.Status, st.RestartIn = statusRestarting, delay; st.Restarts++ })
}

func (s *supervisor) stopRetry() {
	if s.retry != nil {
		s.retry.Stop()
		s.retry, s.retryC = nil, nil
	}
}

// installFailed reports a failed install: nothing runs until the inputs
// change or a restart is requested.
func (s *supervisor) installFailed(err error) {
	s.log.Error("install failed; the worker starts after its install inputs change", "err", err)
	s.update(func(st *WorkerStatus) { st.Status, st.PID, st.Error = statusFailed, 0, "install failed: "+err.Error() })
}

// install runs the install commands when the inputs changed since the last
// successful install. After a failure it runs again only for other inputs
// (or when force is set).
func (s *supervisor) install(ctx context.Context, force bool) error {
	if len(s.w.install) == 0 {
		return nil
	}
	hash, err := installHash(s.w.dir, s.w.install, s.w.inputs)
	if err != nil {
		return err
	}
	if hash == s.installed {
		return nil
	}
	if hash == s.failedHash && !force {
		return errors.New("still failing: change its inputs or restart the worker to try again")
	}
	s.log.Info("installing", "commands", s.w.install)
	for _, c := range s.w.install {
		p, err := startProc(procSpec{dir: s.w.dir, command: c, env: s.env, merged: true, stream: streamInstall, line: s.line}, s.m.wg.Go)
		if err != nil {
			s.failedHash = hash
			return err
		}
		s.live[p] = struct{}{}
		select {
		case <-p.done:
		case <-ctx.Done():
			s.stop(p)
			return ctx.Err()
		}
		delete(s.live, p)
		if p.exitErr != nil {
			s.failedHash = hash
			s.update(func(st *WorkerStatus) { st.LastLines = p.tail.snapshot() })
			return fmt.Errorf("%q %s", c, p.describeExit())
		}
	}
	// Hash again: installs rewrite lock files.
	if hash, err = installHash(s.w.dir, s.w.install, s.w.inputs); err != nil {
		return err
	}
	s.installed, s.failedHash = hash, ""
	if err := writeInstallState(s.w.dir, hash); err != nil {
		s.log.Warn("cannot store the install hash; the next iii dev installs again", "err", err)
	}
	return nil
}

// spawn starts the run command.
func (s *supervisor) spawn() (*proc, error) {
	p, err := startProc(procSpec{dir: s.w.dir, command: shellCommand(s.w.run), env: s.env, line: s.line}, s.m.wg.Go)
	if err != nil {
		return nil, err
	}
	s.live[p] = struct{}{}
	s.log.Info("started", "pid", p.pid, "command", s.w.run)
	return p, nil
}

// stop terminates p (SIGTERM, SIGKILL after the stop grace).
func (s *supervisor) stop(p *proc) {
	p.terminate(s.w.stopGrace, s.m.abort)
	delete(s.live, p)
}

// shutdown stops every process of this worker, in parallel.
func (s *supervisor) shutdown() {
	s.stopRetry()
	var wg sync.WaitGroup
	for p := range s.live {
		wg.Go(func() { p.terminate(s.w.stopGrace, s.m.abort) }) // exits once p is reaped
	}
	wg.Wait()
	clear(s.live)
	s.cur = nil
	s.update(func(st *WorkerStatus) { st.Status, st.PID, st.WorkerIDs = statusStopped, 0, nil })
}

// drainChanges drops change notifications that arrived before a process
// starts: it reads the files as they are now. Events still on their way
// for those writes are dropped by the watcher (rebase).
func (s *supervisor) drainChanges() {
	if s.watch != nil {
		s.watch.rebase()
	}
	select {
	case <-s.changes:
	default:
	}
}

// waitReady waits until p's engine worker has registered want (every
// function and trigger binding of the process it replaces; with no want,
// any function, or none for noFunctionsSettle). When registrations stop growing with some of
// want still missing (the new version dropped them), it is ready after
// reloadSettle. interruptible lets a change or a restart request end the
// wait (noted in s.pending).
func (s *supervisor) waitReady(ctx context.Context, p *proc, want []string, interruptible bool) ([]engine.WorkerInfo, error) {
	sub := s.m.host.Engine.Events().Subscribe(64)
	defer sub.Close()
	timeout := time.NewTimer(s.w.startupTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	var changes <-chan string
	var restarts <-chan struct{}
	if interruptible {
		changes, restarts = s.changes, s.restartReq
	}
	var (
		seenAt, grewAt time.Time
		count          int
	)
	check := func() ([]engine.WorkerInfo, bool) {
		ws := s.attribute(s.m.host.Engine.Snapshot())[p]
		if len(ws) == 0 {
			return nil, false
		}
		now := time.Now()
		if seenAt.IsZero() {
			seenAt = now
		}
		have := map[string]bool{}
		for _, w := range ws {
			for _, f := range w.Functions {
				have[f] = true
			}
			for _, id := range w.Triggers {
				have[triggerWant+id] = true
			}
		}
		if len(want) == 0 {
			return ws, len(have) > 0 || now.Sub(seenAt) >= noFunctionsSettle
		}
		var missing []string
		for _, f := range want {
			if !have[f] {
				if id, ok := strings.CutPrefix(f, triggerWant); ok {
					f = "trigger " + id
				}
				missing = append(missing, f)
			}
		}
		if len(missing) == 0 {
			return ws, true
		}
		if len(have) != count {
			count, grewAt = len(have), now
		}
		if count > 0 && now.Sub(grewAt) >= s.w.reloadSettle {
			s.log.Warn("new process does not serve every function and trigger of the old one; reloading anyway",
				"pid", p.pid, "missing", missing)
			return ws, true
		}
		return ws, false
	}
	dirty := true
	for {
		if dirty {
			if ws, ok := check(); ok {
				return ws, nil
			}
			dirty = false
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.done:
			return nil, errExited
		case <-timeout.C:
			return nil, fmt.Errorf("%w (%s)", errStartupTimeout, s.w.startupTimeout)
		case <-changes:
			s.pending = true
			return nil, errInterrupted
		case <-restarts:
			s.pendingHard = true
			return nil, errInterrupted
		case <-tick.C:
			dirty = true
		case ev := <-sub.C():
			// Recheck for registry changes only, once per burst.
			dirty = registryEvent(ev)
			for range cap(sub.C()) {
				select {
				case ev = <-sub.C():
					dirty = dirty || registryEvent(ev)
					continue
				default:
				}
				break
			}
		}
	}
}

// triggerWant prefixes a trigger binding id in waitReady's want list (a
// function id never starts with it).
const triggerWant = "\x00trigger:"

func registryEvent(ev event.Event) bool {
	switch ev.(type) {
	case event.WorkerUpdated, event.FunctionRegistered, event.WorkerConnected, event.TriggerRegistered:
		return true
	}
	return false
}

// attribute maps this worker's live processes to the engine workers they
// run: by reported PID (the worker's process group is the process's), else
// by name (III_WORKER_NAME) to the newest process started before the
// worker connected.
func (s *supervisor) attribute(snap engine.Snapshot) map[*proc][]engine.WorkerInfo {
	procs := make([]*proc, 0, len(s.live))
	for p := range s.live {
		procs = append(procs, p)
	}
	slices.SortFunc(procs, func(a, b *proc) int { return b.started.Compare(a.started) })
	out := map[*proc][]engine.WorkerInfo{}
	for _, w := range snap.Workers {
		if w.Internal {
			continue
		}
		var owner *proc
		if w.PID > 0 {
			pg := pgidOf(w.PID)
			for _, p := range procs {
				if w.PID == p.pid || pg == p.pid {
					owner = p
					break
				}
			}
		}
		if owner == nil && w.Name == s.w.name {
			for _, p := range procs {
				if !w.ConnectedAt.Before(p.started) {
					owner = p
					break
				}
			}
		}
		if owner != nil {
			out[owner] = append(out[owner], w)
		}
	}
	return out
}

func workerIDs(ws []engine.WorkerInfo) []string {
	var ids []string
	for _, w := range ws {
		ids = append(ids, w.ID)
	}
	return ids
}

func lastN(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shellCommand prefixes run with exec when it is a simple command, so the
// worker replaces the shell: it is then the direct child (Pdeathsig
// reaches it) and gets signals itself.
func shellCommand(run string) string {
	t := strings.TrimSpace(run)
	if strings.ContainsAny(t, ";&|\n(){}`") {
		return run
	}
	f := strings.Fields(t)
	if len(f) == 0 || strings.Contains(f[0], "=") {
		return run
	}
	switch f[0] {
	case "exec", "if", "for", "while", "until", "case", "!", "{":
		return run
	}
	return "exec " + t
}

// Package exec is the exec module: it runs the worker processes of
// config.yaml, restarts them when they crash and reloads them, without
// dropping a call, when their files change.
//
//	modules:
//	  - class: ExecModule
//	    config:
//	      workers:
//	        - name: api                  # required, unique; the process gets III_WORKER_NAME=api
//	          dir: ./api                 # relative to base_dir
//	          install: ["npm install"]   # before the first start, again when the inputs change
//	          install_inputs: [package.json, package-lock.json]
//	          run: node index.mjs        # the long-running command, run with /bin/sh -c
//	          watch: ["**/*.mjs"]        # globs relative to dir; ** is any number of dirs
//	          ignore: [fixtures]         # besides .git, node_modules, .venv, __pycache__, dist, build, ...
//	          env: {LOG_LEVEL: debug}
//
// # Paths
//
// A worker's dir is relative to base_dir, which defaults to the directory
// of config.yaml (module.Host.ConfigDir), or the working directory without
// a config file; a relative base_dir is relative to that too.
//
// # Processes
//
// Each process is started as /bin/sh -c "exec <run>" (without the exec when
// run is a compound shell command) in its own process group, with the
// engine's environment plus env plus III_URL (the engine's worker URL),
// III_WORKER_NAME, III_ENGINE_PID and, when the engine requires one,
// III_TOKEN; the III_ variables win over env. On Linux the direct child gets
// SIGKILL if the engine dies (Pdeathsig). Output is captured line by line
// (lines cut at 16 KiB): logged with worker, stream and pid attributes and
// published as event.LogLine; the last 50 lines are kept for crash
// reports. Status changes are published as event.ProcessChanged.
//
// # Install
//
// The install commands run one after the other before the first start and
// again only when the SHA-256 of the commands and of the install inputs'
// contents changes. The inputs default to whichever of package.json,
// package-lock.json, yarn.lock, pnpm-lock.yaml, requirements.txt,
// pyproject.toml, poetry.lock, uv.lock, go.mod and go.sum exist. The hash of
// the last successful install is stored in <dir>/.iii/install.sha256 (the
// .iii dir ignores itself in git); delete it to force an install. A failing
// install keeps the worker from starting (or, on a reload, keeps the old
// process serving) and is retried when the inputs change, or on Restart.
//
// # Reload
//
// A change of a watched file (or of an install input), debounced, reloads
// the worker without dropping calls: install if needed, start the new
// process, wait until it has registered the functions the old one served
// and the same triggers (which then share the old one's bindings, so routes,
// schedules and subscriptions stay served across the hand-over) (or, when
// some stay missing, until its registrations have settled for
// reload_settle_ms), mark the old engine workers draining so new calls go to
// the new one, wait for the old one's in-flight calls (drain_timeout_ms),
// then SIGTERM its process group and SIGKILL it after stop_grace_ms. If the
// new process exits or does not register within startup_timeout_ms, it is
// stopped and the old one keeps serving. A process that never registered
// with the engine (not an iii worker) is simply stopped and started again.
// Changes during a reload make one more reload afterwards.
//
// Engine workers are matched to processes by the PID the SDKs report
// (the worker's process group is the process's), else by name (the SDKs
// report III_WORKER_NAME) and connection time.
//
// # Crashes
//
// A process that exits on its own is restarted after a backoff that starts
// at restart_backoff_ms (1 s), doubles up to restart_backoff_max_ms (30 s)
// and starts over once a process stayed up for restart_reset_ms (30 s). A
// change of a watched file restarts a crashed worker at once.
//
// Unix only: on other systems Start fails with an error.
package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/iii-workbench/iii/engine/config"
	"github.com/iii-workbench/iii/engine/internal/waitgroup"
	"github.com/iii-workbench/iii/engine/module"
)

func init() {
	module.Register(module.Info{ID: config.ModuleExec, New: func() module.Module { return &Module{} }})
}

// Defaults for the optional per-worker settings.
const (
	DefaultDebounce          = 200 * time.Millisecond
	DefaultDrainTimeout      = 10 * time.Second
	DefaultStopGrace         = 5 * time.Second
	DefaultStartupTimeout    = 30 * time.Second
	DefaultReloadSettle      = 3 * time.Second
	DefaultRestartBackoff    = time.Second
	DefaultRestartBackoffMax = 30 * time.Second
	DefaultRestartReset      = 30 * time.Second
)

// Sentinel errors.
var (
	// ErrUnknownWorker is returned by Restart for a name not in the config.
	ErrUnknownWorker = errors.New("exec: no such worker")
	// ErrNotRunning is returned by Restart before Start or after Stop.
	ErrNotRunning = errors.New("exec: module not running")
)

// Module is the exec module. Its exported fields are its config.
type Module struct {
	Workers []WorkerConfig `yaml:"workers"`
	// BaseDir is what the workers' dirs are relative to (default: the
	// directory of config.yaml).
	BaseDir string `yaml:"base_dir"`
	// Exec and Watch are iii's one-process shape ({exec: [cmd, ...], watch:
	// [glob, ...]}): a worker named "exec" running the commands in turn.
	Exec  []string `yaml:"exec"`
	Watch []string `yaml:"watch"`

	resolved []worker
	host     *module.Host
	cancel   context.CancelFunc
	abort    chan struct{} // closed when Stop's deadline passed: SIGKILL at once
	wg       sync.WaitGroup
	sups     []*supervisor
	byName   map[string]*supervisor

	mu      sync.Mutex
	running bool
}

// WorkerConfig is one worker process in config.yaml. Durations of 0 take
// the defaults.
type WorkerConfig struct {
	Name          string            `yaml:"name"`
	Dir           string            `yaml:"dir"`
	Install       []string          `yaml:"install"`
	InstallInputs []string          `yaml:"install_inputs"`
	Run           string            `yaml:"run"`
	Watch         []string          `yaml:"watch"`
	Ignore        []string          `yaml:"ignore"`
	Env           map[string]string `yaml:"env"`

	DebounceMS          int `yaml:"debounce_ms"`
	DrainTimeoutMS      int `yaml:"drain_timeout_ms"`
	StopGraceMS         int `yaml:"stop_grace_ms"`
	StartupTimeoutMS    int `yaml:"startup_timeout_ms"`
	ReloadSettleMS      int `yaml:"reload_settle_ms"`
	RestartBackoffMS    int `yaml:"restart_backoff_ms"`
	RestartBackoffMaxMS int `yaml:"restart_backoff_max_ms"`
	RestartResetMS      int `yaml:"restart_reset_ms"`
}

// worker is a validated WorkerConfig.
type worker struct {
	name, dir, run string
	install        []string
	inputs         []string
	globs          []glob
	ignores        ignoreSet
	env            map[string]string

	debounce, drainTimeout, stopGrace, startupTimeout, reloadSettle time.Duration
	backoff, backoffMax, backoffReset                               time.Duration
}

var (
	_ module.Module    = (*Module)(nil)
	_ module.Validator = (*Module)(nil)
)

// ID is "exec".
func (m *Module) ID() string { return config.ModuleExec }

// Validate checks the config and compiles the patterns.
func (m *Module) Validate() error {
	cfgs := m.Workers
	switch {
	case len(m.Exec) > 0 && len(m.Workers) > 0:
		return errors.New("set workers or exec, not both")
	case len(m.Exec) > 0:
		cfgs = []WorkerConfig{{Name: "exec", Run: strings.Join(m.Exec, " && "), Watch: m.Watch}}
	case len(m.Watch) > 0:
		return errors.New("watch without exec: set the watch of each entry of workers")
	}
	seen := map[string]bool{}
	m.resolved = m.resolved[:0]
	for i, c := range cfgs {
		w, err := resolve(c)
		if err != nil {
			return fmt.Errorf("workers[%d]: %w", i, err)
		}
		if seen[w.name] {
			return fmt.Errorf("workers[%d]: name %q is used twice", i, w.name)
		}
		seen[w.name] = true
		m.resolved = append(m.resolved, w)
	}
	return nil
}

func resolve(c WorkerConfig) (worker, error) {
	w := worker{name: c.Name, dir: c.Dir, run: strings.TrimSpace(c.Run), install: c.Install, env: c.Env}
	if w.name == "" {
		return w, errors.New("name is required")
	}
	if strings.IndexFunc(w.name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return w, fmt.Errorf("name %q: no spaces or control characters", w.name)
	}
	if w.run == "" {
		return w, fmt.Errorf("worker %s: run is required (the command that starts it)", w.name)
	}
	for i, cmd := range c.Install {
		if strings.TrimSpace(cmd) == "" {
			return w, fmt.Errorf("worker %s: install[%d] is empty", w.name, i)
		}
	}
	for k := range c.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return w, fmt.Errorf("worker %s: env: invalid variable name %q", w.name, k)
		}
	}
	ms := []struct {
		key string
		v   int
		dst *time.Duration
		def time.Duration
	}{
		{"debounce_ms", c.DebounceMS, &w.debounce, DefaultDebounce},
		{"drain_timeout_ms", c.DrainTimeoutMS, &w.drainTimeout, DefaultDrainTimeout},
		{"stop_grace_ms", c.StopGraceMS, &w.stopGrace, DefaultStopGrace},
		{"startup_timeout_ms", c.StartupTimeoutMS, &w.startupTimeout, DefaultStartupTimeout},
		{"reload_settle_ms", c.ReloadSettleMS, &w.reloadSettle, DefaultReloadSettle},
		{"restart_backoff_ms", c.RestartBackoffMS, &w.backoff, DefaultRestartBackoff},
		{"restart_backoff_max_ms", c.RestartBackoffMaxMS, &w.backoffMax, DefaultRestartBackoffMax},
		{"restart_reset_ms", c.RestartResetMS, &w.backoffReset, DefaultRestartReset},
	}
	for _, d := range ms {
		if d.v < 0 {
			return w, fmt.Errorf("worker %s: %s must not be negative, got %d", w.name, d.key, d.v)
		}
		*d.dst = d.def
		if d.v > 0 {
			*d.dst = time.Duration(d.v) * time.Millisecond
		}
	}
	if w.backoffMax < w.backoff {
		w.backoffMax = w.backoff
	}
	w.inputs = c.InstallInputs
	if len(w.inputs) == 0 && len(w.install) > 0 {
		w.inputs = defaultInstallInputs
	}
	for _, in := range w.inputs {
		g, err := compileGlob(in)
		if err != nil {
			return w, fmt.Errorf("worker %s: install_inputs: %w", w.name, err)
		}
		if len(c.Watch) > 0 {
			w.globs = append(w.globs, g) // an input change reloads too
		}
	}
	for _, p := range c.Watch {
		g, err := compileGlob(p)
		if err != nil {
			return w, fmt.Errorf("worker %s: watch: %w", w.name, err)
		}
		w.globs = append(w.globs, g)
	}
	var err error
	if w.ignores, err = compileIgnores(c.Ignore); err != nil {
		return w, fmt.Errorf("worker %s: %w", w.name, err)
	}
	return w, nil
}

// Start resolves the workers' dirs, starts their watchers and starts the
// processes in the background.
func (m *Module) Start(ctx context.Context, h *module.Host) (err error) {
	if m.resolved == nil && (len(m.Workers) > 0 || len(m.Exec) > 0) {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	if len(m.resolved) > 0 && !supported {
		return errUnsupported
	}
	if len(m.resolved) > 0 && h.WorkerURL == "" {
		return errors.New("exec: the engine has no worker URL to give the workers (module.Host.WorkerURL)")
	}
	base, err := m.baseDir(h)
	if err != nil {
		return err
	}
	m.host = h
	m.abort = make(chan struct{})
	m.byName = map[string]*supervisor{}
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var watchers []*watcher
	defer func() {
		if err != nil {
			for _, w := range watchers {
				w.fw.Close()
			}
		}
	}()
	for _, w := range m.resolved {
		if !filepath.IsAbs(w.dir) {
			w.dir = filepath.Join(base, w.dir)
		}
		if fi, err := os.Stat(w.dir); err != nil {
			return fmt.Errorf("exec: worker %s: dir: %w", w.name, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("exec: worker %s: dir %s is not a directory", w.name, w.dir)
		}
		if real, err := filepath.EvalSymlinks(w.dir); err == nil {
			w.dir = real // the watcher walks the real tree
		}
		s := &supervisor{m: m, w: w, log: log.With("worker", w.name), restartReq: make(chan struct{}, 1),
			live: map[*proc]struct{}{}}
		s.env = m.environ(w)
		s.st = WorkerStatus{Name: w.name, Status: statusStarting, ExitCode: -1}
		if len(w.globs) > 0 {
			wt, err := newWatcher(w.dir, w.globs, w.ignores, w.debounce, s.log)
			if err != nil {
				return fmt.Errorf("exec: worker %s: %w", w.name, err)
			}
			watchers = append(watchers, wt)
			s.watch = wt
			s.changes = wt.out
		}
		m.sups = append(m.sups, s)
		m.byName[w.name] = s
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	for _, s := range m.sups {
		if s.watch != nil {
			m.wg.Go(func() { s.watch.run(runCtx) }) // exits when Stop cancels runCtx
		}
		m.wg.Go(func() { s.run(runCtx) }) // exits when Stop cancels runCtx, its processes stopped
	}
	m.mu.Lock()
	m.running = true
	m.mu.Unlock()
	return nil
}

func (m *Module) baseDir(h *module.Host) (string, error) {
	root := h.ConfigDir
	if root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("exec: working directory: %w", err)
		}
		root = wd
	}
	base := m.BaseDir
	if base == "" {
		base = root
	} else if !filepath.IsAbs(base) {
		base = filepath.Join(root, base)
	}
	abs, err := filepath.Abs(base)
	if err != nil {
		return "", fmt.Errorf("exec: base_dir: %w", err)
	}
	return abs, nil
}

// environ is the environment of w's processes.
func (m *Module) environ(w worker) []string {
	set := map[string]string{}
	var order []string
	put := func(k, v string) {
		if _, ok := set[k]; !ok {
			order = append(order, k)
		}
		set[k] = v
	}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			put(k, v)
		}
	}
	if _, ok := set["PYTHONUNBUFFERED"]; !ok {
		put("PYTHONUNBUFFERED", "1") // line-by-line output from Python workers
	}
	for k, v := range w.env {
		put(k, v)
	}
	put("III_URL", m.host.WorkerURL)
	put("III_WORKER_NAME", w.name)
	put("III_ENGINE_PID", strconv.Itoa(os.Getpid()))
	if m.host.AuthToken != "" {
		put("III_TOKEN", string(m.host.AuthToken))
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+set[k])
	}
	return env
}

// Stop stops every process (SIGTERM to each process group, SIGKILL after
// its stop grace or when ctx ends) and the watchers, and waits for them.
func (m *Module) Stop(ctx context.Context) error {
	m.mu.Lock()
	running := m.running
	m.running = false
	m.mu.Unlock()
	if !running {
		return nil
	}
	m.cancel()
	done := waitgroup.Done(&m.wg)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	close(m.abort) // every stop in progress sends SIGKILL now
	t := time.NewTimer(outputDrainTimeout + time.Second)
	defer t.Stop()
	select {
	case <-done:
		return fmt.Errorf("exec: stop: processes killed: %w", ctx.Err())
	case <-t.C:
		return fmt.Errorf("exec: stop: processes still running after SIGKILL: %w", ctx.Err())
	}
}

// WorkerStatus describes one configured worker process.
type WorkerStatus struct {
	Name      string
	Status    string // event.Process* (starting, running, reloading, draining, restarting, crashed, failed, stopped)
	PID       int    // the serving process; 0 when none runs
	StartedAt time.Time
	// WorkerIDs are the engine workers the serving process registered.
	WorkerIDs []string
	Restarts  int // crash restarts
	Reloads   int // completed reloads
	ExitCode  int // of the last exit; -1 when killed by a signal or none yet
	// Error is the last crash, failed install or failed reload (cleared by
	// a successful reload).
	Error string
	// RestartIn is the backoff before the next start while restarting.
	RestartIn time.Duration
	LastLines []string
	// FailedPID is the process Error and LastLines are about when it is
	// not PID (a failed reload's new process, a crashed process).
	FailedPID int
}

func (st WorkerStatus) clone() WorkerStatus {
	st.WorkerIDs = append([]string(nil), st.WorkerIDs...)
	st.LastLines = append([]string(nil), st.LastLines...)
	return st
}

// Status returns the status of every configured worker, in config order.
func (m *Module) Status() []WorkerStatus {
	out := make([]WorkerStatus, 0, len(m.sups))
	for _, s := range m.sups {
		out = append(out, s.status())
	}
	return out
}

// Restart reloads the named worker as a file change would (zero-drop when
// it is serving), starts it at once when it crashed, and retries a failed
// install. It does not wait for the restart.
func (m *Module) Restart(name string) error {
	m.mu.Lock()
	running := m.running
	m.mu.Unlock()
	if !running {
		return ErrNotRunning
	}
	s := m.byName[name]
	if s == nil {
		return fmt.Errorf("%w: %q", ErrUnknownWorker, name)
	}
	select {
	case s.restartReq <- struct{}{}:
	default: // one is pending
	}
	return nil
}

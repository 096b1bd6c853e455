//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Managed is a redis-server the engine starts and owns. It keeps its data
// in an append-only file under the data directory, listens only on a unix
// socket there (no TCP port), runs in its own process group (a Ctrl-C in
// the terminal reaches the engine, which stops it in order) and, on Linux,
// receives SIGTERM when the engine dies, so it never outlives the engine
// for long. A lock file keeps a second engine off the same directory; a
// redis-server left behind by an engine that was killed is stopped before
// a new one starts.
type Managed struct {
	dataDir string
	socket  string
	pidFile string
	lock    *os.File
	log     *slog.Logger

	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been reaped
	output  chan struct{} // closed when its output has been read to EOF
	watched chan struct{} // closed when watch has returned
	tail    *tailBuffer

	mu       sync.Mutex
	stopping bool
	waitErr  error
}

// Files in the data directory.
const (
	lockName   = "iii.lock"
	pidName    = "redis-server.pid"
	socketName = "redis.sock"
)

// maxSocketPath is the longest unix socket path every supported system
// accepts (sun_path is 104 bytes on the BSDs and macOS, 108 on Linux).
const maxSocketPath = 100

// Managed-store timings.
const (
	// readyTimeout bounds the wait for the first PING, which includes
	// loading the append-only file.
	readyTimeout = 60 * time.Second
	// orphanTimeout bounds the wait for a left-over redis-server to exit
	// after SIGTERM before it is killed.
	orphanTimeout = 10 * time.Second
	// killWait bounds the wait for a process to go after SIGKILL.
	killWait = 5 * time.Second
)

// AppendFsync is the managed store's fsync policy: every write is on disk
// before it is acknowledged, so neither a killed engine, a killed
// redis-server nor a power loss loses an acknowledged write. It costs an
// fsync per event-loop turn (writes from concurrent clients share one);
// "everysec" was measured to lose acknowledged writes when redis-server
// itself is killed. Figures in README.md.
const AppendFsync = "always"

// ManagedOptions configures StartManaged.
type ManagedOptions struct {
	// DataDir holds the append-only file, the socket, the pid file and
	// the lock. It is created (0700) when missing.
	DataDir string
	// RedisServer is the redis-server binary; empty looks it up on PATH.
	RedisServer string
	Logger      *slog.Logger
}

// StartManaged starts a redis-server on opts.DataDir and waits until it
// answers. When redis-server cannot be found the error matches
// ErrNoRedisServer; when another engine holds the directory, ErrDataDirInUse.
func StartManaged(ctx context.Context, opts ManagedOptions) (_ *Managed, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.DataDir == "" {
		return nil, errors.New("store: managed store: no data directory")
	}
	bin, err := findRedisServer(opts.RedisServer)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("store: data dir %s: %w", opts.DataDir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create data dir: %w", err)
	}
	m := &Managed{dataDir: dir, socket: socketPath(dir), pidFile: filepath.Join(dir, pidName),
		log: log, exited: make(chan struct{}), output: make(chan struct{}), tail: &tailBuffer{max: 20}}
	if m.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.unlock()
		}
	}()
	if err := m.stopOrphan(ctx); err != nil {
		return nil, err
	}
	if err := m.start(bin); err != nil {
		return nil, err
	}
	if err := m.waitReady(ctx); err != nil {
		// A server that never answered is still stopped.
		m.kill()
		return nil, err
	}
	log.Info("redis store: managed redis-server ready", "data_dir", dir, "socket", m.socket,
		"pid", m.cmd.Process.Pid, "appendfsync", AppendFsync)
	m.watched = make(chan struct{})
	// Exits when the process exits: reports an exit that Stop did not ask for.
	go func() {
		defer close(m.watched)
		m.watch()
	}()
	return m, nil
}

// DataDir is the absolute data directory.
func (m *Managed) DataDir() string { return m.dataDir }

// Socket is the unix socket the server listens on.
func (m *Managed) Socket() string { return m.socket }

// Pid is the redis-server's process ID.
func (m *Managed) Pid() int { return m.cmd.Process.Pid }

// Exited is closed when the redis-server process has exited.
func (m *Managed) Exited() <-chan struct{} { return m.exited }

// Stop asks the server to shut down (SIGTERM: it writes out its
// append-only file and exits), waits for it until ctx ends, then kills it.
// It removes the pid file and releases the directory. It is safe to call
// more than once.
func (m *Managed) Stop(ctx context.Context) error {
	m.mu.Lock()
	first := !m.stopping
	m.stopping = true
	m.mu.Unlock()
	var err error
	select {
	case <-m.exited:
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-ctx.Done():
			err = fmt.Errorf("store: redis-server (pid %d) did not shut down in time; killed it: %w", m.Pid(), ctx.Err())
			m.kill()
		}
	}
	<-m.output
	<-m.watched
	if first {
		os.Remove(m.socket) // redis-server removes it on a clean shutdown
		m.unlock()
		m.mu.Lock()
		werr := m.waitErr
		m.mu.Unlock()
		if err == nil && werr != nil {
			err = fmt.Errorf("store: redis-server exited: %w", werr)
		}
		m.log.Info("redis store: managed redis-server stopped", "data_dir", m.dataDir)
	}
	return err
}

// kill sends SIGKILL and waits (bounded) for the process to be reaped.
func (m *Managed) kill() {
	m.cmd.Process.Kill()
	select {
	case <-m.exited:
	case <-time.After(killWait):
	}
	<-m.output
}

// unlock removes the pid file and the socket and releases the lock.
func (m *Managed) unlock() {
	os.Remove(m.pidFile)
	if m.lock != nil {
		m.lock.Close() // releases the flock
		m.lock = nil
	}
}

func (m *Managed) watch() {
	<-m.exited
	m.mu.Lock()
	stopping, werr := m.stopping, m.waitErr
	m.mu.Unlock()
	if !stopping {
		m.log.Error("redis store: managed redis-server exited while the engine runs; queue, state and stream calls will fail",
			"data_dir", m.dataDir, "err", werr, "output", m.tail.String())
	}
}

// ErrNoRedisServer is returned when the managed store is chosen and
// redis-server cannot be found.
var ErrNoRedisServer = errors.New("store: redis-server not found")

// ErrDataDirInUse is returned when another engine holds the data directory.
var ErrDataDirInUse = errors.New("store: data directory in use by another engine")

func findRedisServer(configured string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("%w at %s: %w", ErrNoRedisServer, configured, err)
		}
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("%w on PATH", ErrNoRedisServer)
	}
	return p, nil
}

// socketPath is the socket inside dir, or, when that path is too long for
// a unix socket, one in the temp dir named after dir.
func socketPath(dir string) string {
	p := filepath.Join(dir, socketName)
	if len(p) <= maxSocketPath {
		return p
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("iii-redis-%08x.sock", fnv32(dir)))
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// lockDir takes an exclusive lock on dir's lock file and writes this
// process's ID into it. The kernel drops the lock when the process dies,
// however it dies.
func lockDir(dir string) (*os.File, error) {
	p := filepath.Join(dir, lockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is used by pid %s; stop that engine or set a different redis.data_dir",
				ErrDataDirInUse, dir, strings.TrimSpace(string(owner)))
		}
		return nil, fmt.Errorf("store: lock %s: %w", p, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// stopOrphan stops a redis-server that an engine which died without
// stopping it left on this directory: one answering on the socket, or the
// live redis-server named by the pid file. Holding the lock means no
// engine owns it any more.
func (m *Managed) stopOrphan(ctx context.Context) error {
	pid := m.orphanPid(ctx)
	if pid > 0 {
		m.log.Warn("redis store: stopping a redis-server left running on the data dir by an engine that did not stop it",
			"pid", pid, "data_dir", m.dataDir)
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(ctx, pid, orphanTimeout) {
			syscall.Kill(pid, syscall.SIGKILL)
			if !waitGone(ctx, pid, killWait) {
				return fmt.Errorf("store: a redis-server (pid %d) still runs on %s and would not stop", pid, m.dataDir)
			}
		}
	}
	os.Remove(m.pidFile)
	if err := os.Remove(m.socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: remove stale socket: %w", err)
	}
	return nil
}

// orphanPid finds a left-over server: by asking the one on the socket for
// its pid, else by the pid file when that process is a redis-server.
func (m *Managed) orphanPid(ctx context.Context) int {
	if _, err := os.Stat(m.socket); err == nil {
		c := redis.NewClient(&redis.Options{Network: "unix", Addr: m.socket, MaxRetries: -1,
			DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
		info, err := c.Info(ctx, "server").Result()
		c.Close()
		if err == nil {
			if pid := infoPid(info); pid > 0 {
				return pid
			}
		}
	}
	b, err := os.ReadFile(m.pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !isRedisServer(pid) {
		return 0
	}
	return pid
}

func infoPid(info string) int {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	return 0
}

// waitGone polls until pid no longer exists, for at most d.
func waitGone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if !alive(pid) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// start launches redis-server. The process is started, and waited for, on
// one goroutine locked to its OS thread: Linux sends the parent-death
// signal when the thread that forked the child exits, so that thread must
// live exactly as long as the child.
func (m *Managed) start(bin string) error {
	args := []string{
		"--port", "0", // no TCP listener
		"--unixsocket", m.socket, "--unixsocketperm", "700",
		"--dir", m.dataDir,
		"--appendonly", "yes", "--appendfsync", AppendFsync,
		"--save", "", // no RDB snapshots: the append-only file is the data
		"--daemonize", "no", "--supervised", "no",
		"--logfile", "", "--loglevel", "notice",
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Dir = m.dataDir
	m.cmd.SysProcAttr = sysProcAttr()
	m.cmd.Env = os.Environ()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("store: start redis-server: %w", err)
	}
	m.cmd.Stdout, m.cmd.Stderr = w, w
	started := make(chan error, 1)
	// Exits when redis-server has exited and been reaped.
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine, after the
		// child is gone.
		if err := m.cmd.Start(); err != nil {
			started <- err
			close(m.exited)
			return
		}
		started <- nil
		err := m.cmd.Wait()
		m.mu.Lock()
		m.waitErr = err
		m.mu.Unlock()
		close(m.exited)
	}()
	err = <-started
	w.Close()
	if err != nil {
		r.Close()
		close(m.output)
		return fmt.Errorf("store: start %s: %w", bin, err)
	}
	// Exits at EOF, when redis-server has exited.
	go m.readOutput(r)
	if err := os.WriteFile(m.pidFile, []byte(strconv.Itoa(m.cmd.Process.Pid)+"\n"), 0o600); err != nil {
		m.kill()
		return fmt.Errorf("store: write pid file: %w", err)
	}
	return nil
}

// readOutput logs redis-server's output: warnings ('#' lines) at warn
// level, the rest at debug; it keeps the last lines for error messages.
func (m *Managed) readOutput(r io.ReadCloser) {
	defer close(m.output)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		m.tail.add(line)
		if strings.Contains(line, " # ") {
			m.log.Warn("redis-server: " + line)
		} else {
			m.log.Debug("redis-server: " + line)
		}
	}
	io.Copy(io.Discard, r)
}

// waitReady polls PING on the socket until it answers, the process exits,
// ctx ends or readyTimeout passes. While the server loads its data it
// answers LOADING, which counts as not yet.
func (m *Managed) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: m.socket, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer c.Close()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-m.exited:
			<-m.output
			return fmt.Errorf("store: redis-server exited at start (%v); its output:\n%s", m.exitErr(), m.tail.String())
		case <-ctx.Done():
			return fmt.Errorf("store: redis-server on %s did not answer PING (last: %v): %w", m.socket, err, ctx.Err())
		case <-tick.C:
		}
	}
}

func (m *Managed) exitErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.waitErr
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.max {
		t.lines = append(t.lines[:0], t.lines[1:]...)
	}
	t.lines = append(t.lines, line)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

package exec

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"strings"
	"sync"
	"time"
)

const (
	// maxLineBytes bounds one captured output line; the rest of a longer
	// line is dropped and the line is marked.
	maxLineBytes = 16 << 10
	// tailLines is how many recent output lines a process keeps for crash
	// reports.
	tailLines = 50
	// outputDrainTimeout is how long the output readers get after the
	// process group is gone before they are cut off (a process that left
	// the group may hold the pipes open).
	outputDrainTimeout = 2 * time.Second
	// groupPoll is how often a stopping process group is checked for
	// members that are still alive.
	groupPoll     = 20 * time.Millisecond
	truncatedMark = " …[truncated]"
)

// Output streams.
const (
	streamStdout  = "stdout"
	streamStderr  = "stderr"
	streamInstall = "install"
)

// procSpec says how to start one process.
type procSpec struct {
	dir     string
	command string // run with /bin/sh -c
	env     []string
	// merged sends stderr to the stdout pipe and labels every line with
	// stream (install commands); otherwise lines are labelled stdout and
	// stderr.
	merged bool
	stream string
	// line receives every output line; it is called from the reader
	// goroutines and must not block for long.
	line func(p *proc, stream, line string)
}

// proc is one started process, the leader of its own process group (its
// pgid is its pid), so signals reach everything it started.
type proc struct {
	cmd     *osexec.Cmd
	pid     int
	started time.Time
	tail    *tail

	// done is closed when the process has exited, its group has been
	// killed, it has been reaped and its output has been read.
	done     chan struct{}
	exitCode int   // valid after done; -1 when killed by a signal
	exitErr  error // valid after done; nil on exit status 0

	mu       sync.Mutex
	stopping bool          // we asked it to stop: its exit is no crash
	killed   chan struct{} // closed once SIGKILL went to the group
	reaping  bool          // the pid may be gone: never signal the group again
}

// errUnsupported is returned by startProc on platforms without process
// groups.
var errUnsupported = errors.New("exec: managing worker processes is not supported on this platform yet")

// startProc starts spec's command. spawn registers the goroutines that
// own the process (its waiter and output readers) with the caller's
// WaitGroup; they all end once the process group is gone.
func startProc(spec procSpec, spawn func(func())) (_ *proc, err error) {
	if !supported {
		return nil, errUnsupported
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	readers := []*os.File{outR}
	writers := []*os.File{outW}
	errW := outW
	if !spec.merged {
		errR, w, err := os.Pipe()
		if err != nil {
			outR.Close()
			outW.Close()
			return nil, fmt.Errorf("output pipe: %w", err)
		}
		readers, writers, errW = append(readers, errR), append(writers, w), w
	}
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}

	cmd := osexec.Command("/bin/sh", "-c", spec.command)
	cmd.Dir = spec.dir
	cmd.Env = spec.env
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		closeAll(readers)
		closeAll(writers)
		return nil, fmt.Errorf("start %q in %s: %w", spec.command, spec.dir, err)
	}
	closeAll(writers) // the child has its copies; EOF comes when the group is gone

	p := &proc{cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), tail: newTail(tailLines),
		done: make(chan struct{}), killed: make(chan struct{})}
	var readersWG sync.WaitGroup
	for i, r := range readers {
		stream := spec.stream
		if !spec.merged {
			stream = []string{streamStdout, streamStderr}[i]
		}
		readersWG.Add(1)
		// Exits at EOF (the group is gone) or when the waiter cuts the
		// pipe off after outputDrainTimeout.
		spawn(func() {
			defer readersWG.Done()
			readLines(r, maxLineBytes, func(line string) {
				p.tail.add(line)
				spec.line(p, stream, line)
			})
		})
	}
	// Exits once the process is reaped and the readers are done.
	spawn(func() {
		p.wait()
		drained := make(chan struct{})
		go func() { // exits when the readers end, which the deadline below bounds
			readersWG.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(outputDrainTimeout):
			for _, r := range readers {
				_ = r.SetReadDeadline(time.Now())
			}
			<-drained
		}
		closeAll(readers)
		close(p.done)
	})
	return p, nil
}

// wait waits for the leader to exit and settles its group: when the exit
// was asked for (stop), the rest of the group gets until the stopper's
// SIGKILL to finish; on a crash the rest is killed at once. Where the
// platform allows, the leader stays a zombie meanwhile, so its pid (the
// group id) cannot be reused while it is signalled.
func (p *proc) wait() {
	if holdsZombie {
		waitNoReap(p.pid)
	} else {
		p.reap()
	}
	p.mu.Lock()
	stopping := p.stopping
	p.mu.Unlock()
	if stopping {
		tick := time.NewTicker(groupPoll)
	settle:
		for groupAlive(p.pid) {
			select {
			case <-p.killed:
				break settle
			case <-tick.C:
			}
		}
		tick.Stop()
	}
	p.signal(sigKill)
	if holdsZombie {
		p.reap()
	}
}

func (p *proc) reap() {
	p.mu.Lock()
	p.reaping = true
	p.mu.Unlock()
	err := p.cmd.Wait()
	p.exitErr, p.exitCode = err, 0
	var ee *osexec.ExitError
	switch {
	case errors.As(err, &ee):
		p.exitCode = ee.ExitCode() // -1 when signalled
	case err != nil:
		p.exitCode = -1
	}
}

// signal sends sig to the process group unless the leader has been reaped.
// (A kill(2) does not block; it is made under p.mu so that it cannot race
// with the reap.)
func (p *proc) signal(sig sysSignal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaping {
		signalGroup(p.pid, sig)
	}
}

// exited reports whether done is closed.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// markStopping records that an exit from now on is requested, not a crash.
func (p *proc) markStopping() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
}

func (p *proc) wasStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

// kill sends SIGKILL to the group (once) and lets the waiter stop waiting
// for the group's members.
func (p *proc) kill() {
	p.signal(sigKill)
	p.mu.Lock()
	select {
	case <-p.killed:
	default:
		close(p.killed)
	}
	p.mu.Unlock()
}

// terminate stops the process group: SIGTERM, then SIGKILL once grace has
// passed (or abort is closed), and waits until the process is reaped.
func (p *proc) terminate(grace time.Duration, abort <-chan struct{}) {
	if p.exited() {
		return
	}
	p.markStopping()
	p.signal(sigTerm)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	case <-abort:
	}
	p.kill()
	<-p.done
}

// describeExit is a short human text for how the process ended.
func (p *proc) describeExit() string {
	switch {
	case p.exitErr == nil:
		return "exited with code 0"
	case p.exitCode >= 0:
		return fmt.Sprintf("exited with code %d", p.exitCode)
	}
	var ee *osexec.ExitError
	if errors.As(p.exitErr, &ee) {
		return strings.TrimPrefix(ee.Error(), "exit status ")
	}
	return p.exitErr.Error()
}

// readLines calls emit for every line of r (without the line ending),
// cutting lines longer than limit bytes, until r fails or ends.
func readLines(r io.Reader, limit int, emit func(string)) {
	br := bufio.NewReaderSize(r, 4096)
	var (
		buf  []byte
		over bool
	)
	for {
		chunk, err := br.ReadSlice('\n')
		body := chunk
		if err == nil {
			body = chunk[:len(chunk)-1]
		}
		if room := max(limit-len(buf), 0); len(body) > room {
			buf, over = append(buf, body[:room]...), true
		} else {
			buf = append(buf, body...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == nil || len(buf) > 0 || over {
			line := strings.TrimSuffix(string(buf), "\r")
			if over {
				line += truncatedMark
			}
			emit(line)
		}
		if err != nil {
			return
		}
		buf, over = buf[:0], false
	}
}

// tail keeps the last n lines.
type tail struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newTail(n int) *tail { return &tail{lines: make([]string, n)} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines[t.next] = line
	t.next = (t.next + 1) % len(t.lines)
	if t.next == 0 {
		t.full = true
	}
}

// snapshot returns the kept lines, oldest first.
func (t *tail) snapshot() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return append([]string(nil), t.lines[:t.next]...)
	}
	return append(append([]string(nil), t.lines[t.next:]...), t.lines[:t.next]...)
}

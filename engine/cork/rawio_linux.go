//go:build linux

package cork

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawFD reads and writes a non-blocking socket with raw syscalls, waiting
// for readiness through the runtime's poller as net.Conn does.
//
// Why: a Go syscall (syscall.Read, what net.Conn uses) tells the scheduler
// it is entering the kernel, and when the process was idle that wakes the
// runtime's monitor thread (sysmon) out of its deep sleep and back to a
// 20 µs polling cycle. An engine that goes idle and wakes thousands of
// times a second pays a futex wake and a stream of monitor wakeups per
// wake, and each of them can preempt a worker on the same cores (see
// BENCHMARKS.md, "Raw socket syscalls"). A read or write on a non-blocking
// socket never blocks, so there is nothing for the scheduler to hand off.
type rawFD struct {
	rc          syscall.RawConn
	local, peer net.Addr
}

func rawOf(c net.Conn) *rawFD {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	// A raw syscall on a blocking descriptor would hold its thread without
	// the scheduler knowing; sockets from net are non-blocking, and
	// anything else keeps the ordinary path.
	nonblocking := false
	if rc.Control(func(fd uintptr) {
		fl, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		nonblocking = e == 0 && fl&syscall.O_NONBLOCK != 0
	}) != nil || !nonblocking {
		return nil
	}
	return &rawFD{rc: rc, local: c.LocalAddr(), peer: c.RemoteAddr()}
}

// read is net.Conn's Read: io.EOF when the far end has closed, errors
// wrapped in *net.OpError, deadlines honoured by the poller.
func (r *rawFD) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case 0:
				n = int(m)
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until readable
			default:
				errno = e
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, r.opError("read", err)
	case errno != 0:
		return 0, r.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// write writes all of p (waiting for room when the socket buffer is full),
// as net.Conn's Write does.
func (r *rawFD) write(p []byte) (int, error) {
	var (
		n     int
		errno syscall.Errno
		stuck bool // the kernel took nothing and reported nothing
	)
	err := r.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
			switch e {
			case 0:
				if m == 0 {
					stuck = true
					return true
				}
				n += int(m)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until writable
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return n, r.opError("write", err)
	case errno != 0:
		return n, r.opError("write", os.NewSyscallError("write", errno))
	case stuck:
		return n, r.opError("write", io.ErrUnexpectedEOF)
	}
	return n, nil
}

func (r *rawFD) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: r.local.Network(), Source: r.local, Addr: r.peer, Err: err}
}

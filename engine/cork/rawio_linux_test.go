//go:build linux

package cork

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rawPair is a loopback TCP connection: a NewConn over the dialled end
// (which must take the raw path), and the accepted end.
func rawPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	_, cw, far := pair(t)
	c := NewConn(cw.Conn)
	// Every read of these tests takes the raw path: no ordinary read is
	// due until the test ends.
	saved := lastOrdinary.Swap(time.Now().Add(time.Hour).UnixNano())
	t.Cleanup(func() { lastOrdinary.Store(saved) })
	if c.raw == nil {
		t.Fatal("NewConn over a TCP socket did not take the raw path")
	}
	return c, far
}

func TestNewConnWithoutASocketUsesNetConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := NewConn(a)
	if c.raw != nil {
		t.Fatal("NewConn over net.Pipe took the raw path")
	}
	go func() { _, _ = b.Write([]byte("hi")) }()
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hi" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// A write far larger than the socket buffers waits for room (the EAGAIN
// path) and arrives whole and in order, both ways at once.
func TestRawReadWriteLargeBothWays(t *testing.T) {
	c, far := rawPair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	var farGot []byte
	var farErr error
	go func() { // far end: read it all slowly, then echo it back
		defer wg.Done()
		farGot = make([]byte, len(want))
		for n := 0; n < len(want); {
			time.Sleep(time.Millisecond)
			m, err := far.Read(farGot[n:min(n+64<<10, len(want))])
			if err != nil {
				farErr = err
				return
			}
			n += m
		}
		_, farErr = far.Write(farGot)
	}()
	var writeErr error
	go func() {
		defer wg.Done()
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		writeErr = err
	}()
	back := make([]byte, len(want))
	_, readErr := io.ReadFull(c, back)
	wg.Wait()
	if writeErr != nil || farErr != nil || readErr != nil {
		t.Fatalf("write %v, far end %v, read back %v", writeErr, farErr, readErr)
	}
	if !bytes.Equal(farGot, want) || !bytes.Equal(back, want) {
		t.Fatal("bytes changed on the way")
	}
}

// Corked frames leave through the raw path too.
func TestRawCorkedWrite(t *testing.T) {
	c, far := rawPair(t)
	c.Cork()
	for _, s := range []string{"a,", "b,", "c"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("a,b,c"))
	if _, err := io.ReadFull(far, got); err != nil || string(got) != "a,b,c" {
		t.Fatalf("far end read %q, %v", got, err)
	}
}

// A read blocked on an empty socket wakes when data arrives, and reports
// io.EOF (bare, as net.Conn does) once the far end has closed.
func TestRawReadWaitsThenEOF(t *testing.T) {
	c, far := rawPair(t)
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = far.Write([]byte("late"))
		far.Close()
	}()
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
		t.Fatalf("read %q, %v", got, err)
	}
	if n, err := c.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("read after the far end closed: %d, %v, want 0, io.EOF", n, err)
	}
}

func TestRawReadDeadline(t *testing.T) {
	c, _ := rawPair(t)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past its deadline: %v, want a timeout net.Error", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" || op.Addr == nil {
		t.Fatalf("error %#v is not a *net.OpError naming the read and the peer", err)
	}
}

// Closing the socket ends a blocked read with net.ErrClosed; writes after
// it fail the same way.
func TestRawClosedSocket(t *testing.T) {
	c, _ := rawPair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close did not end a blocked read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// A peer that reset the connection fails the write with the kernel's
// error, wrapped as net.Conn wraps it.
func TestRawWriteToResetPeer(t *testing.T) {
	c, far := rawPair(t)
	far.(*net.TCPConn).SetLinger(0) // close sends RST
	far.Close()
	var err error
	for range 100 { // the first writes may land before the RST does
		if _, err = c.Write(make([]byte, 1<<10)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write to a reset peer: %v, want EPIPE or ECONNRESET", err)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "write" {
		t.Fatalf("error %#v does not name the write syscall", err)
	}
}

// A socket in blocking mode keeps the ordinary path: a raw syscall on it
// would hold its thread without the scheduler knowing.
func TestBlockingSocketKeepsNetConn(t *testing.T) {
	_, cw, _ := pair(t)
	rc, err := cw.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var setErr error
	if err := rc.Control(func(fd uintptr) { setErr = syscall.SetNonblock(int(fd), false) }); err != nil || setErr != nil {
		t.Fatal(err, setErr)
	}
	if NewConn(cw.Conn).raw != nil {
		t.Fatal("NewConn took the raw path on a blocking socket")
	}
}

// One read in monitorEvery, across all Conns, takes the ordinary path.
func TestMonitorDueOncePerInterval(t *testing.T) {
	saved := lastOrdinary.Load()
	t.Cleanup(func() { lastOrdinary.Store(saved) })
	lastOrdinary.Store(time.Now().Add(-2 * monitorEvery).UnixNano())
	if !monitorDue() {
		t.Fatal("no ordinary read due after twice the interval")
	}
	if monitorDue() {
		t.Fatal("a second ordinary read due at once")
	}
	// Both paths read the same stream.
	c, far := rawPair(t)
	lastOrdinary.Store(0)
	if _, err := far.Write([]byte("abcd")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got[:2]); err != nil { // ordinary
		t.Fatal(err)
	}
	if lastOrdinary.Load() == 0 {
		t.Fatal("the first read did not take the ordinary path")
	}
	if _, err := io.ReadFull(c, got[2:]); err != nil || string(got) != "abcd" { // raw
		t.Fatalf("read %q, %v", got, err)
	}
}

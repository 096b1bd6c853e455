package cork

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// counted counts the writes that reach the socket.
type counted struct {
	net.Conn
	writes atomic.Int64
}

func (c *counted) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// pair is a loopback TCP connection: a Conn over the dialled end, and the
// accepted end.
func pair(t *testing.T) (*Conn, *counted, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	far, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	cw := &counted{Conn: d}
	t.Cleanup(func() { d.Close(); far.Close() })
	return &Conn{Conn: cw}, cw, far
}

func TestCorkedWritesLeaveInOneSyscall(t *testing.T) {
	c, cw, far := pair(t)
	if _, err := c.Write([]byte("plain,")); err != nil {
		t.Fatal(err)
	}
	if n := cw.writes.Load(); n != 1 {
		t.Fatalf("an uncorked write made %d socket writes, want 1", n)
	}
	c.Cork()
	for _, s := range []string{"a,", "b,", "c"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if n := cw.writes.Load(); n != 1 {
		t.Fatalf("corked writes reached the socket (%d writes)", n)
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if n := cw.writes.Load(); n != 2 {
		t.Fatalf("uncork made %d socket writes, want one more", n-1)
	}
	got := make([]byte, len("plain,a,b,c"))
	if _, err := io.ReadFull(far, got); err != nil || string(got) != "plain,a,b,c" {
		t.Fatalf("far end read %q, %v", got, err)
	}
}

func TestCorkFlushesAtTheMark(t *testing.T) {
	c, cw, far := pair(t)
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	done := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(far, int64(5*len(chunk))))
		done <- b
	}()
	c.Cork()
	for range 5 {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if n := cw.writes.Load(); n != 1 {
		t.Fatalf("80 KiB corked made %d socket writes before uncork, want 1 (at the 64 KiB mark)", n)
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if b := <-done; len(b) != 5*len(chunk) {
		t.Fatalf("far end got %d bytes, want %d", len(b), 5*len(chunk))
	}
}

func TestCorkReportsAFailedFlush(t *testing.T) {
	c, _, far := pair(t)
	far.Close()
	c.Conn.(*counted).Conn.Close()
	c.Cork()
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatalf("a corked write failed before the flush: %v", err)
	}
	if err := c.Uncork(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("uncork on a closed socket: %v, want net.ErrClosed", err)
	}
}

// Uncork after a failed Uncork (a writer cleaning up after the error), or
// on a Conn never corked, does nothing.
func TestUncorkTwice(t *testing.T) {
	c, _, far := pair(t)
	if err := c.Uncork(); err != nil {
		t.Fatalf("uncork of a Conn never corked: %v", err)
	}
	far.Close()
	c.Conn.(*counted).Conn.Close()
	c.Cork()
	_, _ = c.Write([]byte("lost"))
	if err := c.Uncork(); err == nil {
		t.Fatal("uncork on a closed socket succeeded")
	}
	if err := c.Uncork(); err != nil {
		t.Fatalf("second uncork: %v, want nothing", err)
	}
}

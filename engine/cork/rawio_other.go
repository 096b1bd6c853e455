//go:build !linux

package cork

import "net"

// rawFD is the raw-syscall path of Linux (rawio_linux.go); elsewhere a Conn
// reads and writes through net.Conn.
type rawFD struct{}

func rawOf(net.Conn) *rawFD { return nil }

func (*rawFD) read([]byte) (int, error)  { panic("cork: no raw I/O on this platform") }
func (*rawFD) write([]byte) (int, error) { panic("cork: no raw I/O on this platform") }

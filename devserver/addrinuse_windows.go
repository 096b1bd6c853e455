package devserver

import (
	"errors"
	"syscall"
)

// wsaeaddrinuse is WSAEADDRINUSE, what Windows reports for a taken port.
const wsaeaddrinuse = syscall.Errno(10048)

func isAddrInUse(err error) bool {
	return errors.Is(err, wsaeaddrinuse) || errors.Is(err, syscall.EADDRINUSE)
}

package wal

import (
	"net"
	"syscall"
)

// socketLowat returns a function that sets the receive low-water mark
// (SO_RCVLOWAT) of conn's socket, or nil when conn has no socket to set it
// on. Under TLS it is set on the TCP connection beneath.
func socketLowat(conn net.Conn) func(n int) error {
	if t, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = t.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(n int) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
		}); err != nil {
			return err
		}
		return serr
	}
}

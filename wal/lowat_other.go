//go:build !linux

package wal

import "net"

// socketLowat is Linux-only: elsewhere the stream is read without batching.
func socketLowat(net.Conn) func(n int) error { return nil }

//go:build !linux

package daemon

import "net"

// unixPeer returns "": the peer's process ID is not known here.
func unixPeer(net.Conn) string { return "" }

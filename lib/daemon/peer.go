package daemon

import (
	"fmt"
	"net"
)

// A Peer is the process at the other end of a connection, as far as the
// system tells: on Linux, the user of a Unix-socket peer comes from
// SO_PEERCRED and that of a loopback TCP peer from the kernel's socket
// table (the owner of the socket with the connection's addresses swapped).
type Peer struct {
	Network string // "unix" or "tcp"
	Addr    string // the peer's address, for logs ("" on a Unix socket)
	UID     int    // the peer's user ID, or -1 if unknown (see Err)
	PID     int    // the peer's process ID, or 0 if unknown (Unix sockets only)
	Err     error  // why UID is unknown
}

// String names the peer for logs: "pid 4242 uid 1000" or
// "127.0.0.1:41234 uid 1000".
func (p Peer) String() string {
	s := p.Addr
	if p.PID > 0 {
		s = fmt.Sprintf("pid %d", p.PID)
	}
	if s == "" {
		s = p.Network
	}
	if p.UID >= 0 {
		s += fmt.Sprintf(" uid %d", p.UID)
	}
	return s
}

// PeerOf returns what the system tells of the process at the other end of
// conn.
func PeerOf(conn net.Conn) Peer {
	p := Peer{UID: -1}
	if a := conn.RemoteAddr(); a != nil && a.String() != "@" {
		p.Addr = a.String()
	}
	switch c := conn.(type) {
	case *net.UnixConn:
		p.Network = "unix"
		p.Addr = ""
		p.UID, p.PID, p.Err = unixPeerCred(c)
	case *net.TCPConn:
		p.Network = "tcp"
		p.UID, p.Err = tcpPeerUID(c)
	default:
		if a := conn.LocalAddr(); a != nil {
			p.Network = a.Network()
		}
		p.Err = fmt.Errorf("cannot tell who is at the other end of a %T", conn)
	}
	if p.Err != nil {
		p.UID = -1
	}
	return p
}

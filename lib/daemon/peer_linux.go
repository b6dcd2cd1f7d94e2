package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
)

// unixPeerCred returns the user and process IDs of the peer of a Unix
// socket, as the kernel recorded them when it connected (SO_PEERCRED).
func unixPeerCred(uc *net.UnixConn) (uid, pid int, err error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	cerr := raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err == nil {
		err = cerr
	}
	if err != nil || cred == nil {
		return -1, 0, fmt.Errorf("peer credentials (SO_PEERCRED): %w", err)
	}
	return int(cred.Uid), int(cred.Pid), nil
}

// Where the kernel lists the TCP sockets of this network namespace.
var procNetTCP = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// tcpPeerUID returns the owner of the socket at the other end of a
// loopback TCP connection: the socket in the kernel's table whose local
// address is this connection's remote one and whose remote address is
// this connection's local one. The peer must still hold its socket.
func tcpPeerUID(tc *net.TCPConn) (int, error) {
	la, lok := tc.LocalAddr().(*net.TCPAddr)
	ra, rok := tc.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return -1, errors.New("connection has no TCP addresses")
	}
	local, remote := la.AddrPort(), ra.AddrPort()
	if !remote.Addr().Unmap().IsLoopback() {
		return -1, fmt.Errorf("peer %s is not on this host", remote)
	}
	for _, path := range procNetTCP {
		uid, found, err := socketOwnerIn(path, remote, local)
		if err != nil {
			return -1, err
		}
		if found {
			return uid, nil
		}
	}
	return -1, fmt.Errorf("no live socket %s -> %s in %s (the client hung up?)", remote, local, procNetTCP[0])
}

func socketOwnerIn(path string, local, remote netip.AddrPort) (int, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil // no IPv6, say
	} else if err != nil {
		return -1, false, fmt.Errorf("find the peer's user: %w", err)
	}
	defer f.Close()
	uid, found, err := findSocketOwner(f, binary.NativeEndian, local, remote)
	if err != nil {
		return -1, false, fmt.Errorf("find the peer's user: %s: %w", path, err)
	}
	return uid, found, nil
}

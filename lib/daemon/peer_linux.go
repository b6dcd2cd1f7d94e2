package daemon

import (
	"net"
	"strconv"
	"syscall"
)

// unixPeer names the process at the other end of a Unix socket by its
// process ID, or returns "" if it cannot.
func unixPeer(conn net.Conn) string {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return ""
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *syscall.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return ""
	}
	return "pid " + strconv.Itoa(int(cred.Pid))
}

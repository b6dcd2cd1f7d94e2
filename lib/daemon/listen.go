package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// An Addr is where a daemon listens: a TCP port on the loopback address
// 127.0.0.1 (Network "tcp"), or a Unix socket (Network "unix").
type Addr struct {
	Network string // "tcp" or "unix"
	Address string // "127.0.0.1:<port>" or the socket's path
}

func (a Addr) String() string { return a.Address }

// maxSocketPath is the longest Unix socket path accepted; the kernel's
// limit is a little over 100 bytes (104 or 108 with the final NUL).
const maxSocketPath = 103

// ParseAddr parses a daemon address as the --plugin flag and the connect
// command take it: a port number means TCP on 127.0.0.1 only; anything
// else is the path of a Unix socket.
func ParseAddr(s string) (Addr, error) {
	if s == "" {
		return Addr{}, errors.New("no address: want a port number or a Unix socket path")
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 65535 {
			return Addr{}, fmt.Errorf("port %d out of range", n)
		}
		return Addr{Network: "tcp", Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(n))}, nil
	}
	if host, port, err := net.SplitHostPort(s); err == nil && !strings.Contains(s, "/") {
		if _, err := strconv.Atoi(port); err == nil {
			return Addr{}, fmt.Errorf("%q: want a port number (served on 127.0.0.1 only) or a Unix socket path, not a host (%q)", s, host)
		}
	}
	if len(s) > maxSocketPath {
		return Addr{}, fmt.Errorf("socket path %q is %d bytes, longer than the %d the kernel allows", s, len(s), maxSocketPath)
	}
	return Addr{Network: "unix", Address: s}, nil
}

// Listen listens on a. A Unix socket is created with mode 0600, so that
// only its owner may use the daemon. If a socket file is already there, it
// is replaced if nobody is listening on it (a daemon died without removing
// it), and Listen fails if a live daemon is.
func Listen(a Addr) (net.Listener, error) { return ListenWith(a, ListenOptions{}) }

// ListenOptions say how [ListenWith] makes a Unix socket.
type ListenOptions struct {
	// Perm is the socket file's mode; if zero, 0600. A daemon that serves
	// other users than its own (see [Policy]) needs a mode that lets them
	// connect: 0660 with Group for a group, 0666 for users (the daemon
	// still checks each one; see [Server.Admit]).
	Perm fs.FileMode
	// Group, if not zero, is the socket file's group.
	Group int
}

// ListenWith is [Listen] with options for a Unix socket. The socket is
// made with mode 0600 and only then given its group and mode.
func ListenWith(a Addr, o ListenOptions) (net.Listener, error) {
	if a.Network != "unix" {
		l, err := net.Listen(a.Network, a.Address)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", a.Address, err)
		}
		return l, nil
	}
	path := a.Address
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen on %s: the file exists and is not a socket", path)
		}
		conn, err := net.DialTimeout("unix", path, 2*time.Second)
		if err == nil {
			conn.Close()
			return nil, fmt.Errorf("listen on %s: another daemon is listening on that socket", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("listen on %s: a socket file is there and cannot be checked: %w", path, err)
		}
		// Stale: left by a daemon that is gone.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("listen on %s: remove stale socket: %w", path, err)
		}
	}
	restore := umask(0o177)
	l, err := net.Listen("unix", path)
	restore()
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	perm := o.Perm
	if perm == 0 {
		perm = 0o600
	}
	if o.Group != 0 {
		if err := os.Lchown(path, -1, o.Group); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen on %s: set the socket's group: %w", path, err)
		}
	}
	if err := os.Chmod(path, perm); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return l, nil
}

// ErrNoDaemon marks a [Dial] that found no daemon at the address.
var ErrNoDaemon = errors.New("no go-cache-plugin daemon")

// Dial connects to the daemon at a. If nothing is listening there, the
// error wraps ErrNoDaemon and says so plainly.
func Dial(ctx context.Context, a Addr) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, a.Network, a.Address)
	if err == nil {
		return conn, nil
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED) && a.Network == "unix":
		return nil, fmt.Errorf("%w listening on socket %s (the file is stale)", ErrNoDaemon, a.Address)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w listening on %s", ErrNoDaemon, a.Address)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: socket %s does not exist", ErrNoDaemon, a.Address)
	}
	return nil, fmt.Errorf("connect to the go-cache-plugin daemon at %s: %w", a.Address, err)
}

//go:build !unix

package daemon

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// CanHandOver reports false: handing files over needs Unix sockets with
// SCM_RIGHTS.
func CanHandOver(in, out *os.File) bool { return false }

// HandOver is not supported here.
func HandOver(conn *net.UnixConn, in, out *os.File, opts SessionOptions) error {
	return errors.New("handing the session over is not supported on this system")
}

// handshake starts a stream session: there is no hand-over here.
func (ss *session) handshake(uc *net.UnixConn, timeout time.Duration) (io.Reader, writeDeadliner, string, SessionOptions, error) {
	in, out, opts, err := ss.streamHandshake(uc, timeout)
	return in, out, "stream", opts, err
}

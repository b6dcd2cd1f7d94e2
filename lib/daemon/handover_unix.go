//go:build unix

package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"
)

// CanHandOver reports whether in and out can be handed over to a daemon
// with [HandOver]: both must be pipes (as the go command gives its
// GOCACHEPROG program), not a terminal or file shared with others, since
// the daemon makes them non-blocking.
func CanHandOver(in, out *os.File) bool {
	for _, f := range []*os.File{in, out} {
		fi, err := f.Stat()
		if err != nil || fi.Mode().Type() != fs.ModeNamedPipe {
			return false
		}
	}
	return true
}

// HandOver passes in and out to the daemon at the other end of conn, which
// serves the session on them directly, as opts asks: the go command's
// pipes then lead to the daemon with no process copying in between. The
// caller should close its own in and out, then read conn to its end, which
// comes when the daemon has finished the session.
func HandOver(conn *net.UnixConn, in, out *os.File, opts SessionOptions) error {
	line, err := EncodeOptions(opts)
	if err != nil {
		return err
	}
	rights := syscall.UnixRights(int(in.Fd()), int(out.Fd()))
	if _, _, err := conn.WriteMsgUnix(append([]byte(handOverMarker), line...), rights, nil); err != nil {
		return fmt.Errorf("hand the session over to the daemon: %w", err)
	}
	return nil
}

// handshake starts a session on a Unix socket: it writes the capabilities,
// then reads the client's first message. A hand-over gives the session the
// client's files (and options, if it sends any); anything else is the
// start of a stream of requests, which may begin with the client's
// options.
func (ss *session) handshake(uc *net.UnixConn, timeout time.Duration) (io.Reader, writeDeadliner, string, SessionOptions, error) {
	var opts SessionOptions
	uc.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := uc.Write(capsLine); err != nil {
		return nil, nil, "", opts, fmt.Errorf("write capabilities: %w", err)
	}
	uc.SetWriteDeadline(time.Time{})

	buf := make([]byte, 4<<10)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	n, oobn = max(n, 0), max(oobn, 0)
	files := receivedFiles(oob[:oobn], ss.id)
	if rest, ok := bytes.CutPrefix(buf[:n], []byte(handOverMarker)); ok {
		if len(files) != 2 {
			closeAll(files)
			return nil, nil, "", opts, fmt.Errorf("malformed hand-over (%d bytes, %d files)", n, len(files))
		}
		if len(rest) > 0 {
			if opts, err = parseOptions(rest); err != nil {
				closeAll(files)
				return nil, nil, "", opts, fmt.Errorf("hand-over: %w", err)
			}
		}
		if !ss.adopt(files[0], files[1]) {
			return nil, nil, "", opts, errors.New("dropped during hand-over")
		}
		return files[0], files[1], "the client's own stdin and stdout (handed over)", opts, nil
	}
	closeAll(files)
	if len(files) > 0 || n > 0 && buf[0] == 0 && !bytes.HasPrefix([]byte(optionsPrefix), buf[:min(n, len(optionsPrefix))]) {
		return nil, nil, "", opts, fmt.Errorf("malformed hand-over (%d bytes, %d files)", n, len(files))
	}
	if n == 0 && err != nil {
		// Gone (or dropped) before a word: Serve will find the same.
		return uc, &skipLine{writeDeadliner: uc}, "stream", opts, nil
	}
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(buf[:n]), uc), maxOptionsLine)
	opts, err = readStreamOptions(br)
	return br, &skipLine{writeDeadliner: uc}, "stream", opts, err
}

// receivedFiles returns the files passed in a control message, made
// non-blocking so that reads and writes on them have deadlines and can be
// interrupted.
func receivedFiles(oob []byte, id int64) []*os.File {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			if err := syscall.SetNonblock(fd, true); err != nil {
				syscall.Close(fd)
				continue
			}
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("session %d fd %d", id, len(files))))
		}
	}
	return files
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

//go:build unix

package store

import (
	"fmt"
	"io/fs"
	"syscall"
)

// readSmall returns the contents of the file at path, which must be at
// most max bytes. It is on the path of every build-cache lookup, so it
// makes plain system calls: os.Open would also register the file with the
// runtime's poller, which costs more than the read.
func readSmall(path string, max int64) ([]byte, error) {
	fd, err := open(path)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	buf := make([]byte, max+1)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		} else if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	if int64(n) > max {
		return nil, fmt.Errorf("%s: %w (more than %d bytes)", path, errTooLong, max)
	}
	return buf[:n], nil
}

func open(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

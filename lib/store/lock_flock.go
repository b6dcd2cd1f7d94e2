//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// haveLocks reports whether lock files work on this platform.
const haveLocks = true

// Lock modes for flock.
const (
	lockShared    = unix.LOCK_SH
	lockExclusive = unix.LOCK_EX
	lockUnlock    = unix.LOCK_UN
)

// tryLock applies lock mode how to f without waiting. It reports false,
// with no error, if another open file holds a conflicting lock.
func tryLock(f *os.File, how int) (bool, error) {
	flags := how
	if how != lockUnlock {
		flags |= unix.LOCK_NB
	}
	for {
		err := unix.Flock(int(f.Fd()), flags)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		}
		return false, &os.PathError{Op: "flock", Path: f.Name(), Err: err}
	}
}

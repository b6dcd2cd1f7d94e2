package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// touch sets the modification (and access) time of the file at path to
// now. Both times are UTIME_NOW, which needs only write permission, not
// ownership, so a directory shared by a group works.
func touch(path string) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	for {
		err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "utimensat", Path: path, Err: err}
		}
		return nil
	}
}

//go:build !linux

package store

import (
	"os"
	"time"
)

// touch sets the modification time of the file at path to now. (Explicit
// times need the file's ownership: in a directory shared by several users,
// the use of another user's file may go unrecorded.)
func touch(path string) error {
	now := time.Now()
	return os.Chtimes(path, now, now)
}

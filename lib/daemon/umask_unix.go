//go:build unix

package daemon

import "syscall"

// umask sets the process's file mode creation mask and returns a function
// that restores it.
func umask(mask int) (restore func()) {
	old := syscall.Umask(mask)
	return func() { syscall.Umask(old) }
}

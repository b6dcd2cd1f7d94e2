//go:build unix

package daemon

import "syscall"

// umask sets the process's file mode creation mask and returns a function
// that restores it.
func umask(mask int) (restore func()) {
	old := syscall.Umask(mask)
	return func() { syscall.Umask(old) }
}

// CurrentUmask returns the process's file mode creation mask. (It sets
// the mask and restores it: call it before other goroutines create files.)
func CurrentUmask() int {
	old := syscall.Umask(0o022)
	syscall.Umask(old)
	return old
}

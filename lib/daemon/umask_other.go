//go:build !unix

package daemon

// umask does nothing where there is no file mode creation mask; Listen
// still sets the socket's mode once it exists.
func umask(int) (restore func()) { return func() {} }

//go:build !unix

package daemon

// umask does nothing where there is no file mode creation mask; Listen
// still sets the socket's mode once it exists.
func umask(int) (restore func()) { return func() {} }

// CurrentUmask returns 0o022: there is no mask here.
func CurrentUmask() int { return 0o022 }

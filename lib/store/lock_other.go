//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import "os"

// haveLocks reports whether lock files work on this platform. Without
// them, trims never run exclusively: they leave alone whatever may be in
// use (see the package documentation), and two trimmers may overlap.
const haveLocks = false

const (
	lockShared    = 1
	lockExclusive = 2
	lockUnlock    = 8
)

// tryLock pretends to lock. (The trimmer checks haveLocks before it takes
// the directory to be its own.)
func tryLock(*os.File, int) (bool, error) { return true, nil }

//go:build unix

package daemon

import (
	"io/fs"
	"syscall"
)

// fileOwner returns the owner and group of a file.
func fileOwner(fi fs.FileInfo) (owner, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, false
	}
	return owner{uid: int(st.Uid), gid: int(st.Gid)}, true
}

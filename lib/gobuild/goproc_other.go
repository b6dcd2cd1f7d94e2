//go:build !linux

package gobuild

import "errors"

// ParentCommand returns the command line of the process that started
// this one; on this system it cannot, and builds' manifests are named
// without their job kind.
func ParentCommand() ([]string, error) {
	return nil, errors.New("the parent process's command line is read on Linux only")
}

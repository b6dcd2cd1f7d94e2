package gobuild

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// ParentCommand returns the command line of the process that started
// this one: for a GOCACHEPROG program, the go command's (see
// [ParseGoCommand]). On Linux it reads /proc/<ppid>/cmdline. (The go
// command's settings need no such read: it passes them all, computed or
// set, from GOFLAGS to CGO_ENABLED, in the environment of the programs it
// starts.)
func ParentCommand() ([]string, error) {
	ppid := os.Getppid()
	if ppid <= 1 {
		return nil, errors.New("no parent process")
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("command line of the parent process: %w", err)
	}
	data = bytes.TrimSuffix(data, []byte{0})
	if len(data) == 0 {
		return nil, fmt.Errorf("parent process %d: empty command line", ppid)
	}
	var args []string
	for a := range bytes.SplitSeq(data, []byte{0}) {
		args = append(args, string(a))
	}
	return args, nil
}

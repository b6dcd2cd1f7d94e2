package s3test

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the server exit when the test process does, even if
// the test binary is killed before it can clean up (a test timeout, say).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

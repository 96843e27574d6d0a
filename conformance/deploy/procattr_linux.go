package deploy

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the server get SIGKILL when the test process dies,
// so that a test that panics (and never reaches Stop) leaves no server
// running.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

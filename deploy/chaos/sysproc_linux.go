package chaos

import "syscall"

// childAttr kills a child process if the test binary dies first, so no
// broker outlives the suite.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

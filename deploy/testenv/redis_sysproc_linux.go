package testenv

import "syscall"

// redisSysProcAttr kills a child if the test binary dies before its cleanup ran,
// so no server outlives the test.
func redisSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

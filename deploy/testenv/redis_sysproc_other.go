//go:build !linux

package testenv

import "syscall"

// redisSysProcAttr: no parent-death signal outside Linux; t.Cleanup stops the
// servers.
func redisSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

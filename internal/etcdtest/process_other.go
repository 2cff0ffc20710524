//go:build !linux

package etcdtest

import "syscall"

// sysProcAttr returns nil: outside Linux, a member outlives a test process
// that dies without running its cleanups.
func sysProcAttr() *syscall.SysProcAttr { return nil }

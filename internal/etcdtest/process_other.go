//go:build !linux

package etcdtest

import (
	"errors"
	"syscall"
)

// sysProcAttr returns nil: outside Linux, a member outlives a test process
// that dies without running its cleanups.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// errNoPause is why Pause fails outside Linux.
var errNoPause = errors.New("pausing a member needs Linux")

func (p *process) signalPause() error  { return errNoPause }
func (p *process) signalResume() error { return nil }

package etcdtest

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr asks the kernel to kill a member when the test process dies
// without running its cleanups, as it does on a -timeout panic or a kill,
// instead of leaving the member running with its ports taken. The signal
// is tied to the thread that started the child, and the Go runtime ends a
// thread only when a goroutine locked to it returns; the tests lock none.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// signalPause freezes the child: the kernel runs none of its threads, and
// still accepts connections and takes bytes into its sockets' buffers, so
// that to its clients and peers it looks connected and silent. It returns
// once every thread has stopped: the signal only asks for it, and a thread
// on another core may serve a request meanwhile.
func (p *process) signalPause() error {
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	// WNOWAIT leaves the stop to be reported again, and Wait, which asks
	// only for the child's exit, never sees it.
	var info unix.Siginfo
	return unix.Waitid(unix.P_PID, p.cmd.Process.Pid, &info, unix.WSTOPPED|unix.WNOWAIT, nil)
}

// signalResume lets a frozen child run again; it does nothing to one that
// runs.
func (p *process) signalResume() error { return p.cmd.Process.Signal(syscall.SIGCONT) }

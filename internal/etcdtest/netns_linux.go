package etcdtest

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes an exclusive lock on the file at path, creating it, without
// waiting: ok is false if another open file holds it. The kernel releases
// the lock when release closes the file or the process dies, which is what
// tells a slot of a dead run from one in use.
func tryLock(path string) (release func(), ok bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return func() { f.Close() }, true, nil
}

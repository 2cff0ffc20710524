//go:build !linux

package etcdtest

import "errors"

// tryLock fails: StartIsolated needs Linux, and says so before it locks.
func tryLock(path string) (release func(), ok bool, err error) {
	return nil, false, errors.New("network namespaces need Linux")
}

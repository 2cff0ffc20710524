// Package leakcheck fails a test that leaves goroutines behind.
package leakcheck

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakGrace is how long VerifyNoLeaks lets goroutines wind down. goleak
// alone gives up after less than half a second, but the HTTP connections
// between members of a multi-member cluster can outlive the members by up
// to the 5 s read timeout etcd puts on peer connections: a peer request
// that has just been answered may leave its server-side connection blocked
// in a read until that deadline, and the requesting member's keep-alive
// connection open until the server side goes away. They always end.
const leakGrace = 10 * time.Second

// VerifyNoLeaks fails t if goroutines started during the test are still
// running once the test is over. It must be called at the very top of the
// test, before Start: cleanups run last-in first-out, so registering the
// check first makes it run after the members and clients are closed.
// The check cannot tell the goroutines of parallel tests from those of t,
// so it is not for tests that call t.Parallel.
func VerifyNoLeaks(t *testing.T) {
	t.Helper()
	// Goroutines that already ran when the test began are not its doing;
	// the check of whoever started them has to answer for them.
	opts := append(Options(), goleak.IgnoreCurrent())
	t.Cleanup(func() {
		deadline := time.Now().Add(leakGrace)
		for {
			err := goleak.Find(opts...)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Error(err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// Options returns the goleak options used by VerifyNoLeaks. They suit
// goleak.VerifyTestMain as well.
func Options() []goleak.Option {
	return nil
}

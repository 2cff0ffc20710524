// The lease deadline: until when a Register's lease is certainly alive, and
// why that deadline counts from when a keepalive was sent.

package biregister

import (
	"sync/atomic"
	"time"
)

// leaseClock tells until when a lease is certainly alive. etcd renews a lease
// when a keepalive arrives, which is after it was sent, so a lease
// acknowledged for a keepalive sent at S lives at least until S + ttl.
// Dating the deadline from the send, not from the answer, is what makes a
// leader stop leading before etcd can let anyone else lead. The registration
// loop moves the deadline; any goroutine reads it, without a lock, against
// this process's monotonic clock.
type leaseClock struct {
	epoch    time.Time    // the monotonic origin of deadline; never changes
	deadline atomic.Int64 // nanoseconds since epoch; the lease is certainly alive before it
}

func newLeaseClock() *leaseClock { return &leaseClock{epoch: time.Now()} }

// extend records that etcd acknowledged a keepalive (or a grant) sent at
// sent, for a lease of ttl. It reports whether the lease came back to life.
func (c *leaseClock) extend(sent time.Time, ttl time.Duration) (revived bool) {
	deadline := int64(sent.Sub(c.epoch) + ttl - leaseMargin(ttl))
	if deadline <= c.deadline.Load() {
		return false // answers can come out of order; an older send proves less
	}
	wasAlive := c.alive()
	c.deadline.Store(deadline)
	return !wasAlive
}

// alive reports whether the lease is certainly alive now.
func (c *leaseClock) alive() bool {
	return int64(time.Since(c.epoch)) < c.deadline.Load()
}

// remaining returns how long the lease is certainly alive from now; zero or
// less once it no longer is.
func (c *leaseClock) remaining() time.Duration {
	return time.Duration(c.deadline.Load() - int64(time.Since(c.epoch)))
}

// clear forgets the lease: it is no longer alive.
func (c *leaseClock) clear() { c.deadline.Store(0) }

// leaseMargin is how long before the lease can expire AmILeader turns false.
// It covers clock rate differences between this process and etcd's leader
// (well under 0.1% on NTP-disciplined machines) with room to spare.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 10 }

// keepAliveInterval is how often a lease of ttl is renewed: three tries per
// ttl, as etcd's own client does.
func keepAliveInterval(ttl time.Duration) time.Duration { return ttl / 3 }

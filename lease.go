// The lease: until when a Register's lease is certainly alive, and why
// that deadline counts from when a keepalive was sent; how often it is
// renewed; a grant asked for under an id of our own.

package biregister

import (
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseClock tells until when one lease is certainly alive. etcd renews a
// lease when a keepalive arrives, which is after it was sent, so a lease
// acknowledged for a keepalive sent at S lives at least until S + ttl.
// Dating the deadline from the send, not from the answer, is what makes a
// leader stop leading before etcd can let anyone else lead.
//
// The deadline is kept on two clocks, and the lease counts as alive only
// while both say so. Go's monotonic clock stops while the machine or VM is
// suspended, and etcd's lease timers do not; the wall clock goes on (the
// kernel adds the time asleep when it resumes), so it ends the lease after a
// suspend on the first read. A step of the wall clock forwards can only end
// the lease early, until the next acknowledged keepalive: it never extends
// it. Both come from one time.Now, which reads them without a system call
// (CLOCK_BOOTTIME would cost one per read: 340 ns against 28 ns here).
//
// The registration loop moves the deadline; any goroutine reads it, without
// a lock.
type leaseClock struct {
	// Set when made; never change (but by the tests, which suspend a machine).
	epoch  time.Time     // the monotonic origin of monoDeadline
	asleep time.Duration // how far the wall clock is ahead of time.Now's

	// Written by the keepalive loop, read by any goroutine. Each only grows
	// until clear zeroes both; a reader that sees one of a pair updated
	// reads an earlier deadline for the other, never a later one.
	monoDeadline atomic.Int64 // monotonic nanoseconds since epoch
	wallDeadline atomic.Int64 // wall clock, Unix nanoseconds
}

func newLeaseClock() *leaseClock { return &leaseClock{epoch: time.Now()} }

// extend records that etcd acknowledged a keepalive (or a grant) sent at
// sent, for a lease of ttl. It reports whether the lease came back to life.
func (c *leaseClock) extend(sent time.Time, ttl time.Duration) (revived bool) {
	left := ttl - leaseMargin(ttl)
	mono := int64(sent.Sub(c.epoch) + left)
	if mono <= c.monoDeadline.Load() {
		return false // answers can come out of order; an older send proves less
	}
	wasAlive := c.alive()
	// The wall deadline first: a reader between the two stores sees the
	// old monotonic deadline, the earlier one.
	c.wallDeadline.Store(sent.Add(left).UnixNano())
	c.monoDeadline.Store(mono)
	return !wasAlive
}

// alive reports whether the lease is certainly alive now.
func (c *leaseClock) alive() bool { return c.remaining() > 0 }

// remaining returns how long the lease is certainly alive from now, by the
// clock that says less; zero or less once it no longer is.
func (c *leaseClock) remaining() time.Duration {
	now := time.Now()
	mono, wall := now.Sub(c.epoch), now.UnixNano()+int64(c.asleep)
	return min(time.Duration(c.monoDeadline.Load())-mono, time.Duration(c.wallDeadline.Load()-wall))
}

// clear forgets the lease: it is no longer alive.
func (c *leaseClock) clear() {
	c.monoDeadline.Store(0)
	c.wallDeadline.Store(0)
}

// leaseMargin is how long before the lease can expire AmILeader turns false.
// It covers clock rate differences between this process and etcd's leader
// (well under 0.1% on NTP-disciplined machines) with room to spare.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 10 }

// attemptTimeout bounds the attempt-th attempt to register (the first is
// 0): a request etcd lost in a leader change of its own it holds until its
// own timeout (5 s and more), so the first attempts are short — asked again
// under the same lease id and name, a request tells what became of the
// first, and the constructor's ttl holds several attempts — and each one
// gets twice the last, up to the ttl, so that a link slower than the
// first bound still registers.
func attemptTimeout(ttl time.Duration, attempt int) time.Duration {
	d := max(keepAliveInterval(ttl), 500*time.Millisecond)
	for ; attempt > 0 && d < ttl; attempt-- {
		d *= 2
	}
	return min(d, max(ttl, 500*time.Millisecond))
}

// keepAliveInterval is how often a lease of ttl is renewed: three tries per
// ttl, as etcd's own client does.
func keepAliveInterval(ttl time.Duration) time.Duration { return ttl / 3 }

// renewalDue returns how long until a lease of ttl whose deadline clock
// keeps is due for renewal: an interval after the last send etcd
// acknowledged, the grant's or a keepalive's. A lease granted before a
// wait for the name, or before a long listing, is due at once.
func renewalDue(clock *leaseClock, ttl time.Duration) time.Duration {
	fresh := ttl - leaseMargin(ttl) // what the clock says right after a send
	return max(0, clock.remaining()-(fresh-keepAliveInterval(ttl)))
}

// grant is a lease grant under an id the library chose: if its answer is
// lost, asking again under the same id tells whether it went through, and
// Close can revoke the id whatever became of it, so no lease is left
// behind.
type grant struct {
	id        clientv3.LeaseID // 0: no grant under way
	firstSent time.Time        // when it was first asked for: no lease of that id began earlier
	asked     bool             // it was asked for: etcd may hold it
}

// unanswered returns the id of a grant asked for whose answer never came,
// or 0: etcd may hold it.
func (g *grant) unanswered() clientv3.LeaseID {
	if g.asked {
		return g.id
	}
	return 0
}

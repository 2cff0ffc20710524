package biregister

import (
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
)

// The deadline counts from the keepalive's send, less the margin of ttl/10
// that README promises; an answer to an older send moves nothing, and the
// first answer after the lease was cleared revives it.
func TestLeaseClockDeadline(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const ttl = 10 * time.Second
	c := newLeaseClock()
	sent := c.epoch.Add(time.Second)
	if !c.extend(sent, ttl) {
		t.Fatal("the first answer did not revive the lease")
	}
	if got, want := time.Duration(c.monoDeadline.Load()), time.Second+ttl-time.Second; got != want {
		t.Fatalf("deadline %v after the epoch, want %v: the send time plus ttl less ttl/10", got, want)
	}
	if c.extend(sent.Add(-time.Millisecond), ttl) {
		t.Fatal("an answer to an older send revived a live lease")
	}
	if got := time.Duration(c.monoDeadline.Load()); got != ttl {
		t.Fatalf("an answer to an older send moved the deadline to %v", got)
	}
	if c.extend(sent.Add(time.Millisecond), ttl) {
		t.Fatal("an answer while the lease is alive reported a revival")
	}
	c.clear()
	if c.alive() || c.remaining() > 0 {
		t.Fatal("a cleared lease is still alive")
	}
	if !c.extend(time.Now(), ttl) || !c.alive() {
		t.Fatal("an answer after the lease was cleared did not revive it")
	}
	if left := c.remaining(); left > ttl-leaseMargin(ttl) || left <= 0 {
		t.Fatalf("%v left, want at most %v", left, ttl-leaseMargin(ttl))
	}
}

// A machine suspended longer than the lease has left: Go's monotonic clock
// stood still, the wall clock went on, and the lease is over on the first
// read after the resume; the next acknowledged keepalive, sent after it,
// revives it. A step of the wall clock backwards extends nothing.
func TestLeaseClockCountsSuspend(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const ttl = 3 * time.Second
	c := newLeaseClock()
	c.extend(time.Now(), ttl)
	if !c.alive() {
		t.Fatal("a lease just acknowledged is not alive")
	}
	c.asleep = 2 * ttl
	if c.alive() || c.remaining() > 0 {
		t.Fatalf("after a suspend of 2 ttl the lease is still alive, %v left", c.remaining())
	}
	// A keepalive sent after the resume: its wall reading includes the
	// time asleep.
	if !c.extend(time.Now().Add(c.asleep), ttl) || !c.alive() {
		t.Fatal("a keepalive sent after the resume did not revive the lease")
	}
	c.clear()
	c.asleep = 0
	c.extend(time.Now(), ttl)
	c.asleep = -time.Hour
	if left := c.remaining(); left > ttl-leaseMargin(ttl) {
		t.Fatalf("a wall clock stepped back extended the lease: %v left", left)
	}
}

// The margin and the renewal interval are the fractions of ttl that README
// states: three renewals a ttl, and leadership given up a tenth of the ttl
// before etcd can expire the lease.
func TestLeaseFractions(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	for _, ttl := range []time.Duration{time.Second, 5 * time.Second, 60 * time.Second} {
		if got := leaseMargin(ttl); got != ttl/10 {
			t.Errorf("leaseMargin(%v) = %v, want %v", ttl, got, ttl/10)
		}
		if got := keepAliveInterval(ttl); got != ttl/3 {
			t.Errorf("keepAliveInterval(%v) = %v, want %v", ttl, got, ttl/3)
		}
	}
}

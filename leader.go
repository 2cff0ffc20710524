package biregister

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// extendLease records that etcd acknowledged a keepalive (or a grant) sent at
// sent, for a lease of leaseTTL seconds; only the loop calls it. etcd renews
// the lease when the request arrives, which is after sent, so the lease lives
// at least until sent + leaseTTL. Dating the deadline from the send, not from
// the answer, is what makes a leader stop leading before etcd can let anyone
// else lead.
func (r *register) extendLease(sent time.Time, leaseTTL int64) {
	ttl := time.Duration(leaseTTL) * time.Second
	deadline := int64(sent.Sub(r.epoch) + ttl - leaseMargin(ttl))
	if deadline <= r.leaseDeadline.Load() {
		return // answers can come out of order; an older send proves less
	}
	wasAlive := r.leaseAlive()
	r.leaseDeadline.Store(deadline)
	if !wasAlive {
		r.changed.notify()
	}
}

// leaseMargin is how long before the lease can expire AmILeader turns false.
// It covers clock rate differences between this process and etcd's leader
// (well under 0.1% on NTP-disciplined machines) with room to spare.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 10 }

func (r *register) leaseAlive() bool {
	return int64(time.Since(r.epoch)) < r.leaseDeadline.Load()
}

func (r *register) AmILeader() bool {
	revision := r.revision.Load()
	if revision == 0 || r.closing.Load() {
		return false
	}
	// The create revision, not just the name, must match: after a
	// re-registration a stale cache still lists the old one under our name.
	m := r.snap.Load().leader
	return m.CreateRevision == revision && m.Name == r.name && r.leaseAlive()
}

func (r *register) Fence() clientv3.Cmp {
	revision := r.revision.Load()
	if revision == 0 {
		// Not registered: "= 0" would hold for an absent key, so compare with
		// a revision no key ever has.
		revision = -1
	}
	return clientv3.Compare(clientv3.CreateRevision(r.key), "=", revision)
}

func (r *register) WaitLeader(ctx context.Context) error {
	for {
		// Take the channels before looking, so no change in between is missed.
		snapChanged, regChanged := r.snap.Load().replaced, r.changed.wait()
		if r.closing.Load() {
			return ErrClosed
		}
		if r.AmILeader() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.ctx.Done():
			return ErrClosed
		case <-snapChanged:
		case <-regChanged:
		}
	}
}

func (r *register) Resign(ctx context.Context) error {
	return r.call(ctx, func(ctx context.Context) error {
		if r.lease == 0 {
			return nil
		}
		if _, err := r.client.Txn(ctx).If(r.Fence()).Then(clientv3.OpDelete(r.key)).Commit(); err != nil {
			return fmt.Errorf("biregister: resign %q: %w", r.key, err)
		}
		if err := r.putIfAbsent(ctx); err != nil {
			// Stepped down, but not back yet: the loop registers again.
			r.revoke(ctx)
		}
		return nil
	})
}

// signal wakes every goroutine waiting for the next change of some state,
// without a lock held while they wait.
type signal struct {
	ch *atomic.Pointer[chan struct{}]
}

func newSignal() signal {
	s := signal{ch: new(atomic.Pointer[chan struct{}])}
	ch := make(chan struct{})
	s.ch.Store(&ch)
	return s
}

// wait returns a channel closed at the next notify.
func (s signal) wait() <-chan struct{} { return *s.ch.Load() }

func (s signal) notify() {
	ch := make(chan struct{})
	close(*s.ch.Swap(&ch))
}

// Leadership: whether this member leads now, the fence for its leader-only
// writes, and waiting to lead.

package biregister

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func (r *register) AmILeader() bool {
	// notLeading(revision) == nil, without finding out why not: AmILeader
	// is the read leader-only code asks before every piece of work.
	revision := r.revision.Load()
	if revision == 0 || r.closing.Load() || r.resigning.Load() == revision {
		return false
	}
	m := r.watcher.snap.Load().leader
	return m.CreateRevision == revision && m.Name == r.name && r.leaseClock.alive()
}

// notLeading returns why the registration created at revision does not lead
// now, or nil if it does: it is the current registration, the oldest in the
// cache, and its lease is certainly alive. Any goroutine may ask; nothing is
// locked and nothing waits.
func (r *register) notLeading(revision int64) error {
	switch {
	case r.closing.Load():
		return ErrClosed
	case r.revision.Load() != revision:
		return ErrRegistrationLost
	case r.resigning.Load() == revision:
		return ErrResigned
	case !r.leaseClock.alive():
		return ErrLeaseDeadline
	}
	// The create revision, not just the name, must match: after a
	// re-registration a stale cache still lists the old one under our name.
	snap := r.watcher.snap.Load()
	if m := snap.leader; m.CreateRevision == revision && m.Name == r.name {
		return nil
	}
	if m, ok := snap.lookup(r.name); ok && m.CreateRevision == revision {
		return ErrNotLeader
	}
	// Gone from a cache that is new enough to hold it, or not in it yet.
	if snap.revision >= revision {
		return ErrRegistrationLost
	}
	return ErrNotLeader
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
		snapChanged, regChanged := r.watcher.snap.Load().replaced, r.changed.wait()
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

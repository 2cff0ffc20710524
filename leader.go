// Leadership: whether this member leads now, the fence for its leader-only
// writes, and waiting to lead.

package biregister

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func (r *register) AmILeader() bool {
	revision := r.revision.Load()
	if revision == 0 || r.closing.Load() {
		return false
	}
	// The create revision, not just the name, must match: after a
	// re-registration a stale cache still lists the old one under our name.
	m := r.watcher.snap.Load().leader
	return m.CreateRevision == revision && m.Name == r.name && r.leaseClock.alive()
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

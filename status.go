// Status: what a Watcher or a Register knows of itself, read without waiting
// for anything.

package biregister

import "time"

// Status is what a Watcher or a Register knows of itself. Reading it locks
// nothing and asks etcd nothing. The registration fields are zero for a
// Watcher.
type Status struct {
	// Current reports whether the cache is known to be current: its watch is
	// up, and etcd confirmed the stream recently enough (see Ready).
	Current bool
	// Revision is the etcd revision the cache reflects.
	Revision int64
	// LastAnswer is when etcd last answered: a watch response, a listing, a
	// read that checked the stream, or, for a Register, a keepalive.
	LastAnswer time.Time
	// Members is the number of members in the cache.
	Members int
	// Listings counts the listings of the group so far, the first included.
	Listings int64
	// Resyncs counts the OpResync changes delivered so far: each stands for
	// changes a consumer that fell behind did not get.
	Resyncs int64

	// Registered reports whether the Register holds a registration; it is
	// false while the Register registers again.
	Registered bool
	// Since is when the current registration was made or, while Registered
	// is false, when the last one was lost.
	Since time.Time
	// CreateRevision is the create revision of the current registration, or
	// 0 (MyRevision).
	CreateRevision int64
	// LeaseLeft is how long the lease is certainly alive from now: from the
	// send of the last acknowledged keepalive, as AmILeader counts. Zero once
	// that has passed, or without a registration.
	LeaseLeft time.Duration
	// Leading reports whether this member leads (AmILeader).
	Leading bool
}

func (w *watcher) Status() Status {
	s := w.snap.Load()
	st := Status{
		Current:  w.current(),
		Revision: s.revision,
		Members:  s.order.size,
		Listings: w.listings.Load(),
		Resyncs:  w.feed.resyncs.Load(),
	}
	if heard := w.heardAt.Load(); heard != 0 {
		st.LastAnswer = w.epoch.Add(time.Duration(heard))
	}
	return st
}

func (r *register) Status() Status {
	st := r.watcher.Status()
	revision := r.revision.Load()
	st.Registered = revision != 0
	st.CreateRevision = revision
	st.Since = r.watcher.epoch.Add(time.Duration(r.since.Load()))
	if left := r.leaseClock.remaining(); revision != 0 && left > 0 {
		st.LeaseLeft = left
	}
	st.Leading = r.AmILeader()
	return st
}

// current reports whether the watch is up and etcd confirmed the stream
// within staleAfter.
func (w *watcher) current() bool {
	silent := time.Duration(int64(time.Since(w.epoch)) - w.heardAt.Load())
	return w.following.Load() && silent <= w.staleAfter()
}

// staleAfter is how long a stream may go unconfirmed before the cache is no
// longer known to be current: the longest a healthy stream stays silent
// between two of its checks (probe.go), plus the time etcd may take to
// answer the second. A Register's watcher is confirmed by the keepalive
// answers, three per ttl.
func (w *watcher) staleAfter() time.Duration {
	switch {
	case w.probe.interval == 0:
		return 2 * w.timeout
	case w.progressUnanswered.Load():
		return w.probe.quiet + 2*w.probe.interval + w.timeout
	}
	return 2*w.probe.interval + w.timeout
}

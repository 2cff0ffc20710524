// Status: what a Watcher or a Register knows of itself, read without waiting
// for anything.

package biregister

import "time"

func (w *watcher) Status() Status {
	s := w.snap.Load()
	st := Status{
		Current:     w.current(),
		Revision:    s.revision,
		Members:     s.size(),
		Listings:    w.listings.Load(),
		Resyncs:     w.feed.resyncs.Load(),
		Suspects:    s.suspects.size,
		Protected:   s.protected,
		Protections: s.protections,
	}
	if heard := w.heardAt.Load(); heard != 0 {
		st.LastAnswer = w.epoch.Add(time.Duration(heard))
	}
	return st
}

func (r *register) Status() Status {
	st := r.watcher.Status()
	if reg := r.current.Load(); reg != nil {
		st.Registered = true
		st.CreateRevision = reg.revision
		st.LeaseLeft = max(reg.clock.remaining(), 0)
	}
	st.Since = r.registeredSince()
	st.Leading = r.leading()
	return st
}

// registeredSince returns when the current registration was made, or the
// last one lost (Status.Since).
func (r *register) registeredSince() time.Time {
	return r.watcher.epoch.Add(time.Duration(r.since.Load()))
}

// current reports whether the watch is up and etcd confirmed the stream
// within staleAfter.
func (w *watcher) current() bool {
	return w.following.Load() && w.silence() <= w.staleAfter()
}

// silence returns how long ago etcd last answered (see heard).
func (w *watcher) silence() time.Duration {
	return time.Duration(int64(time.Since(w.epoch)) - w.heardAt.Load())
}

// staleAfter is how long a stream may go unconfirmed before the cache is no
// longer known to be current: the longest a healthy stream stays silent
// between two of its checks (probe.go), plus the time etcd may take to
// answer the second.
func (w *watcher) staleAfter() time.Duration {
	switch {
	case w.progressUnanswered.Load():
		return w.probe.quiet + 2*w.probe.interval + w.timeout
	}
	return 2*w.probe.interval + w.timeout
}

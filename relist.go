// Listing into the cache: the first listing, and a listing again whenever
// the watch cannot be trusted. The difference from the cache becomes
// changes, so no deletion made while the watch was down goes unseen.

package biregister

// relist lists the group, for why, until it succeeds or the Watcher
// closes, and turns the difference from the cache into changes, so no
// deletion made while the watch was down goes unseen. Each page is bounded
// (see lister.get), not the whole: a group of any size lists again.
func (w *watcher) relist(why cause) {
	var delay backoff
	for {
		l, err := w.list(w.ctx)
		if err == nil {
			w.adopt(l, why)
			return
		}
		if w.ctx.Err() != nil {
			return
		}
		w.logger.Warn("biregister: listing failed, retrying", "err", err)
		if !w.wait(delay.next()) {
			return
		}
	}
}

// adopt makes a listing, read for why, the cache, and
// delivers the difference as changes.
func (w *watcher) adopt(l listing, why cause) {
	w.heard()
	// The cache is as current as the listing: ready, before its watch is
	// even created (a Watcher the constructor returned has listed).
	w.following.Store(true)
	w.listings.Add(1)
	w.metrics.listed(why)
	w.clusterID = l.header.ClusterId
	prev := w.snap.Load()
	next, changes, cut := prev.replace(l.members, l.leaving, l.header.Revision, w.feed.room())
	next.cluster, next.incarnation, next.own = l.header.ClusterId, prev.incarnation, l.own
	if why == causeEtcdReplaced || !sameCluster(prev.cluster, l.header.ClusterId) || l.header.Revision < prev.revision {
		// Another etcd, or one restored: also when the watch gave up on it
		// for a stall or a failure before anything said so.
		next.incarnation++
	}
	w.advance(next, changes, true)
	if cut {
		w.feed.overflow()
	}
}

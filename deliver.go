// Delivering: publishing the cache's next snapshot and handing its changes
// to the consumer as the feed makes room, also while the loop waits.

package biregister

import "time"

// advance publishes next and delivers the changes that lead to it; listed
// says next is a listing, whose PUTs may have been cut.
func (w *watcher) advance(next *snapshot, changes []Change, listed bool) {
	prev := w.snap.Load()
	if next != prev {
		w.guard.weigh(prev, next, changes, listed, time.Now())
	}
	w.publish(next)
	w.logProtection(prev, next)
	var puts, deletes int64
	for _, c := range changes {
		switch {
		case !w.feed.push(c):
		case c.Op == OpPut:
			puts++
		default:
			deletes++
		}
	}
	w.metrics.delivered(OpPut, puts)
	w.metrics.delivered(OpDelete, deletes)
}

// deliverWaiting hands the consumer what waits in the feed as it makes room.
func (w *watcher) deliverWaiting() {
	resyncs := w.feed.resyncs.Load()
	w.feed.sent(w.resyncRevision())
	w.metrics.delivered(OpResync, w.feed.resyncs.Load()-resyncs)
}

// wait sleeps for d while still delivering the changes that wait; it returns false
// if the Watcher closed meanwhile.
func (w *watcher) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return false
		case <-timer.C:
			return true
		case now := <-w.guard.due():
			w.releaseSuspects(now)
		case w.feed.pending() <- w.feed.next(w.resyncRevision()):
			w.deliverWaiting()
		}
	}
}

// releaseSuspects releases the suspects due by now, and publishes the view
// without them.
func (w *watcher) releaseSuspects(now time.Time) {
	s := w.snap.Load()
	if w.guard.release(s.size(), now) {
		next := s.withSuspects(w.guard)
		w.publish(next)
		w.logProtection(s, next)
	}
}

// logProtection logs protection turning on or off from prev to next.
func (w *watcher) logProtection(prev, next *snapshot) {
	switch on := !next.protected.IsZero(); {
	case on && prev.protected.IsZero():
		w.logger.Warn("biregister: most of the group lost at once, holding the members lost as suspects",
			"lost", w.guard.absent, "members", next.size(), "suspects", next.suspects.size)
	case !on && !prev.protected.IsZero():
		w.logger.Info("biregister: mass-loss protection off", "suspects", next.suspects.size)
	}
}

// resyncRevision returns the revision an owed OpResync carries: that of the
// newest event or listing the cache holds, so that no change delivered after
// it has a lower one (a progress notification can run ahead of events still
// to come; see snapshot.applied).
func (w *watcher) resyncRevision() int64 { return w.snap.Load().applied }

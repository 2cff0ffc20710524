// Delivering: publishing the cache's next snapshot and handing its changes
// to the consumer as the feed makes room, also while the loop waits.

package biregister

import "time"

// advance publishes next and delivers the changes that lead to it.
func (w *watcher) advance(next *snapshot, changes []Change) {
	if prev := w.snap.Load(); next != prev {
		w.guard.weigh(prev, next, changes, time.Now())
	}
	w.publish(next)
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
		w.publish(s.withSuspects(w.guard))
	}
}

// resyncRevision returns the revision an owed OpResync carries: that of the
// newest event or listing the cache holds, so that no change delivered after
// it has a lower one (a progress notification can run ahead of events still
// to come; see snapshot.applied).
func (w *watcher) resyncRevision() int64 { return w.snap.Load().applied }

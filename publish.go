// Publishing what the registration loop decides — a registration made,
// written or lost — to the readers, the log and the metrics.

package biregister

import (
	"context"
	"log/slog"
	"time"
)

// registered publishes a new registration created at revision in cluster,
// on the current lease, whose last write was at written.
func (r *register) registered(revision int64, cluster uint64, written int64) {
	r.since.Store(int64(time.Since(r.watcher.epoch)))
	r.wrote(written)
	r.publish(&registration{revision: revision, cluster: cluster, clock: r.clock})
}

// wrote records written as the registration's last write of the key, in
// the etcd the view follows now.
func (r *register) wrote(written int64) {
	r.written, r.writtenIn = written, r.watcher.snap.Load().incarnation
}

// publish makes reg the current registration and wakes whoever waits for a
// change of it.
func (r *register) publish(reg *registration) {
	r.current.Store(reg)
	r.changed.notify()
	// Logged as it happens: a loop that looked only between its requests
	// would miss a Resign's stepping down while the next registration
	// leads again, or one refused.
	r.logLeadership()
}

// lose drops the registration, lost for why; the lease stays, and the loop
// registers again on it.
func (r *register) lose(why cause) {
	if r.current.Load() == nil {
		return
	}
	r.since.Store(int64(time.Since(r.watcher.epoch)))
	r.lostCause = why
	r.written = 0
	r.unsure = nil
	r.resignOwed = false
	r.publish(nil)
}

// logLeadership logs when leadership was gained or lost since the last look.
func (r *register) logLeadership() {
	leading := !r.closing.Load() && r.leads(r.current.Load(), r.watcher.snap.Load())
	if leading == r.loggedLeading {
		if leading && !r.announced && r.leadershipAsked.Load() {
			// Gained before anyone asked (the constructor's first
			// term, most often), so logged at Debug then.
			r.announced = true
			r.watcher.logger.Info("biregister: leading", "key", r.key, "revision", r.ledRevision)
		}
		return
	}
	r.loggedLeading = leading
	r.metrics.leadershipChanged(leading)
	level := slog.LevelDebug
	if r.leadershipAsked.Load() {
		level = slog.LevelInfo
	}
	if leading {
		r.announced = level == slog.LevelInfo
		r.ledRevision = r.MyRevision()
		r.watcher.logger.Log(context.Background(), level, "biregister: leadership gained", "key", r.key, "revision", r.ledRevision)
		return
	}
	r.watcher.logger.Log(context.Background(), level, "biregister: leadership lost",
		"key", r.key, "revision", r.ledRevision, "cause", r.notLeading(r.ledRevision))
}

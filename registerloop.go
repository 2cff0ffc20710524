// The registration loop: the goroutine that owns a Register's registration.
// It registers again when the registration is lost or not its own any
// more, and does what other goroutines ask of the registration.

package biregister

import (
	"context"
	"errors"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// run owns the registration: it registers again when the registration is
// lost, and serves requests. The keeper renews the lease meanwhile.
func (r *register) run() {
	defer close(r.loopDone)
	var retry backoff
	attempts := 0 // failed since the last registration: see attemptTimeout
	timer := time.NewTimer(0)
	if !r.owesWork() {
		timer.Stop()
	}
	defer timer.Stop()
	armed := r.owesWork()
	// checked is the last snapshot looked at for a lost key. It is carried
	// from pass to pass, not loaded afresh: a snapshot published while the
	// loop was busy (a request, a retry) must still be looked at.
	checked := r.watcher.snap.Load()
	// Leadership also ends by the clock alone: looked at every ttl/3, so
	// that a lapse of the lease is logged within that, while AmILeader
	// itself turns false on time.
	look := time.NewTicker(keepAliveInterval(r.ttl))
	defer look.Stop()
	for {
		r.checkTenure()
		r.logLeadership()
		changed := r.changed.wait()
		select {
		case <-r.ctx.Done():
			return
		case <-look.C:
		case <-changed:
		case <-timer.C:
			armed = false
			if err := r.registerAgain(attempts); err != nil {
				attempts++
				if r.ctx.Err() == nil {
					r.watcher.logger.Warn("biregister: registering again failed, retrying", "key", r.key, "err", err)
				}
				delay := retry.next()
				if errors.Is(err, errDetached) {
					delay = 0 // the key without a lease goes first, at once
				}
				timer.Reset(delay)
				armed = true
			} else {
				retry.reset()
				attempts = 0
			}
		case <-r.leaseLost:
			if r.lease != 0 && clientv3.LeaseID(r.lostLease.Load()) == r.lease {
				r.watcher.logger.Warn("biregister: lease lost, registering again", "key", r.key)
				r.dropLease()
				r.lose(causeLeaseLost)
				r.lostCause = causeLeaseLost // also if the key's deletion came first
			}
		case <-checked.replaced:
			checked = r.watcher.snap.Load()
			r.keyLost(checked)
		case req := <-r.requests:
			ctx, cancel := context.WithTimeout(r.ctx, r.ttl)
			req.reply <- req.do(ctx)
			cancel()
		}
		if !armed && r.owesWork() {
			timer.Reset(0)
			armed = true
		}
	}
}

// owesWork reports whether the registration must be made again, or a
// resignation finished.
func (r *register) owesWork() bool { return r.current.Load() == nil || r.resignOwed }

// registerAgain finishes a resignation whose answer never came, if one is
// owed, and registers, in its attempt-th attempt.
func (r *register) registerAgain(attempt int) error {
	ctx, cancel := context.WithTimeout(r.ctx, attemptTimeout(r.ttl, attempt))
	defer cancel()
	if r.resignOwed {
		deleted, err := r.deleteKey(ctx)
		if err != nil {
			return err
		}
		r.resignOwed = false
		if deleted {
			r.lose(causeResigned)
		}
	}
	if err := r.create(ctx); err != nil {
		return err
	}
	r.watcher.logger.Info("biregister: registered again", "key", r.key, "revision", r.MyRevision(), "cause", r.lostCause)
	r.metrics.registeredFor(r.lostCause)
	return nil
}

// Close ends the loop and the keeper, then leaves, then closes the
// watcher, which releases the client.
func (r *register) Close() {
	r.closeOnce.Do(func() {
		r.stop()
		r.finish(r.leave(closeWait(r.ttl)))
	})
	<-r.closed
}

// stop ends the loop and the keeper, and with them the registration's
// terms and leadership.
func (r *register) stop() {
	r.closing.Store(true)
	r.endTenure(ErrClosed)
	r.cancel()
	<-r.loopDone
	if r.keeper != nil {
		<-r.keeper.done
	}
	if r.loggedLeading {
		r.loggedLeading = false
		r.metrics.leadershipChanged(false)
		r.watcher.logger.Info("biregister: leadership lost", "key", r.key, "revision", r.ledRevision, "cause", ErrClosed)
	}
	r.stopObserving()
}

// finish drops the registration, left, takes the Register off its shared
// Lease (abandoned: see leaveShared), and closes the watcher.
func (r *register) finish(abandoned bool) {
	r.lose(causeClosed)
	r.watcher.Close()
	if r.shared != nil {
		r.shared.leave(r, abandoned) // last: the Lease's client served until now
	}
	close(r.closed)
}

// leave deletes the key, as a graceful leave (leaving.go), while it has the
// registration's create revision (written from outside in place, without
// our lease, it would outlive the member), and revokes the lease, which
// takes the marker with it. The revoke waits for the delete's answer, or
// for a quarter of wait at most: it must not go first (its DELETE would
// read as a loss), nor be left no time by a delete stuck on a member that
// does not answer (the key would stay for a ttl). Side by side, it revokes
// any lease whose grant got no answer. All within wait. It reports whether
// it left a key for a shared Lease to delete (see leaveShared).
func (r *register) leave(wait time.Duration) (abandoned bool) {
	if r.shared != nil {
		return r.leaveShared(wait)
	}
	var leaving sync.WaitGroup
	deleted := make(chan struct{})
	if reg := r.current.Load(); reg != nil {
		leaving.Add(1)
		go func() {
			defer leaving.Done()
			defer close(deleted)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_, _ = r.deleteGracefully(ctx, clientv3.Compare(clientv3.CreateRevision(r.key), "=", reg.revision))
		}()
	} else {
		close(deleted)
	}
	if r.lease != 0 {
		leaving.Add(1)
		go func() {
			defer leaving.Done()
			start := time.Now()
			select {
			case <-deleted:
			case <-time.After(wait / 4):
			}
			revoke(context.Background(), r.client, r.watcher.logger, r.key, r.lease, wait-time.Since(start))
		}()
	}
	if id := r.granting.unanswered(); id != 0 {
		leaving.Add(1)
		go func() {
			defer leaving.Done()
			revokeGrant(r.client, id, wait)
		}()
	}
	leaving.Wait()
	r.dropLease()
	return false
}

// leaveShared deletes the key, as a graceful leave, while it has the
// registration's create revision, and then the marker, which the shared
// lease would keep for as long as it lives. The lease is the Lease's.
// Unregistered, it deletes the key if it is on the shared lease: the
// Lease carries a put to its end after the Register stopped waiting for
// it (its loop ended, its constructor gave up), and the key, the
// Register's on the Lease until it leaves, would live as long as the
// lease. No revoke takes what a request left behind, so each is asked
// again until it is answered, within wait. If the Lease does not settle
// its puts within half of wait, the key is abandoned: the Lease deletes it
// once they are settled (takeDepartures).
func (r *register) leaveShared(wait time.Duration) (abandoned bool) {
	reg := r.current.Load()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var lease clientv3.LeaseID
	if reg == nil {
		var settled bool
		lease, settled = r.shared.settled(wait / 2)
		abandoned = !settled
	}
	switch {
	case reg != nil:
		// A delete whose answer was lost may have put the marker: it goes
		// whatever the answer.
		answered(ctx, wait, func(ctx context.Context) error {
			_, err := r.deleteGracefully(ctx, clientv3.Compare(clientv3.CreateRevision(r.key), "=", reg.revision))
			return err
		})
		answered(ctx, wait, r.deleteMarker)
	case lease != 0:
		answered(ctx, wait, func(ctx context.Context) error { return deleteIfOnLease(ctx, r.client, r.key, lease) })
	}
	r.dropLease()
	return abandoned
}

// answered asks do until it is answered or ctx ends, each try within a
// quarter of wait: a try sent to a member that takes requests and answers
// none must leave time for another, which the client sends elsewhere.
// Tries that fail at once are spaced out.
func answered(ctx context.Context, wait time.Duration, do func(ctx context.Context) error) {
	var retry backoff
	for {
		try, cancel := context.WithTimeout(ctx, wait/4)
		err := do(try)
		cancel()
		if err == nil || !ambiguous(err) || !sleep(ctx, retry.next()) {
			return
		}
	}
}

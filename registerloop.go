// The registration loop: the goroutine that owns a Register's registration.
// It keeps the lease alive, registers again when the registration is lost,
// and does what other goroutines ask of the registration.

package biregister

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// run owns the registration: it keeps the lease alive, registers again when
// the registration is lost, and serves requests.
func (r *register) run() {
	defer close(r.loopDone)
	defer r.background.Wait()
	var retry backoff
	timer := time.NewTimer(keepAliveInterval(r.ttl))
	defer timer.Stop()
	// checked is the last snapshot looked at for a lost key. It is carried
	// from pass to pass, not loaded afresh: a snapshot published while the
	// loop was busy (a request, a tick) must still be looked at.
	checked := r.watcher.snap.Load()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-timer.C:
			timer.Reset(r.tick(&retry))
		case result := <-r.keepAlives.answers:
			if next, ok := r.keepAliveDone(result, &retry); ok {
				timer.Reset(next)
			}
		case <-checked.replaced:
			checked = r.watcher.snap.Load()
			if r.keyLost(checked) {
				r.watcher.logger.Warn("biregister: key deleted from outside, registering again", "key", r.key)
				r.abandonLease()
				timer.Reset(0)
			}
		case req := <-r.requests:
			req.reply <- req.do(req.ctx)
		}
		r.checkTenure()
		r.logLeadership()
	}
}

// logLeadership logs when leadership was gained or lost since the last look.
// The loop looks at least every ttl/3, so a lapse of the lease is logged
// within that, while AmILeader itself turns false on time.
func (r *register) logLeadership() {
	if leading := r.AmILeader(); leading != r.loggedLeading {
		r.loggedLeading = leading
		r.metrics.leadershipChanged(leading)
		if leading {
			r.watcher.logger.Info("biregister: leadership gained", "key", r.key, "revision", r.revision.Load())
		} else {
			r.watcher.logger.Info("biregister: leadership lost", "key", r.key)
		}
	}
}

// tick sends a keepalive, or registers again if there is no lease; it returns
// when to tick next.
func (r *register) tick(retry *backoff) time.Duration {
	if r.lease != 0 {
		r.keepAlives.send(r.lease)
		return keepAliveInterval(r.ttl)
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.ttl)
	err := r.create(ctx)
	cancel()
	if err != nil {
		if r.ctx.Err() == nil {
			r.watcher.logger.Warn("biregister: registering again failed, retrying", "key", r.key, "err", err)
		}
		return retry.next()
	}
	r.watcher.logger.Info("biregister: registered again", "key", r.key, "revision", r.revision.Load(), "cause", r.lostCause)
	r.metrics.registered(r.lostCause)
	retry.reset()
	return 0 // keep alive at once: its answer tells the watcher if etcd was replaced
}

// keepAliveDone applies the outcome of a keepalive; it returns when to tick
// next if that must change.
func (r *register) keepAliveDone(result keepAliveResult, retry *backoff) (time.Duration, bool) {
	wasCurrent := result.from == r.keepAlives.current()
	answered, ok := r.keepAlives.answered(result)
	switch {
	case !ok:
		return 0, false // about a stream given up since
	case result.err != nil:
		if r.ctx.Err() != nil || !wasCurrent {
			return 0, false
		}
		r.watcher.logger.Warn("biregister: keepalive failed, retrying", "key", r.key, "err", result.err)
		return retry.next(), true
	}
	if result.resp.Header != nil {
		r.watcher.observe(result.resp.Header)
	}
	switch {
	case answered.lease != r.lease:
		return 0, false // about a lease given up since
	case result.resp.TTL <= 0:
		r.watcher.logger.Warn("biregister: lease lost, registering again", "key", r.key)
		r.lostCause = causeLeaseLost
		r.forget()
		return 0, true
	}
	r.extendLease(answered.sent, result.resp.TTL)
	r.metrics.keepAliveAnswered(time.Since(answered.sent))
	retry.reset()
	return 0, false
}

// call runs do on the loop and returns its result, or ErrClosed if Close
// ended it before it was done (any other error do returns is returned as
// is).
func (r *register) call(ctx context.Context, do func(ctx context.Context) error) error {
	if r.closing.Load() {
		return ErrClosed
	}
	// do ends with Close as well as with ctx: Close waits for the loop, and
	// the loop must not wait on an etcd that does not answer.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()
	req := request{ctx: ctx, do: do, reply: make(chan error, 1)}
	var err error
	select {
	case r.requests <- req:
		err = <-req.reply
	case <-ctx.Done():
		err = ctx.Err()
	}
	if r.ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return ErrClosed
	}
	return err
}

func (r *register) SetValue(ctx context.Context, value string) error {
	return r.call(ctx, func(ctx context.Context) error {
		// Set first: a registration made later, even after a failure here,
		// carries the newest value.
		r.value = value
		if r.lease == 0 {
			return nil
		}
		// If the fence fails, the key is gone: the loop notices it from the
		// watch and registers again, with the new value.
		_, err := r.client.Txn(ctx).
			If(r.Fence()).
			Then(clientv3.OpPut(r.key, value, clientv3.WithLease(r.lease))).
			Commit()
		if err != nil {
			return fmt.Errorf("biregister: set value of %q: %w", r.key, err)
		}
		return nil
	})
}

func (r *register) Resign(ctx context.Context) error {
	return r.call(ctx, func(ctx context.Context) error {
		if r.lease == 0 {
			return nil
		}
		// Leadership and the term end before the key goes, so that no one
		// can lead while they last.
		resigned := r.revision.Load()
		r.resigning.Store(resigned)
		r.endTenure(ErrResigned)
		if _, err := r.client.Txn(ctx).If(r.Fence()).Then(clientv3.OpDelete(r.key)).Commit(); err != nil {
			r.resigning.CompareAndSwap(resigned, 0) // still the registration
			return fmt.Errorf("biregister: resign %q: %w", r.key, err)
		}
		r.lostCause = causeResigned
		if err := r.putIfAbsent(ctx); err != nil {
			// Stepped down, but not back yet: the loop registers again.
			r.revoke(ctx)
			return nil
		}
		r.metrics.registered(causeResigned)
		return nil
	})
}

// Close ends the loop, then revokes the lease, then closes the watcher, which
// releases the client.
func (r *register) Close() {
	r.closeOnce.Do(func() {
		r.closing.Store(true)
		r.endTenure(ErrClosed)
		r.cancel()
		<-r.loopDone
		r.stopObserving()
		r.revoke(context.Background())
		r.watcher.Close()
	})
}

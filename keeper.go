// The keeper: the goroutine that renews a Register's lease, apart from the
// registration loop, so that a request waiting on etcd never delays a
// keepalive.

package biregister

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// keptLease is a lease and the clock of its deadline.
type keptLease struct {
	id    clientv3.LeaseID
	clock *leaseClock
}

// leaseKeeper renews the lease the registration loop hands it, every ttl/3,
// over keepAliveStreams, and extends the lease's clock with each answer. It
// tells the loop when etcd says the lease is gone. It changes nothing else:
// the registration is the loop's.
type leaseKeeper struct {
	// Set when made; never change.
	streams *keepAliveStreams
	ttl     time.Duration
	hand    chan keptLease                     // from the loop: the lease to keep, or none
	lost    chan struct{}                      // to the loop, 1 slot: lostLease changed
	observe func(*etcdserverpb.ResponseHeader) // the watcher's: headers of answers
	revived func()                             // the lease came back to life
	metrics *recorder                          // may be nil
	logger  *slog.Logger
	key     string        // for the logs
	done    chan struct{} // closed when run has returned, and with it every stream's goroutine

	background sync.WaitGroup // the streams' goroutines

	// Written by run, read by the loop after lost.
	lostLease atomic.Int64
	// Owned by run: a keepalive of the kept lease went out since it was
	// handed; an etcd that answered none for the whole lease was logged,
	// and its next answer is.
	sentKept      bool
	silenceLogged bool
}

// newLeaseKeeper returns the keeper of a Register's lease, to run until ctx
// ends; answers' headers go to observe, round trips to metrics, and revived
// is called when an answer brings the lease back to life.
func newLeaseKeeper(ctx context.Context, client *clientv3.Client, ttl time.Duration, key string,
	observe func(*etcdserverpb.ResponseHeader), revived func(), metrics *recorder, logger *slog.Logger) *leaseKeeper {
	k := &leaseKeeper{
		ttl:     ttl,
		hand:    make(chan keptLease),
		lost:    make(chan struct{}, 1),
		observe: observe,
		revived: revived,
		metrics: metrics,
		logger:  logger,
		key:     key,
		done:    make(chan struct{}),
	}
	k.streams = newKeepAliveStreams(ctx, client, ttl, &k.background)
	return k
}

// keep hands the keeper the lease to renew from now on (a zero one: none).
// It returns false if there is no keeper yet (the constructor registers
// before it starts one) or if it has ended.
func (k *leaseKeeper) keep(l keptLease) bool {
	if k == nil {
		return false
	}
	select {
	case k.hand <- l:
		return true
	case <-k.done:
		return false
	}
}

// run renews the kept lease until ctx ends.
func (k *leaseKeeper) run(ctx context.Context) {
	defer close(k.done)
	defer k.background.Wait()
	var kept keptLease
	var retry backoff
	timer := time.NewTimer(0)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case kept = <-k.hand:
			timer.Stop()
			retry.reset()
			k.sentKept, k.silenceLogged = false, false
			if kept.id != 0 {
				timer.Reset(renewalDue(kept.clock, k.ttl))
			}
		case <-timer.C:
			if kept.id != 0 {
				k.logSilence(kept)
				k.streams.send(kept.id)
				k.sentKept = true
				timer.Reset(keepAliveInterval(k.ttl))
			}
		case result := <-k.streams.answers:
			if next, ok := k.answered(ctx, kept, result, &retry); ok {
				timer.Reset(next)
			}
		}
	}
}

// answered applies the outcome of a keepalive of kept; it returns when to
// renew next if that must change.
func (k *leaseKeeper) answered(ctx context.Context, kept keptLease, result keepAliveResult, retry *backoff) (time.Duration, bool) {
	wasCurrent := result.from == k.streams.current()
	answered, ok := k.streams.answered(result)
	switch {
	case !ok:
		return 0, false // about a stream given up since
	case result.err != nil:
		if ctx.Err() != nil || !wasCurrent || kept.id == 0 {
			return 0, false
		}
		k.logger.Warn("biregister: keepalive failed, retrying", "key", k.key, "err", result.err)
		return retry.next(), true
	}
	if result.resp.Header != nil {
		k.observe(result.resp.Header)
	}
	if answered.lease != kept.id || kept.id == 0 {
		return 0, false // about a lease given up since
	}
	if result.resp.TTL <= 0 {
		// Not alive a moment longer, whatever the clock said.
		kept.clock.clear()
		k.lostLease.Store(int64(kept.id))
		select {
		case k.lost <- struct{}{}:
		default:
		}
		return 0, false
	}
	if kept.clock.extend(answered.sent, time.Duration(result.resp.TTL)*time.Second) {
		if k.silenceLogged {
			k.silenceLogged = false
			k.logger.Info("biregister: etcd answers keepalives again", "key", k.key)
		}
		k.revived()
	}
	k.metrics.keepAliveAnswered(time.Since(answered.sent))
	retry.reset()
	return 0, false
}

// logSilence logs, once, that etcd answered no keepalive of kept for the
// whole lease: unreachable, most likely. A member that does not lead says
// nothing else of an outage that etcd's restart ends with its lease alive.
func (k *leaseKeeper) logSilence(kept keptLease) {
	if k.silenceLogged || !k.sentKept || kept.clock.alive() {
		return // a lease aged before it was handed is renewed first
	}
	k.silenceLogged = true
	k.logger.Warn("biregister: etcd answered no keepalive for the whole lease, which may be gone", "key", k.key)
}

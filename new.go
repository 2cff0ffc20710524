// The constructors: checking the arguments, connecting, registering, and
// starting the loops.

package biregister

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// NewWatcher starts watching the group under prefix. It returns once the cache
// holds the group's current members, or with an error if etcd cannot be read
// within ttl seconds. The defaults of mass-loss protection follow ttl too
// (see Protection): give it the ttl of the members it follows.
func NewWatcher(endpoints []string, prefix string, ttl int64, opts ...Option) (Watcher, error) {
	w, cfg, err := connectWatcher(endpoints, prefix, ttl, opts)
	if err != nil {
		return nil, err
	}
	if cfg.lease != nil {
		// A Watcher would outlive the client the Lease closes.
		w.releaseClient()
		return nil, fmt.Errorf("%w: WithLease given to NewWatcher: a Watcher has no lease", ErrInvalidArgument)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ttl)
	defer cancel()
	if err := w.start(ctx); err != nil {
		w.releaseClient()
		return nil, err
	}
	return w, nil
}

// connectWatcher checks the arguments, connects to etcd and returns a
// watcher that is not started yet, and the configuration.
func connectWatcher(endpoints []string, prefix string, ttl int64, opts []Option) (*watcher, *config, error) {
	c, err := connect(endpoints, prefix, ttl, opts)
	if err != nil {
		return nil, nil, err
	}
	return newWatcher(c.client, c.release, c.prefix, c.cfg), c.cfg, nil
}

// NewRegister registers name with value under prefix, with a lease of ttl
// seconds that it keeps alive until Close. It fails with ErrNameTaken if a live
// member already holds name, and with another error if etcd cannot be reached
// within about ttl seconds.
func NewRegister(endpoints []string, prefix string, name, value string, ttl int64, opts ...Option) (Register, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%w: name %q must be non-empty and have no '/'", ErrInvalidArgument, name)
	}
	return asRegister(newRegister(endpoints, prefix, name, value, ttl, opts))
}

// NewRegisterNoName is NewRegister with a name chosen by the library: the
// current etcd revision as 20 zero-padded digits, so that names sort in the
// order the members registered. Concurrent calls always get distinct names.
func NewRegisterNoName(endpoints []string, prefix string, value string, ttl int64, opts ...Option) (Register, error) {
	return asRegister(newRegister(endpoints, prefix, "", value, ttl, opts))
}

// asRegister keeps a failed constructor's nil from becoming a non-nil
// interface holding a nil pointer.
func asRegister(r *register, err error) (Register, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

// newRegister registers, lists the group and starts the loop and the
// keeper; an empty name registers under the current revision.
func newRegister(endpoints []string, prefix, name, value string, ttl int64, opts []Option) (*register, error) {
	w, cfg, err := connectWatcher(endpoints, prefix, ttl, opts)
	if err != nil {
		return nil, err
	}
	if name == "" && cfg.lease != nil {
		w.releaseClient()
		return nil, fmt.Errorf("%w: NewRegisterNoName with WithLease", ErrInvalidArgument)
	}
	loopCtx, stopLoop := context.WithCancel(context.Background())
	r := &register{
		watcher:  w,
		client:   w.client,
		name:     name,
		key:      w.prefix + name,
		ttl:      cfg.ttl,
		shared:   cfg.lease,
		requests: make(chan request),
		loopDone: make(chan struct{}),
		ctx:      loopCtx,
		cancel:   stopLoop,
		changed:  newSignal(),
		closed:   make(chan struct{}),
		value:    value,
	}
	if r.shared != nil {
		r.leaseLost, r.lostLease = make(chan struct{}, 1), &r.shared.lostLease
		if err := r.shared.reserve(r); err != nil {
			stopLoop()
			w.releaseClient()
			return nil, err
		}
	}
	// Register before listing, so the first snapshot already holds this
	// member. The lease is handed to the keeper once there is one.
	ctx, cancel := context.WithTimeout(context.Background(), addDurations(cfg.nameWait, r.ttl))
	defer cancel()
	if name == "" {
		err = r.createNoName(ctx)
	} else {
		err = r.createWhenFree(ctx, cfg.nameWait)
	}
	if err == nil {
		// Renewed from now on: listing a large group can outlast the
		// lease.
		r.metrics = newRecorder(w.metrics.instruments(), attrPrefix.String(w.prefix), attrName.String(r.name))
		if r.shared == nil {
			r.keeper = newLeaseKeeper(loopCtx, w.client, r.ttl, r.key, w.observe, r.changed.notify, r.metrics, w.logger)
			r.leaseLost, r.lostLease = r.keeper.lost, &r.keeper.lostLease
			go r.keeper.run(loopCtx)
			r.keeper.keep(keptLease{id: r.lease, clock: r.clock})
		}
		w.ownKey = r.key
		err = w.start(ctx)
	}
	started := err == nil
	if started && r.shared != nil {
		err = r.shared.join(r, r.lease)
	}
	if err != nil {
		// Within the constructor's ttl, about: what a grant left behind
		// expires by itself.
		abandoned := r.leave(constructorLeaveWait)
		stopLoop()
		if r.keeper != nil {
			<-r.keeper.done
		}
		if started {
			w.Close() // a Lease closed once the group was listed
		} else {
			w.releaseClient()
		}
		if r.shared != nil {
			r.shared.leave(r, abandoned) // last: the Lease's client served until now
		}
		return nil, err
	}
	r.metrics.registeredFor(causeStart)
	r.stopObserving = r.metrics.observeRegistration(r.leading, func() time.Duration { return r.Status().LeaseLeft })
	go r.run()
	return r, nil
}

// addDurations returns a + b, or the largest Duration where the sum would
// overflow: WithNameWait(math.MaxInt64) waits as long as it takes.
func addDurations(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

package biregister

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Register is a live member of a group. It keeps its registration alive,
// registers again by itself when the registration is lost, and watches the
// whole group like a Watcher.
type Register interface {
	// MyKey returns this member's etcd key: the prefix and the name.
	MyKey() string
	// MyName returns this member's name.
	MyName() string
	// AmILeader reports whether this member is the group's leader: its
	// registration is the oldest and its lease is certainly still alive.
	AmILeader() bool
	Watcher

	// MyRevision returns the create revision of the current registration, or 0
	// while the Register is registering again.
	MyRevision() int64
	// Fence returns a comparison that holds only while the current registration
	// exists. Put it in a Txn to make a leader-only write fail once this member
	// has lost its registration, whatever it believes.
	Fence() clientv3.Cmp
	// WaitLeader blocks until this member leads (nil), ctx ends (ctx.Err()) or
	// the Register closes (ErrClosed).
	WaitLeader(ctx context.Context) error
	// Resign gives up leadership but stays registered: the member registers
	// again under the same name and queues behind every other member.
	Resign(ctx context.Context) error
	// SetValue changes this member's value in place, on the same lease.
	SetValue(ctx context.Context, value string) error
}

// NewRegister registers name with value under prefix, with a lease of ttl
// seconds that it keeps alive until Close. It fails with ErrNameTaken if a live
// member already holds name, and with another error if etcd cannot be reached
// within about ttl seconds.
func NewRegister(etcdServs []string, prefix string, name, value string, ttl int64, opts ...Option) (Register, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%w: name %q must be non-empty and have no '/'", ErrInvalidArgument, name)
	}
	return asRegister(newRegister(etcdServs, prefix, name, value, ttl, opts))
}

// NewRegisterNoName is NewRegister with a name chosen by the library: the
// current etcd revision as 20 zero-padded digits, so that names sort in the
// order the members registered. Concurrent calls always get distinct names.
func NewRegisterNoName(etcdServs []string, prefix string, value string, ttl int64, opts ...Option) (Register, error) {
	return asRegister(newRegister(etcdServs, prefix, "", value, ttl, opts))
}

// asRegister keeps a failed constructor's nil from becoming a non-nil
// interface holding a nil pointer.
func asRegister(r *register, err error) (Register, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

type register struct {
	*watcher
	name       string
	key        string
	ttl        time.Duration
	ownsClient bool

	// Written by the loop (and the constructor before it starts), read by any
	// goroutine.
	revision      atomic.Int64 // create revision of the registration; 0 while there is none
	leaseDeadline atomic.Int64 // since epoch: the lease is certainly alive before it
	epoch         time.Time    // monotonic origin of leaseDeadline
	closing       atomic.Bool
	changed       signal // the registration changed or its lease came back to life

	// Owned by the loop.
	lease   clientv3.LeaseID
	value   string
	leading bool               // what the log last said of leadership
	streams []*keepAliveStream // the current one last

	leases     pb.LeaseClient
	keepAlives chan keepAliveResult
	attempts   sync.WaitGroup // the keepalive streams' goroutines and revokes in flight
	requests   chan request
	ctx        context.Context // ends the loop
	cancel     context.CancelFunc
	loopDone   chan struct{}
	closeOnce  sync.Once
}

// request is work on the registration that the loop does for another
// goroutine, so that only the loop ever changes the registration.
type request struct {
	ctx   context.Context
	do    func(ctx context.Context) error
	reply chan error
}

func newRegister(endpoints []string, prefix, name, value string, ttl int64, opts []Option) (*register, error) {
	cfg, prefix, err := newConfig(endpoints, prefix, ttl, opts)
	if err != nil {
		return nil, err
	}
	client, ownsClient, err := cfg.newClient(endpoints)
	if err != nil {
		return nil, err
	}
	r := &register{
		name:       name,
		key:        prefix + name,
		ttl:        time.Duration(ttl) * time.Second,
		ownsClient: ownsClient,
		epoch:      time.Now(),
		changed:    newSignal(),
		value:      value,
		leases:     pb.NewLeaseClient(client.ActiveConnection()),
		keepAlives: make(chan keepAliveResult, maxKeepAliveStreams),
		requests:   make(chan request),
		loopDone:   make(chan struct{}),
	}
	r.watcher = buildWatcher(client, prefix, ttl, cfg)
	r.watcher.probeInterval = 0 // the keepalive answers do the probing
	// Register before listing, so the first snapshot already holds this member.
	ctx, cancel := context.WithTimeout(context.Background(), r.ttl)
	defer cancel()
	if name == "" {
		err = r.createNoName(ctx)
	} else {
		err = r.create(ctx)
	}
	if err == nil {
		if err = r.watcher.start(ctx); err != nil {
			r.revoke(context.Background())
		}
	}
	if err != nil {
		if ownsClient {
			client.Close()
		}
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	return r, nil
}

func (r *register) MyKey() string  { return r.key }
func (r *register) MyName() string { return r.name }

func (r *register) MyRevision() int64 { return r.revision.Load() }

// create grants a lease and puts the key if no live member holds the name and
// every extra comparison holds.
func (r *register) create(ctx context.Context, extra ...clientv3.Cmp) error {
	sent := time.Now()
	lease, err := r.client.Grant(ctx, int64(r.ttl/time.Second))
	if err != nil {
		return fmt.Errorf("biregister: grant lease: %w", err)
	}
	r.lease = lease.ID
	if err := r.putIfAbsent(ctx, extra...); err != nil {
		r.revoke(ctx)
		return err
	}
	r.extendLease(sent, lease.TTL)
	return nil
}

// createNoName registers under the current revision as name. The transaction
// also requires that nothing under the prefix changed since that revision was
// read: then every member that registered before has a smaller name, and
// concurrent callers that read the same revision retry with a newer one.
func (r *register) createNoName(ctx context.Context) error {
	for {
		resp, err := r.client.Get(ctx, r.prefix)
		if err != nil {
			return fmt.Errorf("biregister: read revision: %w", err)
		}
		revision := resp.Header.Revision
		r.name = fmt.Sprintf("%020d", revision)
		r.key = r.prefix + r.name
		err = r.create(ctx, clientv3.Compare(clientv3.ModRevision(r.prefix), "<", revision+1).WithPrefix())
		if !errors.Is(err, ErrNameTaken) {
			return err
		}
	}
}

// putIfAbsent puts the key with the current value on the current lease if no
// live member holds the name and every extra comparison holds; otherwise it
// fails with ErrNameTaken.
func (r *register) putIfAbsent(ctx context.Context, extra ...clientv3.Cmp) error {
	resp, err := r.client.Txn(ctx).
		If(append(extra, clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0))...).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(r.lease))).
		Commit()
	if err == nil && !resp.Succeeded {
		err = fmt.Errorf("%w: %q", ErrNameTaken, r.key)
	}
	if err != nil {
		return fmt.Errorf("biregister: register %q: %w", r.key, err)
	}
	r.registered(resp.Header.Revision)
	return nil
}

// registered records a new registration created at revision.
func (r *register) registered(revision int64) {
	r.revision.Store(revision)
	r.changed.notify()
}

// forget drops the registration, so the loop registers again.
func (r *register) forget() {
	r.lease = 0
	r.revision.Store(0)
	r.leaseDeadline.Store(0)
	r.changed.notify()
}

// revoke revokes the lease and forgets the registration. It is best effort: a
// lease it cannot revoke expires by itself within ttl, so it waits no longer.
func (r *register) revoke(parent context.Context) {
	if r.lease != 0 {
		ctx, cancel := context.WithTimeout(parent, r.ttl)
		_, err := r.client.Revoke(ctx, r.lease)
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.logger.Warn("biregister: revoke lease failed", "key", r.key, "err", err)
		}
	}
	r.forget()
}

// abandonLease forgets the registration and revokes its lease in the
// background, so that registering again does not wait for an etcd that may be
// down: the revoke is only there not to leave the lease to expire.
func (r *register) abandonLease() {
	lease := r.lease
	r.forget()
	r.attempts.Add(1)
	go func() {
		defer r.attempts.Done()
		ctx, cancel := context.WithTimeout(r.ctx, r.ttl)
		defer cancel()
		_, _ = r.client.Revoke(ctx, lease)
	}()
}

// run owns the registration: it keeps the lease alive, registers again when
// the registration is lost, and serves requests.
func (r *register) run() {
	defer close(r.loopDone)
	defer r.attempts.Wait()
	var retry backoff
	timer := time.NewTimer(r.keepAliveInterval())
	defer timer.Stop()
	for {
		snap := r.snap.Load()
		select {
		case <-r.ctx.Done():
			return
		case <-timer.C:
			timer.Reset(r.tick(&retry))
		case result := <-r.keepAlives:
			if next, ok := r.keepAliveDone(result, &retry); ok {
				timer.Reset(next)
			}
		case <-snap.replaced:
			if r.keyLost(r.snap.Load()) {
				r.logger.Warn("biregister: key deleted from outside, registering again", "key", r.key)
				r.abandonLease()
				timer.Reset(0)
			}
		case req := <-r.requests:
			req.reply <- req.do(req.ctx)
		}
		r.logLeadership()
	}
}

// logLeadership logs when leadership was gained or lost since the last look.
// The loop looks at least every ttl/3, so a lapse of the lease is logged
// within that, while AmILeader itself turns false on time.
func (r *register) logLeadership() {
	if leading := r.AmILeader(); leading != r.leading {
		r.leading = leading
		if leading {
			r.logger.Info("biregister: leadership gained", "key", r.key, "revision", r.revision.Load())
		} else {
			r.logger.Info("biregister: leadership lost", "key", r.key)
		}
	}
}

// tick sends a keepalive, or registers again if there is no lease; it returns
// when to tick next.
func (r *register) tick(retry *backoff) time.Duration {
	if r.lease != 0 {
		r.sendKeepAlive()
		return r.keepAliveInterval()
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.ttl)
	err := r.create(ctx)
	cancel()
	if err != nil {
		if r.ctx.Err() == nil {
			r.logger.Warn("biregister: registering again failed, retrying", "key", r.key, "err", err)
		}
		return retry.next()
	}
	r.logger.Info("biregister: registered again", "key", r.key, "revision", r.revision.Load())
	retry.reset()
	return 0 // keep alive at once: its answer tells the watcher if etcd was replaced
}

// keepAliveDone applies the outcome of a keepalive; it returns when to tick
// next if that must change.
func (r *register) keepAliveDone(result keepAliveResult, retry *backoff) (time.Duration, bool) {
	wasCurrent := result.from == r.currentStream()
	answered, ok := r.keepAliveAnswered(result)
	switch {
	case !ok:
		return 0, false // about a stream given up since
	case result.err != nil:
		if r.ctx.Err() != nil || !wasCurrent {
			return 0, false
		}
		r.logger.Warn("biregister: keepalive failed, retrying", "key", r.key, "err", result.err)
		return retry.next(), true
	}
	if result.resp.Header != nil {
		r.observe(result.resp.Header)
	}
	switch {
	case answered.lease != r.lease:
		return 0, false // about a lease given up since
	case result.resp.TTL <= 0:
		r.logger.Warn("biregister: lease lost, registering again", "key", r.key)
		r.forget()
		return 0, true
	}
	r.extendLease(answered.sent, result.resp.TTL)
	retry.reset()
	return 0, false
}

// keepAliveInterval is how often the lease is renewed: three tries per ttl, as
// etcd's own client does.
func (r *register) keepAliveInterval() time.Duration { return r.ttl / 3 }

// keyLost reports whether snap shows that the current registration is gone.
// A snapshot older than the registration cannot tell.
func (r *register) keyLost(snap *snapshot) bool {
	revision := r.revision.Load()
	if revision == 0 || snap.revision < revision {
		return false
	}
	m, ok := snap.lookup(r.name)
	return !ok || m.CreateRevision != revision
}

// call runs do on the loop and returns its result.
func (r *register) call(ctx context.Context, do func(ctx context.Context) error) error {
	if r.closing.Load() {
		return ErrClosed
	}
	req := request{ctx: ctx, do: do, reply: make(chan error, 1)}
	select {
	case r.requests <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.ctx.Done():
		return ErrClosed
	}
	return <-req.reply
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

func (r *register) Close() {
	r.closeOnce.Do(func() {
		r.closing.Store(true)
		r.cancel()
		<-r.loopDone
		r.revoke(context.Background())
		r.watcher.stop()
		if r.ownsClient {
			r.client.Close()
		}
	})
}

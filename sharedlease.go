// A shared lease: one etcd lease and one keepalive stream for any number of
// Registers, in one group or many, each registration repaired on its own.

package biregister

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Lease is one etcd lease that many Registers share (WithLease): one lease
// for etcd to keep and to expire, and one keepalive stream, however many
// Registers are on it. Each Register keeps its own key, name, create
// revision, fence, terms, readiness and metrics, and is repaired on its
// own: a key deleted or written from outside is put back alone. When the
// lease is lost — expired, revoked from outside, etcd replaced — the Lease
// grants another and every Register puts its key back on it, as many keys
// in one transaction as etcd takes (128 by default). Close ends every
// Register on the Lease, and their keys leave in one revision.
//
// A Lease is the unit of failure too: whatever ends the lease (a process
// paused past its ttl, a partition) ends every registration on it at
// once, as it would have ended each of their own.
type Lease struct {
	// Set by NewLease; never change.
	client  *clientv3.Client
	release func() // closes a client NewLease made
	ttl     time.Duration
	logger  *slog.Logger
	keeper  *leaseKeeper
	ctx     context.Context // ends run and the keeper
	cancel  context.CancelFunc
	done    chan struct{} // closed when run has returned
	// putsCtx bounds every put back; Close ends it first, so that run,
	// waiting on an etcd that does not answer, hears of the close at once.
	putsCtx  context.Context
	stopPuts context.CancelFunc
	// From any goroutine to run.
	attaching chan attachment
	// departing holds the Registers that left, for run to take off: a
	// queue rather than a channel, so that a Register leaves at once,
	// whatever run waits for. Appended by any goroutine, emptied by run.
	departing struct {
		sync.Mutex
		queue []departure
	}
	departed chan struct{} // 1 slot: departing has news for run
	puts     chan sharedPut
	settling chan chan clientv3.LeaseID
	closing  chan chan leaseClosing

	closeOnce sync.Once
	// users counts the Registers that reserved a key and have not left
	// (added to by run, done by each as it leaves): Close waits for them
	// before it releases the client they use.
	users sync.WaitGroup

	// Written by run, read by the keeper's callbacks: the Registers on the
	// lease, a new slice on every change.
	members atomic.Pointer[[]*register]
	// Written by run, read by a Register's loop when told of a loss.
	lostLease atomic.Int64

	// Owned by run.
	lease    clientv3.LeaseID // 0 while there is none
	clock    *leaseClock
	granting grant
	// putsPerTxn is the most keys one transaction puts back: maxPutsPerTxn,
	// or less once etcd refused a transaction that big.
	putsPerTxn int
	// owed counts the Registers that have not put their key back since the
	// lease was last lost: puts gather until all have asked (see gather).
	owed   int
	keys   map[string]bool // of the Registers on the lease, and of those joining
	closed bool            // Close took the Registers: none joins any more
}

// maxPutsPerTxn is how many keys one transaction puts back at most: etcd
// takes 128 operations per transaction by default (--max-txn-ops), and a
// put back costs one comparison, one put and one read of each key.
const maxPutsPerTxn = 128

// gatherWait bounds how long, once the lease is lost, the Lease waits for
// every Register to ask for its key back before it puts back those that
// have: each asks as soon as its loop hears of the loss (microseconds
// apart; milliseconds for hundreds on a busy machine), and one transaction
// then carries up to 128 of them. Only a Register that never asks (closing
// meanwhile) makes the others wait that long.
const gatherWait = 500 * time.Millisecond

// leaseClosing is what Close takes from run: the Registers still on the
// lease, the lease, and a grant whose answer never came.
type leaseClosing struct {
	registers []*register
	lease     clientv3.LeaseID
	grant     clientv3.LeaseID
}

// NewLease grants a lease of ttl seconds for Registers to share
// (WithLease). It returns with an error if etcd cannot grant it within ttl
// seconds. The options that shape the client, the logger and the meters
// apply (WithClient, WithTLS, WithAuth, WithDialTimeout, WithLogger,
// WithMeterProvider: the Lease records its keepalives' round trips, without
// a prefix or name); the Registers on the Lease use its client.
func NewLease(endpoints []string, ttl int64, opts ...Option) (*Lease, error) {
	cfg, err := newLeaseConfig(endpoints, ttl, opts)
	if err != nil {
		return nil, err
	}
	client, release, err := cfg.newClient(endpoints)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	putsCtx, stopPuts := context.WithCancel(ctx)
	l := &Lease{
		putsCtx:    putsCtx,
		stopPuts:   stopPuts,
		client:     client,
		release:    release,
		ttl:        cfg.ttl,
		logger:     cfg.logger,
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		attaching:  make(chan attachment),
		departed:   make(chan struct{}, 1),
		puts:       make(chan sharedPut),
		settling:   make(chan chan clientv3.LeaseID),
		closing:    make(chan chan leaseClosing),
		putsPerTxn: maxPutsPerTxn,
		keys:       map[string]bool{},
	}
	l.members.Store(&[]*register{})
	in, err := newInstruments(cfg.meters)
	if err != nil {
		l.logger.Warn("biregister: metrics not all available", "err", err)
	}
	// Its keepalives' round trips, without a prefix or name: they are every
	// Register's on the Lease.
	l.keeper = newLeaseKeeper(ctx, client, l.ttl, "(shared lease)", l.observe, l.revived, newRecorder(in), l.logger)
	go l.keeper.run(ctx)
	granting, cancelGrant := context.WithTimeout(ctx, l.ttl)
	defer cancelGrant()
	if err := l.grant(granting); err != nil {
		if id := l.granting.unanswered(); id != 0 {
			revokeGrant(client, id, constructorLeaveWait)
		}
		cancel()
		<-l.keeper.done
		release()
		return nil, err
	}
	go l.run()
	return l, nil
}

// newLeaseConfig checks NewLease's arguments: those of every constructor
// but the prefix, and WithLease, which has no meaning here.
func newLeaseConfig(endpoints []string, ttl int64, opts []Option) (*config, error) {
	cfg, _, err := newConfig(endpoints, "/", ttl, opts)
	if err == nil && cfg.lease != nil {
		err = fmt.Errorf("%w: WithLease given to NewLease", ErrInvalidArgument)
	}
	return cfg, err
}

// Close ends every Register on the Lease and revokes the lease: their keys
// leave in one revision, each as a graceful leave (Change.Left). It then
// releases the client if NewLease made it. Close is idempotent; a
// Register's own Close, before or after, deletes only its key. Close of a
// Lease NewLease did not make (nil, or a zero Lease) does nothing.
func (l *Lease) Close() {
	if l == nil || l.done == nil {
		return
	}
	l.closeOnce.Do(func() {
		l.stopPuts()
		taken := make(chan leaseClosing, 1)
		l.closing <- taken
		c := <-taken
		// Every loop stops first: none may put its key back after the revoke.
		stopped := make([]*register, 0, len(c.registers))
		for _, r := range c.registers {
			r.closeOnce.Do(func() {
				r.stop()
				stopped = append(stopped, r)
			})
		}
		wait := closeWait(l.ttl)
		if c.lease != 0 {
			l.markLeaving(stopped, c.lease, wait)
			revoke(context.Background(), l.client, l.logger, "(shared lease)", c.lease, wait)
		}
		if c.grant != 0 {
			revokeGrant(l.client, c.grant, wait)
		}
		for _, r := range stopped {
			r.lease, r.clock = 0, nil // revoked: the Register leaves nothing of its own
			r.finish(false)
		}
		// Registers closing by themselves meanwhile, and constructors, which
		// the Lease now refuses, finish with the client.
		l.users.Wait()
		l.cancel()
		<-l.done
		<-l.keeper.done
		l.release()
	})
}

// markLeaving writes the graceful-leave marker (leaving.go) of every
// registration in registers on lease, as many in one transaction as etcd
// takes (halving a transaction it refuses as too big): the revoke that
// follows deletes each key after its marker, or with it, so that every
// watcher reads a leave. Best effort within wait: a key whose marker did
// not go in reads as a loss.
func (l *Lease) markLeaving(registers []*register, lease clientv3.LeaseID, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait/2)
	defer cancel()
	var ops []clientv3.Op
	for _, r := range registers {
		if reg := r.current.Load(); reg != nil {
			ops = append(ops, clientv3.OpPut(leavingKey(r.watcher.prefix, r.name), leavingValue(reg.revision), clientv3.WithLease(lease)))
		}
	}
	size := maxPutsPerTxn
	for len(ops) > 0 {
		n := min(size, len(ops))
		_, err := l.client.Txn(ctx).Then(ops[:n]...).Commit()
		switch {
		case err == nil:
			ops = ops[n:]
		case tooBig(err) && n > 1:
			size = n / 2
		default:
			l.logger.Warn("biregister: marking the shared lease's keys as leaving failed", "err", err)
			return
		}
	}
}

// run owns the lease: it grants it, lets Registers join and leave, puts
// their keys back on it, and tells them when it is lost. The keeper renews
// it meanwhile.
func (l *Lease) run() {
	defer close(l.done)
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.keeper.lost:
			l.lost(clientv3.LeaseID(l.keeper.lostLease.Load()))
		case a := <-l.attaching:
			l.takeDepartures() // a key just freed may be reserved again
			a.reply <- l.attach(a)
		case <-l.departed:
			l.takeDepartures()
		case p := <-l.puts:
			l.putBack(p)
		case reply := <-l.settling:
			reply <- l.lease
		case taken := <-l.closing:
			l.closed = true
			taken <- leaseClosing{registers: *l.members.Load(), lease: l.lease, grant: l.granting.unanswered()}
		}
	}
}

// grant grants a lease and hands it to the keeper.
func (l *Lease) grant(ctx context.Context) error {
	id, clock, err := grantLease(ctx, l.client, l.ttl, &l.granting)
	if err != nil {
		return err
	}
	l.lease, l.clock = id, clock
	l.keeper.keep(keptLease{id: id, clock: clock})
	return nil
}

// lost forgets id, if it is the lease, and tells every Register: each puts
// its key back, on the next lease.
func (l *Lease) lost(id clientv3.LeaseID) {
	if id == 0 || id != l.lease {
		return
	}
	members := *l.members.Load()
	l.logger.Warn("biregister: shared lease lost, putting every key back", "registers", len(members))
	l.keeper.keep(keptLease{})
	l.clock.clear()
	l.lease, l.clock = 0, nil
	l.owed = len(members)
	l.lostLease.Store(int64(id))
	for _, r := range members {
		select {
		case r.leaseLost <- struct{}{}:
		default:
		}
	}
}

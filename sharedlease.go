// A shared lease: one etcd lease and one keepalive stream for any number of
// Registers, in one group or many, each registration repaired on its own.

package biregister

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
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
	// users counts the Registers that reserved a key and have not left:
	// Close waits for them before it releases the client they use.
	users sync.WaitGroup
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

// attachment is a Register joining the Lease — reserving its key before
// it registers, or, registered on lease, becoming one of its Registers —
// and where to say whether it may.
type attachment struct {
	r       *register
	lease   clientv3.LeaseID // the lease r registered on; 0 while reserving
	reserve bool
	reply   chan error
}

// sharedPut asks run to put key with value on the lease where the key is
// absent.
type sharedPut struct {
	key, value string
	deadline   time.Time // the asker's; zero: none
	reply      chan sharedPutAnswer
}

// sharedPutAnswer is what became of a sharedPut, and the lease it was put
// on (also with an error: a put etcd may have applied is on that lease).
type sharedPutAnswer struct {
	lease   clientv3.LeaseID
	clock   *leaseClock
	outcome putOutcome
	err     error
}

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
			r.finish()
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

// attach reserves a's key for its Register, unless the Lease is closed or
// another Register on it has that key (a key on the lease would read as
// the Register's own), or makes the Register one of the Lease's. A
// Register that registered on a lease lost since is told at once.
func (l *Lease) attach(a attachment) error {
	switch {
	case l.closed:
		return fmt.Errorf("%w: the Lease", ErrClosed)
	case a.reserve && l.keys[a.r.key]:
		return fmt.Errorf("%w: %s, by another Register on the same Lease", ErrNameTaken, quoteKey(a.r.key))
	case a.reserve:
		l.keys[a.r.key] = true
		l.users.Add(1)
		return nil
	}
	l.setMembers(append(slices.Clone(*l.members.Load()), a.r))
	if a.lease != l.lease {
		a.r.leaseLost <- struct{}{} // its own slot, empty until now
	}
	return nil
}

func (l *Lease) setMembers(members []*register) { l.members.Store(&members) }

// reserve keeps r's key for r while it registers: no other Register on
// the Lease may have it.
func (l *Lease) reserve(r *register) error {
	return l.ask(attachment{r: r, reserve: true})
}

// join makes r, registered on lease, one of the Lease's Registers: told of
// losses, and closed with it.
func (l *Lease) join(r *register, lease clientv3.LeaseID) error {
	return l.ask(attachment{r: r, lease: lease})
}

func (l *Lease) ask(a attachment) error {
	a.reply = make(chan error, 1)
	select {
	case l.attaching <- a:
		return <-a.reply
	case <-l.done:
		return fmt.Errorf("%w: the Lease", ErrClosed)
	}
}

// settled returns the lease keys are put on now, once run has finished
// the puts it had under way, or 0 once the Lease is closed (its revoke
// took every key on it); false if run did not answer within wait.
func (l *Lease) settled(wait time.Duration) (clientv3.LeaseID, bool) {
	reply := make(chan clientv3.LeaseID, 1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case l.settling <- reply:
		return <-reply, true
	case <-l.done:
		return 0, true
	case <-timer.C:
		return 0, false
	}
}

// departure is a Register that left the Lease. abandoned: it left
// unregistered, with a put of its key perhaps still under way, whose key
// run deletes if it finds it on the lease.
type departure struct {
	r         *register
	abandoned bool
}

// leave takes r off the Lease at once, and frees its key, as run will see.
func (l *Lease) leave(r *register, abandoned bool) {
	l.departing.Lock()
	l.departing.queue = append(l.departing.queue, departure{r: r, abandoned: abandoned})
	l.departing.Unlock()
	select {
	case l.departed <- struct{}{}:
	default:
	}
	l.users.Done()
}

// takeDepartures takes off the Registers that left: it deletes the key an
// abandoned one may have left on the lease before it frees the key, so
// that it cannot be another Register's yet.
func (l *Lease) takeDepartures() {
	l.departing.Lock()
	gone := l.departing.queue
	l.departing.queue = nil
	l.departing.Unlock()
	if len(gone) == 0 {
		return
	}
	for _, d := range gone {
		if d.abandoned && l.lease != 0 {
			ctx, cancel := context.WithTimeout(l.putsCtx, closeWait(l.ttl))
			_, err := l.client.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(d.r.key), "=", l.lease)).Then(clientv3.OpDelete(d.r.key)).Commit()
			cancel()
			if err != nil {
				l.logger.Warn("biregister: deleting the key of a Register that left unregistered failed", "key", d.r.key, "err", err)
			}
		}
		delete(l.keys, d.r.key)
	}
	l.setMembers(slices.DeleteFunc(slices.Clone(*l.members.Load()), func(m *register) bool {
		return slices.ContainsFunc(gone, func(d departure) bool { return d.r == m })
	}))
}

// observe hands the header of a keepalive's answer to every Register's
// watcher, as a Register's own keeper does.
func (l *Lease) observe(header *etcdserverpb.ResponseHeader) {
	for _, r := range *l.members.Load() {
		r.watcher.observe(header)
	}
}

// revived wakes every Register's loop: the lease came back to life.
func (l *Lease) revived() {
	for _, r := range *l.members.Load() {
		r.changed.notify()
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

// putShared puts the Register's key where it is absent, on the shared
// lease, which it takes on.
func (r *register) putShared(ctx context.Context) (putOutcome, error) {
	p := sharedPut{key: r.key, value: r.value, reply: make(chan sharedPutAnswer, 1)}
	p.deadline, _ = ctx.Deadline()
	select {
	case r.shared.puts <- p:
	case <-ctx.Done():
		return putOutcome{}, ctx.Err()
	case <-r.shared.done:
		return putOutcome{}, fmt.Errorf("%w: the Lease", ErrClosed)
	}
	select {
	case a := <-p.reply:
		if a.lease != 0 {
			r.lease, r.clock = a.lease, a.clock
		}
		return a.outcome, a.err
	case <-ctx.Done():
		return putOutcome{}, ctx.Err()
	}
}

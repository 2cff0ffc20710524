// The Register: its API, its state and who owns each part of it, and the
// reads, which never wait for etcd.

package biregister

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

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
	// has lost its registration, whatever it believes. Take it when you decide
	// to act, before AmILeader: a fence taken after the work belongs to the
	// registration of that moment, which may have been made meanwhile (a
	// process paused past its lease registers again on resuming). A Term's
	// Fence is taken when the term begins.
	Fence() clientv3.Cmp
	// WaitLeader blocks until this member leads (nil), ctx ends (ctx.Err()) or
	// the Register closes (ErrClosed). A member that leads when it is called
	// gets nil at once, even with a ctx that has ended.
	WaitLeader(ctx context.Context) error
	// Resign gives up leadership but stays registered: the member registers
	// again under the same name and queues behind every other member.
	Resign(ctx context.Context) error
	// SetValue changes this member's value in place, on the same lease.
	SetValue(ctx context.Context, value string) error

	// WaitTerm blocks until this member leads and returns its current term
	// of leadership: a context that ends the moment the member can no longer
	// be certain it leads (see Term). ctx bounds the wait only, as it does a
	// dial: WaitTerm returns ctx.Err() if ctx ends first, and ErrClosed if
	// the Register closes; once returned, the term lasts as long as the
	// leadership, whatever becomes of ctx. A member that leads when it is
	// called gets its term at once, even with a ctx that has ended. Calls
	// during one term return the same Term.
	WaitTerm(ctx context.Context) (*Term, error)
	// Lead calls work once per term of leadership, each time this member
	// leads, until ctx ends (ctx.Err()) or the Register closes (ErrClosed).
	// The Term work gets ends with its term or with ctx, and carries ctx's
	// values. work should return when it ends; if work returns earlier, Lead
	// waits for the term to end before it waits for the next.
	Lead(ctx context.Context, work func(term *Term)) error
}

// register is a Register. Its goroutine, run (registerloop.go), owns the
// registration: only it grants, creates, deletes and revokes, and it serves
// the requests of other goroutines (SetValue, Resign) itself. The lease is
// renewed by another goroutine, the keeper (keeper.go), so that no request
// waiting on etcd ever delays a keepalive.
//
// The registration changes hands twice. The constructor registers before the
// loop exists, so lease and value are its own until `go r.run()`, which
// hands them to the loop. Close cancels the loop and waits for loopDone, and
// only then revokes: from then on they are Close's.
type register struct {
	// Set by the constructor; never change after it returns. (NewRegisterNoName
	// picks name and key while it registers.)
	watcher *watcher // the group's cache; it owns the etcd client
	client  *clientv3.Client
	name    string
	key     string
	ttl     time.Duration
	keeper  *leaseKeeper // nil on a shared lease
	shared  *Lease       // the Lease the registration is on; nil: a lease of its own
	// leaseLost tells the loop that lostLease changed: from the keeper, or
	// from the shared Lease.
	leaseLost chan struct{}
	lostLease *atomic.Int64   // the lease last lost
	requests  chan request    // from any goroutine to the loop
	loopDone  chan struct{}   // closed when run has returned
	ctx       context.Context // ends the loop, the keeper and everything they started
	cancel    context.CancelFunc
	metrics   *recorder // with the prefix and the name
	// Unregisters the gauges of the registration; called by Close.
	stopObserving func()

	// Written by the loop (the constructor before it), read by any goroutine.
	current atomic.Pointer[registration] // nil while there is none
	changed signal                       // notified whenever current changes
	// Since the watcher's epoch: when the registration was made, or, while
	// there is none, when the last one was lost.
	since atomic.Int64

	// Written by any goroutine that asks about leadership, read by the loop.
	leadershipAsked atomic.Bool

	// Written by Close, read by any goroutine.
	closing   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{} // closed once Close, or the Lease's, has finished

	// The current tenure (see term.go): stored by WaitTerm, ended by the
	// loop, its timer, or any goroutine that finds it over.
	tenure atomic.Pointer[tenure]

	// Owned by the loop (see above for the handover).
	lease    clientv3.LeaseID // 0 while there is none
	clock    *leaseClock      // the lease's
	granting grant            // a grant whose answer has not come yet, or none
	value    string           // the value etcd last accepted for the key
	// unsure holds the values whose writes got no answer since etcd last
	// confirmed one, the latest maxUnsure: etcd may hold any of them, and
	// the key holding one is then still ours (see mayHold).
	unsure []string
	// written is the revision of the registration's last write of the key:
	// a view of the same incarnation of etcd that applied it tells what
	// became of the key.
	written   int64
	writtenIn int64 // the view's incarnation when written was set
	// squatter is the mod revision of a key without a lease at our name, to
	// delete before registering again; 0 if none.
	squatter int64
	// resignOwed: a Resign whose delete got no answer; the loop deletes
	// until it knows, and the registration leads no more meanwhile.
	resignOwed bool
	// The clusters the registrations were made in: a registration in an etcd
	// that replaced another must not reuse a create revision that one of the
	// other's had, or a fence of its terms would hold again (see reused).
	cluster       uint64         // of the last registration
	here          []int64        // create revisions of the registrations made in it
	elsewhere     map[int64]bool // those made in clusters since replaced
	loggedLeading bool           // what the log and the metrics last said of leadership
	ledRevision   int64          // the registration that led, when they last said it did
	announced     bool           // that leadership was said at Info
	lostCause     cause          // why the registration was lost: the next one's cause
}

// registration is one registration of the key, as the loop publishes it:
// readers take its revision and its lease's deadline as one value, so that
// a registration made meanwhile never lends its lease to an older one.
type registration struct {
	revision int64       // the key's create revision
	cluster  uint64      // the etcd cluster it was made in
	clock    *leaseClock // of its lease: until when it is certainly alive
	resigned bool        // Resign gave up its leadership: it leads no more
}

// request is work on the registration that the loop does for another
// goroutine, so that only the loop ever changes the registration.
type request struct {
	do    func(ctx context.Context) error
	reply chan error
}

func (r *register) MyKey() string  { return r.key }
func (r *register) MyName() string { return r.name }

func (r *register) MyRevision() int64 {
	if reg := r.current.Load(); reg != nil {
		return reg.revision
	}
	return 0
}

// The Watcher's reads and feeds, forwarded: a named field rather than an
// embedded one, so that every method a Register has is one it declares.

func (r *register) GetAll() map[string]string         { return r.watcher.GetAll() }
func (r *register) GetNames() []string                { return r.watcher.GetNames() }
func (r *register) GetValues() []string               { return r.watcher.GetValues() }
func (r *register) GetValueByName(name string) string { return r.watcher.GetValueByName(name) }
func (r *register) GetLeader() (name, val string)     { return r.watcher.GetLeader() }
func (r *register) Members() []Member                 { return r.watcher.Members() }
func (r *register) Updated() <-chan struct{}          { return r.watcher.Updated() }
func (r *register) View() View                        { return r.watcher.View() }
func (r *register) Changes() <-chan Change            { return r.watcher.Changes() }
func (r *register) Closed() <-chan struct{}           { return r.watcher.Closed() }
func (r *register) EtcdClient() *clientv3.Client      { return r.client }
func (r *register) Prefix() string                    { return r.watcher.prefix }

// The Watcher: its API, its state and who owns each part of it, and the
// reads, which only ever load the current snapshot.

package biregister

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watcher keeps a live, local cache of the members of a group.
//
// Every read is served from memory and never waits for etcd. GetNames and
// GetValues list members in ascending create revision, the leader first;
// Members returns both in one consistent snapshot.
type Watcher interface {
	// GetAll returns every member's value by name, in a map the caller owns.
	GetAll() map[string]string
	// GetNames returns the members' names, oldest (the leader) first.
	GetNames() []string
	// GetValues returns the members' values in the order of GetNames.
	GetValues() []string
	// GetValueByName returns the value of the named member, or "" if there is none.
	GetValueByName(name string) string
	// GetLeader returns the oldest member, or ("", "") for an empty group.
	GetLeader() (name, val string)
	// Members returns the members, oldest first, from one consistent snapshot.
	Members() []Member
	// Updated returns a channel that is closed at the next change of the
	// cache. It is a feed of its own, for code that follows the group without
	// taking anything from Changes: call Updated, then read the cache, then
	// wait on the channel, so that no change between the two is missed.
	// After Close it returns a closed channel: check Closed to stop.
	Updated() <-chan struct{}
	// View returns the current view of the group: one immutable snapshot
	// whose Diff with an earlier view says what changed since, at a cost
	// proportional to the change.
	View() View

	// Close stops watching, closes Changes and Closed, and releases everything
	// the Watcher started. It is idempotent and safe from any goroutine.
	Close()
	// Changes delivers the members present at start as PUTs, then every change
	// in revision order. The cache already reflects a change when it is
	// delivered. It is closed by Close.
	Changes() <-chan Change
	// Closed is closed when the Watcher is closed.
	Closed() <-chan struct{}

	// Status returns what the Watcher knows of itself, without waiting for
	// anything.
	Status() Status
	// Ready returns nil while the Watcher (or Register) can be relied on,
	// and an error that wraps ErrNotReady and says why otherwise; see
	// ReadyHandler for probes over HTTP.
	Ready() error

	// EtcdClient returns the etcd client in use.
	EtcdClient() *clientv3.Client
	// Prefix returns the group's prefix, with its trailing '/'.
	Prefix() string
}

// Status is what a Watcher or a Register knows of itself. Reading it locks
// nothing and asks etcd nothing. The registration fields are zero for a
// Watcher.
type Status struct {
	// Current reports whether the cache is known to be current: its watch is
	// up, and etcd confirmed the stream recently enough (see Ready).
	Current bool
	// Revision is the etcd revision the cache reflects.
	Revision int64
	// LastAnswer is when etcd last answered on the watch: a watch response,
	// a listing, a check of the stream. A Register's keepalive answers do
	// not count: another member than the watch's may give them.
	LastAnswer time.Time
	// Members is the number of members in the cache.
	Members int
	// Listings counts the listings of the group so far, the first included.
	Listings int64
	// Resyncs counts the OpResync changes delivered so far: each stands for
	// changes a consumer that fell behind did not get.
	Resyncs int64
	// Suspects is the number of members lost that are held as suspects
	// (see Protection).
	Suspects int
	// Protected is since when mass-loss protection is on, or the zero time
	// while it is off; Protections counts the times it turned on.
	Protected   time.Time
	Protections int64

	// Registered reports whether the Register holds a registration; it is
	// false while the Register registers again.
	Registered bool
	// Since is when the current registration was made or, while Registered
	// is false, when the last one was lost.
	Since time.Time
	// CreateRevision is the create revision of the current registration, or
	// 0 (MyRevision).
	CreateRevision int64
	// LeaseLeft is how long the lease is certainly alive from now: from the
	// send of the last acknowledged keepalive, as AmILeader counts. Zero once
	// that has passed, or without a registration.
	LeaseLeft time.Duration
	// Leading reports whether this member leads (AmILeader).
	Leading bool
}

// watcher is a Watcher, and the cache inside every Register. Its goroutine,
// run (watchloop.go), owns the cache: it is the only writer of snap and the
// only user of feed and clusterID. start hands them to it: it lists the
// group and fills them before the goroutine begins.
type watcher struct {
	// Set when the watcher is built; never change.
	client        *clientv3.Client
	releaseClient func() // closes the client if the library made it (see newClient)
	prefix        string
	timeout       time.Duration // bound of one etcd request
	pageBytes     int           // about the most one listing response holds (see listing.go)
	logger        *slog.Logger
	probe         probeTimes                        // see probe.go
	headers       chan *etcdserverpb.ResponseHeader // from any goroutine to the loop (see observe)
	done          chan struct{}                     // closed when run has returned
	epoch         time.Time                         // the monotonic origin of heardAt
	metrics       *recorder
	// Set before start: a Register's own key, whose state the views keep
	// (snapshot.own); "" for a Watcher.
	ownKey string

	// Written by the loop, read by any goroutine.
	snap               atomic.Pointer[snapshot]
	following          atomic.Bool  // listed, and a watch up or on its way; false while listing again (see Status)
	progressUnanswered atomic.Bool  // progress requests go unanswered on the stream (see probe.go)
	listings           atomic.Int64 // listings so far
	// When etcd last answered, since epoch: written by the loop, and by
	// observe from any goroutine.
	heardAt atomic.Int64

	// Owned by the loop.
	feed      *feed  // the loop sends and queues; the user receives from feed.ch
	guard     *guard // holds the group's losses; nil without protection
	clusterID uint64 // the cluster the cache was listed from
	stalls    int    // watch streams given up as stalled (see watchContext)

	// Set by start; called by Close once the loop ended: unregisters the
	// members gauge.
	stopObserving func()

	// Set by start; Close cancels.
	ctx       context.Context // ends the loop
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// newWatcher returns a watcher that is not started yet. releaseClient is
// called by Close, or by the constructor if start fails.
func newWatcher(client *clientv3.Client, releaseClient func(), prefix string, cfg *config) *watcher {
	logger := cfg.logger.With("prefix", prefix)
	in, err := newInstruments(cfg.meters)
	if err != nil {
		logger.Warn("biregister: metrics not all available", "err", err)
	}
	w := &watcher{
		epoch:         time.Now(),
		metrics:       newRecorder(in, attrPrefix.String(prefix)),
		stopObserving: func() {},
		client:        client,
		releaseClient: releaseClient,
		prefix:        prefix,
		timeout:       cfg.ttl,
		pageBytes:     listPageBytes,
		logger:        logger,
		probe:         cfg.probe,
		headers:       make(chan *etcdserverpb.ResponseHeader, 1),
		done:          make(chan struct{}),
		feed:          newFeed(cfg.bufferSize),
		guard:         cfg.guard,
	}
	w.snap.Store(emptySnapshot(0))
	return w
}

// publish makes next the snapshot readers see and wakes whoever waits for a
// newer one.
func (w *watcher) publish(next *snapshot) {
	if prev := w.snap.Swap(next); prev != next {
		close(prev.replaced)
	}
}

func (w *watcher) GetAll() map[string]string {
	s := w.snap.Load()
	all := make(map[string]string, s.size())
	for m := range s.byName() {
		all[m.Name] = m.Value
	}
	return all
}

func (w *watcher) GetNames() []string {
	s := w.snap.Load()
	return slices.AppendSeq(make([]string, 0, s.size()), s.memberNames())
}

func (w *watcher) GetValues() []string {
	s := w.snap.Load()
	values := make([]string, 0, s.size())
	for m := range s.members() {
		values = append(values, m.Value)
	}
	return values
}

func (w *watcher) GetValueByName(name string) string {
	m, _ := w.snap.Load().lookup(name)
	return m.Value
}

func (w *watcher) GetLeader() (name, val string) {
	m := w.snap.Load().leader
	return m.Name, m.Value
}

func (w *watcher) Members() []Member {
	s := w.snap.Load()
	return slices.AppendSeq(make([]Member, 0, s.size()), s.members())
}

func (w *watcher) Updated() <-chan struct{} { return w.snap.Load().replaced }

func (w *watcher) View() View { return View{w.snap.Load()} }

func (w *watcher) Changes() <-chan Change { return w.feed.ch }

func (w *watcher) Closed() <-chan struct{} { return w.done }

func (w *watcher) EtcdClient() *clientv3.Client { return w.client }

func (w *watcher) Prefix() string { return w.prefix }

// Close ends the loop, waits for it, and releases the client. A Register
// calls it last, once it no longer needs the client.
func (w *watcher) Close() {
	w.closeOnce.Do(func() {
		w.cancel()
		<-w.done
		w.stopObserving()
		w.releaseClient()
	})
}

// list reads every member of the group at one revision, each page within
// the watcher's timeout; the cache's names plan a re-listing.
func (w *watcher) list(ctx context.Context) (listing, error) {
	spec := lister{client: w.client, prefix: w.prefix, ownKey: w.ownKey, pageBytes: w.pageBytes, pageTimeout: w.timeout}
	return listGroup(ctx, spec, w.snap.Load(), w.logger)
}

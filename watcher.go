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

const (
	// listPageSize bounds one range response of a listing, so that a group of
	// any size is read without one giant message.
	listPageSize = 1000
	// probeInterval is how often an idle Watcher asks etcd for a progress
	// notification: one message that proves the stream is alive and that etcd
	// was not replaced or rewound behind the same address.
	probeInterval = 5 * time.Second
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
	Updated() <-chan struct{}

	// Close stops watching, closes Changes and Closed, and releases everything
	// the Watcher started. It is idempotent and safe from any goroutine.
	Close()
	// Changes delivers the members present at start as PUTs, then every change
	// in revision order. The cache already reflects a change when it is
	// delivered. It is closed by Close.
	Changes() <-chan Change
	// Closed is closed when the Watcher is closed.
	Closed() <-chan struct{}

	// EtcdClient returns the etcd client in use.
	EtcdClient() *clientv3.Client
	// Prefix returns the group's prefix, with its trailing '/'.
	Prefix() string
}

// NewWatcher starts watching the group under prefix. It returns once the cache
// holds the group's current members, or with an error if etcd cannot be read
// within ttl seconds.
func NewWatcher(etcdServs []string, prefix string, ttl int64, opts ...Option) (Watcher, error) {
	cfg, prefix, err := newConfig(etcdServs, prefix, ttl, opts)
	if err != nil {
		return nil, err
	}
	client, ownsClient, err := cfg.newClient(etcdServs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ttl)*time.Second)
	defer cancel()
	w := buildWatcher(client, prefix, ttl, cfg)
	if err := w.start(ctx); err != nil {
		if ownsClient {
			client.Close()
		}
		return nil, err
	}
	w.ownsClient = ownsClient
	return w, nil
}

type watcher struct {
	client     *clientv3.Client
	ownsClient bool
	prefix     string
	timeout    time.Duration // bound of one etcd request
	logger     *slog.Logger
	// probeInterval is 0 for a Register's watcher: the Register's keepalive
	// answers carry the same news (see observe), at no extra cost.
	probeInterval time.Duration
	headers       chan *etcdserverpb.ResponseHeader // see observe

	snap      atomic.Pointer[snapshot]
	feed      *feed  // owned by run
	clusterID uint64 // owned by run: the cluster the cache was listed from

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{} // closed when run has returned
	closeOnce sync.Once
}

// buildWatcher returns a Watcher that is not started yet.
func buildWatcher(client *clientv3.Client, prefix string, ttl int64, cfg *config) *watcher {
	w := &watcher{
		client:  client,
		prefix:  prefix,
		timeout: time.Duration(ttl) * time.Second,
		logger:  cfg.logger.With("prefix", prefix),
		feed:    newFeed(cfg.bufferSize),
		done:    make(chan struct{}),

		probeInterval: cfg.probeInterval,
		headers:       make(chan *etcdserverpb.ResponseHeader, 1),
	}
	w.snap.Store(newSnapshot(byName{}, byCreate{}, 0))
	return w
}

// start lists the group (within ctx), queues its members as the first changes
// and starts the goroutine that follows the group.
func (w *watcher) start(ctx context.Context) error {
	listed, header, err := w.list(ctx)
	if err != nil {
		return fmt.Errorf("biregister: list %q: %w", w.prefix, err)
	}
	w.clusterID = header.ClusterId
	first, changes := w.snap.Load().replace(listed, header.Revision)
	w.snap.Store(first)
	for _, c := range changes {
		w.feed.push(c)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return nil
}

// list reads every member at one revision, page by page, and returns the
// header of the first page.
func (w *watcher) list(ctx context.Context) ([]Member, *etcdserverpb.ResponseHeader, error) {
	end := clientv3.GetPrefixRangeEnd(w.prefix)
	key := w.prefix
	var members []Member
	var header *etcdserverpb.ResponseHeader
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if header != nil {
			// Every page reads the first page's revision, so the listing is one
			// consistent snapshot however long it takes.
			opts = append(opts, clientv3.WithRev(header.Revision))
		}
		resp, err := w.client.Get(ctx, key, opts...)
		if err != nil {
			return nil, nil, err
		}
		if header == nil {
			header = resp.Header
		}
		for _, kv := range resp.Kvs {
			if m, ok := newMember(w.prefix, kv); ok {
				members = append(members, m)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return members, header, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// run owns the cache and the feed: it follows the watch and, whenever the
// watch fails, lists the group again and watches from the listed revision.
func (w *watcher) run() {
	defer close(w.done)
	defer close(w.feed.ch)
	// A closed Watcher knows no members: readers must not act on a frozen view.
	defer w.publish(newSnapshot(byName{}, byCreate{}, 0))
	from := w.snap.Load().revision + 1
	for {
		unanswered := w.follow(from)
		if w.ctx.Err() != nil {
			return
		}
		if unanswered {
			// etcd defers progress answers to a watch that starts beyond its
			// current revision (server watchable_store.go, progressIfSync),
			// as every watch of an idle store does; one that starts at the
			// cache's own revision gets answers (that revision's events come
			// again and are skipped). Not so from the start: such a watch is
			// "unsynced" at first and gets its first events up to 100 ms
			// late. If even that watch got no answer, another watch on the
			// client's stream holds them back, or the stream stalled: one
			// read tells.
			if from > w.snap.Load().revision || w.confirm() {
				from = w.snap.Load().revision
				w.logger.Debug("biregister: progress request unanswered, watching again", "revision", from)
				continue
			}
		}
		w.relist()
		from = w.snap.Load().revision + 1
	}
}

// follow applies watch responses, from revision from on, until the watch
// fails, stalls or follows an etcd that was replaced or rewound, or until the
// Watcher closes. It returns true if the watch only left a progress request
// unanswered: the cache is still good, a new watch may resume from it.
func (w *watcher) follow(from int64) (unanswered bool) {
	// WithRequireLeader cancels the watch when its member loses the cluster's
	// leader, instead of leaving it silently serving nothing.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	defer cancel()
	// Watch returns only once etcd has created the watch: bound that like
	// any other request, so that a stalled stream is not waited on forever.
	giveUp := time.AfterFunc(w.timeout, cancel)
	events := w.client.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(from),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	if !giveUp.Stop() {
		if w.ctx.Err() == nil {
			w.logger.Warn("biregister: watch not created in time, listing again")
		}
		return false
	}
	var probe <-chan time.Time
	if w.probeInterval > 0 {
		ticker := time.NewTicker(w.probeInterval)
		defer ticker.Stop()
		probe = ticker.C
	}
	heard, requested := false, false
	for {
		select {
		case <-w.ctx.Done():
			return false
		case w.feed.pending() <- w.resyncChange():
			w.feed.resynced()
		case resp, ok := <-events:
			if !ok {
				return false
			}
			heard = true
			if !w.applyResponses(takeWaiting(resp, events)) {
				return false
			}
		case header := <-w.headers:
			if w.rewound(header.GetClusterId(), header.GetRevision()) {
				return false
			}
		case <-probe:
			switch {
			case heard:
				// The stream spoke during the last interval: it is alive.
				heard, requested = false, false
			case !requested:
				// The client resumes a broken stream by itself and says
				// nothing; a progress request is answered on whatever stream
				// now serves us.
				probeCtx, cancelProbe := context.WithTimeout(ctx, w.timeout)
				_ = w.client.RequestProgress(probeCtx)
				cancelProbe()
				requested = true
			default:
				// A whole interval without an answer: etcd defers it (see
				// run), or the stream is stalled. A new watch tells: etcd
				// answers its creation within the timeout, in a header
				// checked like any other.
				return true
			}
		}
	}
}

// observe hands the watch loop a response header that etcd sent on another
// stream (a Register's keepalive answers), to check for a replaced or rewound
// etcd. It never blocks: if a header is already waiting, that one is checked.
func (w *watcher) observe(header *etcdserverpb.ResponseHeader) {
	select {
	case w.headers <- header:
	default:
	}
}

// rewound reports whether the etcd that answered with clusterID and revision
// is no longer the one the cache follows: another cluster, or one restored to
// an older revision. The client would resume its watch there at a revision
// that may never come. A cluster id of 0 says nothing (etcd's gRPC proxy
// leaves it out of the responses it makes up itself).
func (w *watcher) rewound(clusterID uint64, revision int64) bool {
	if (clusterID == 0 || clusterID == w.clusterID) && revision >= w.snap.Load().revision {
		return false
	}
	// A member that lags behind the one the watch came from answers with an
	// older revision too; only a linearizable read tells them apart.
	return !w.confirm()
}

// confirm reads etcd's cluster id and revision with one linearizable read and
// reports whether the watch still follows the etcd the cache was read from.
func (w *watcher) confirm() bool {
	revision := w.snap.Load().revision
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	resp, err := w.client.Get(ctx, w.prefix, clientv3.WithCountOnly())
	cancel()
	switch {
	case err != nil:
		if w.ctx.Err() == nil {
			w.logger.Warn("biregister: watch stalled, listing again", "err", err)
		}
		return false
	case resp.Header.ClusterId != w.clusterID || resp.Header.Revision < revision:
		w.logger.Warn("biregister: etcd was replaced or rewound, listing again",
			"cluster", resp.Header.ClusterId, "revision", resp.Header.Revision, "cachedRevision", revision)
		return false
	}
	return true
}

// maxBatch bounds how many watch responses go into one snapshot: enough to
// absorb a burst, few enough that a snapshot is published often meanwhile.
const maxBatch = 256

// takeWaiting returns first and the responses already waiting behind it.
// Nothing waits for more: a lone event is applied at once, while under a
// burst the responses that piled up meanwhile make one batch.
func takeWaiting(first clientv3.WatchResponse, events clientv3.WatchChan) []clientv3.WatchResponse {
	batch := []clientv3.WatchResponse{first}
	for len(batch) < maxBatch {
		select {
		case resp, ok := <-events:
			if !ok {
				return batch
			}
			batch = append(batch, resp)
		default:
			return batch
		}
	}
	return batch
}

// applyResponses applies the good responses of batch as one snapshot; it
// returns false if one of them ends the watch (an error, or an etcd that is
// not the one the cache follows), after applying those before it.
func (w *watcher) applyResponses(batch []clientv3.WatchResponse) bool {
	for i := range batch {
		if err := batch[i].Err(); err != nil {
			w.logger.Warn("biregister: watch failed, listing again", "err", err)
			w.apply(batch[:i])
			return false
		}
		// The getters, not the fields: the header is a value in client 3.6
		// and a pointer in 3.7.
		if w.rewound(batch[i].Header.GetClusterId(), batch[i].Header.GetRevision()) {
			w.apply(batch[:i])
			return false
		}
	}
	w.apply(batch)
	return true
}

func (w *watcher) apply(batch []clientv3.WatchResponse) {
	if len(batch) == 0 {
		return
	}
	cur := w.snap.Load()
	revision := cur.revision
	var events []*clientv3.Event
	for _, resp := range batch {
		switch {
		case len(resp.Events) > 0:
			// Not resp.Header.Revision: a catching-up watch may send a batch
			// whose header is ahead of events still to come.
			revision = max(revision, resp.Events[len(resp.Events)-1].Kv.ModRevision)
		case resp.IsProgressNotify():
			// A lagging member may report an older revision: never go back.
			revision = max(revision, resp.Header.GetRevision())
		}
		if len(batch) == 1 {
			events = resp.Events
		} else {
			events = append(events, resp.Events...)
		}
	}
	next, changes := cur.apply(w.prefix, events, revision)
	w.publish(next)
	for _, c := range changes {
		w.feed.push(c)
	}
}

// relist lists the group until it succeeds or the Watcher closes, and turns the
// difference from the cache into changes, so no deletion made while the watch
// was down goes unseen.
func (w *watcher) relist() {
	var delay backoff
	for {
		ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
		listed, header, err := w.list(ctx)
		cancel()
		if err == nil {
			w.clusterID = header.ClusterId
			next, changes := w.snap.Load().replace(listed, header.Revision)
			w.publish(next)
			for _, c := range changes {
				w.feed.push(c)
			}
			return
		}
		if w.ctx.Err() != nil {
			return
		}
		w.logger.Warn("biregister: listing failed, retrying", "err", err)
		if !w.wait(delay.next()) {
			return
		}
	}
}

// wait sleeps for d while still delivering an owed OpResync; it returns false
// if the Watcher closed meanwhile.
func (w *watcher) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return false
		case <-timer.C:
			return true
		case w.feed.pending() <- w.resyncChange():
			w.feed.resynced()
		}
	}
}

func (w *watcher) resyncChange() Change {
	return Change{Op: OpResync, Revision: w.snap.Load().revision}
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
	all := make(map[string]string, s.names.size)
	for m := range s.names.all() {
		all[m.Name] = m.Value
	}
	return all
}

func (w *watcher) GetNames() []string {
	s := w.snap.Load()
	names := make([]string, 0, s.order.size)
	for k := range s.order.all() {
		names = append(names, k.name)
	}
	return names
}

func (w *watcher) GetValues() []string {
	s := w.snap.Load()
	values := make([]string, 0, s.order.size)
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
	return slices.AppendSeq(make([]Member, 0, s.order.size), s.members())
}

func (w *watcher) Updated() <-chan struct{} { return w.snap.Load().replaced }

func (w *watcher) Changes() <-chan Change { return w.feed.ch }

func (w *watcher) Closed() <-chan struct{} { return w.done }

func (w *watcher) EtcdClient() *clientv3.Client { return w.client }

func (w *watcher) Prefix() string { return w.prefix }

func (w *watcher) Close() {
	w.closeOnce.Do(func() {
		w.stop()
		if w.ownsClient {
			w.client.Close()
		}
	})
}

// stop ends the watch goroutine and waits for it.
func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

// The watch loop: the goroutine that owns a watcher's cache. It follows the
// watch, applies what comes as new snapshots and changes, and lists the
// group again whenever the watch cannot be trusted.

package biregister

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// maxResponsesPerSnapshot bounds how many watch responses go into one
// snapshot: enough to absorb a burst, few enough that a snapshot is
// published often meanwhile.
const maxResponsesPerSnapshot = 256

// quickWatchEnd is how long a watch must last for the next one to start
// without waiting: one that ends sooner brought nothing, and the loop backs
// off before it lists the group and watches again.
const quickWatchEnd = time.Second

// start lists the group (within ctx), queues its members as the first changes
// and starts the goroutine that follows the group.
func (w *watcher) start(ctx context.Context) error {
	l, err := w.list(ctx)
	if err != nil {
		return fmt.Errorf("biregister: list %q: %w", w.prefix, err)
	}
	w.adopt(l, causeStart)
	w.stopObserving = w.metrics.observeGroup(w.snap.Load)
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return nil
}

// run owns the cache and the feed: it follows the watch and, whenever the
// watch fails, lists the group again and watches from the listed revision.
func (w *watcher) run() {
	defer close(w.done)
	defer close(w.feed.ch)
	defer w.guard.stop()
	// A closed Watcher knows no members: readers must not act on a frozen
	// view. Nothing replaces that last view, so it reads as replaced already:
	// a loop that waits on Updated never hangs on a closed Watcher.
	defer func() {
		last := closedSnapshot()
		// A counter never goes back, also when read after Close.
		last.protections = w.snap.Load().protections
		w.publish(last)
	}()
	// The first watch starts after the listing: on an idle store etcd
	// serves it at once, where a watch from the listed revision would
	// catch up first, and get its first events up to 100 ms late.
	from := w.snap.Load().revision + 1
	var retry backoff
	for {
		started := time.Now()
		why := w.follow(from)
		if w.ctx.Err() != nil {
			return
		}
		if why == causeResume {
			from = w.snap.Load().applied
			w.logger.Debug("biregister: progress request unanswered, watching again", "revision", from)
			continue
		}
		// A watch that ends at once — the client's watcher closed by its
		// user, say — would have the group listed again and again: back
		// off while they keep ending so.
		if time.Since(started) < quickWatchEnd {
			if !w.wait(retry.next()) {
				return
			}
		} else {
			retry.reset()
		}
		if why == causeStalled || why == causeWatchNotCreated {
			w.stalls++ // the next watch goes on a stream of its own
		}
		w.relist(why)
		from = w.snap.Load().applied
	}
}

// follow applies watch responses, from revision from on, until the watch
// fails, stalls or follows an etcd that was replaced or rewound, or until the
// Watcher closes. It returns why the group must be listed again (causeNone
// once closed), or causeResume if the watch only left a progress request
// unanswered because it started beyond etcd's revision (see probeTick).
//
// After the first, every watch starts at the newest revision the cache
// holds, not the next: its events come again and are skipped. A watch that
// starts beyond etcd's revision, as the first one of an idle store does,
// gets no answer to its progress requests (server watchable_store.go,
// progressIfSync); and on etcd before the fix of etcd-io/etcd#18089,
// history compacted at exactly the revision a watch starts from drops a
// DELETE made there without a word, where a watch from one revision before
// fails, compacted, and the group is listed again. (Such a watch starts
// "unsynced": its first events may come up to 100 ms late.)
func (w *watcher) follow(from int64) cause {
	ctx, cancel := context.WithCancel(w.watchContext())
	defer cancel()
	defer w.following.Store(false)
	// Watch returns only once etcd has created the watch: bound that like
	// any other request, so that a stalled stream is not waited on forever.
	giveUp := time.AfterFunc(w.timeout, cancel)
	events := w.client.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(from),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	if !giveUp.Stop() {
		if w.ctx.Err() == nil {
			w.logger.Warn("biregister: watch not created in time, listing again")
		}
		return causeWatchNotCreated
	}
	w.following.Store(true)
	var ticks <-chan time.Time
	var probeTimer *time.Timer
	if w.probe.interval > 0 {
		// The first tick falls anywhere in the second half of an interval:
		// watches started together (a fleet of Registers on one client)
		// share a stream, where the answer to one's progress request
		// reaches them all, and they must not all ask at once.
		probeTimer = time.NewTimer(w.probe.interval/2 + rand.N(w.probe.interval/2+1))
		defer probeTimer.Stop()
		ticks = probeTimer.C
	}
	var probe streamProbe
	if w.progressUnanswered.Load() {
		probe.goQuiet(time.Now())
	}
	for {
		select {
		case <-w.ctx.Done():
			return causeNone
		case w.feed.pending() <- w.feed.next(w.resyncRevision()):
			w.deliverWaiting()
		case resp, ok := <-events:
			if !ok {
				return causeWatchFailed
			}
			responses := takeWaiting(resp, events)
			w.heard()
			probe.heard = true
			for i := range responses {
				probe.progressed = probe.progressed || responses[i].IsProgressNotify()
				// etcd's gRPC proxy leaves the member out of the creations
				// it makes up.
				if member := responses[i].Header.GetMemberId(); member != 0 {
					probe.member = member
				}
			}
			if why := w.applyResponses(responses); why != causeNone {
				return why
			}
		case header := <-w.headers:
			if why := w.otherEtcd(header.GetClusterId(), header.GetRevision()); why != causeNone {
				return why
			}
		case now := <-ticks:
			probeTimer.Reset(w.probe.interval)
			if why, stop := w.probeTick(ctx, &probe, now, from); stop {
				return why
			}
		case now := <-w.guard.due():
			w.releaseSuspects(now)
		}
	}
}

// watchContext returns the context of the next watch. WithRequireLeader
// cancels the watch when its member loses the cluster's leader, instead of
// leaving it silently serving nothing. etcd's client puts the watches of
// equal contexts on one gRPC stream, which lives as long as its connection
// and any watch on it: after a stall, the watch asks for a new stream of
// its own, or it would be created on the stalled one again (another watch
// keeping it open), and wait there until the connection ends (with no
// keepalive pings on the client, never).
func (w *watcher) watchContext() context.Context {
	ctx := clientv3.WithRequireLeader(w.ctx)
	if w.stalls > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, "biregister-stream", fmt.Sprintf("%p-%d", w, w.stalls))
	}
	return ctx
}

// takeWaiting returns first and the responses already waiting behind it.
// Nothing waits for more: a lone event is applied at once, while under a
// burst the responses that piled up meanwhile make one snapshot.
func takeWaiting(first clientv3.WatchResponse, events clientv3.WatchChan) []clientv3.WatchResponse {
	responses := []clientv3.WatchResponse{first}
	for len(responses) < maxResponsesPerSnapshot {
		select {
		case resp, ok := <-events:
			if !ok {
				return responses
			}
			responses = append(responses, resp)
		default:
			return responses
		}
	}
	return responses
}

// applyResponses applies the good responses as one snapshot; if one of
// them ends the watch (an error, or an etcd that is not the one the cache
// follows), it applies those before it and returns why.
func (w *watcher) applyResponses(responses []clientv3.WatchResponse) cause {
	for i := range responses {
		if err := responses[i].Err(); err != nil {
			w.logger.Warn("biregister: watch failed, listing again", "err", err)
			w.apply(responses[:i])
			return causeWatchFailed
		}
		// The getters, not the fields: the header is a value in client 3.6
		// and a pointer in 3.7.
		if why := w.otherEtcd(responses[i].Header.GetClusterId(), responses[i].Header.GetRevision()); why != causeNone {
			w.apply(responses[:i])
			return why
		}
	}
	w.apply(responses)
	return causeNone
}

// apply publishes the snapshot after responses and delivers their changes.
func (w *watcher) apply(responses []clientv3.WatchResponse) {
	if len(responses) == 0 {
		return
	}
	// The events' revisions are the snapshot's to take (apply); only a
	// progress notification tells more. Not a header of a response with
	// events: a catching-up watch may send one ahead of events still to come.
	var progress int64
	var events []*clientv3.Event
	for _, resp := range responses {
		if resp.IsProgressNotify() {
			// A lagging member may report an older revision: apply never
			// goes back.
			progress = max(progress, resp.Header.GetRevision())
		}
		if len(responses) == 1 {
			events = resp.Events
		} else {
			events = append(events, resp.Events...)
		}
	}
	next, changes := w.snap.Load().apply(w.prefix, w.ownKey, events, progress)
	w.advance(next, changes, false)
}

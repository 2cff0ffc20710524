// Checking a watch stream that says nothing: is it alive, and does it still
// follow the etcd the cache was read from?
//
// The etcd client resumes a broken watch stream by itself and says nothing,
// also on an etcd that was replaced or restored behind the same address,
// where the resumed watch may wait for a revision that never comes. A
// Watcher whose stream stays silent for a probe interval therefore sends one
// progress request: its answer proves the stream alive, and its header tells
// the etcd that answered. A Register's watcher is probed the same way: its
// keepalive answers may come from another member than its watch's.
//
// Where progress requests go unanswered on a stream that a read finds
// healthy (etcd's gRPC proxy answers none, etcd-io/etcd#19710; or another
// watch on a shared stream holds the answers back), the Watcher goes quiet:
// it waits for etcd's own progress notifications (every 10 minutes by
// default), asks once per quiet interval whether requests are answered
// again, and reads only when the stream said nothing for a whole quiet
// interval.

package biregister

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// probeStep is what a watch stream needs at one tick of the probe interval.
type probeStep int

const (
	probeNothing    probeStep = iota // nothing to do
	probeRequest                     // send a progress request
	probeUnanswered                  // a whole interval without an answer
	probeAnswered                    // quiet, but a progress request was answered
	probeRead                        // quiet, and silent for a whole quiet interval
)

// streamProbe follows the silence of one watch stream; follow owns it, and
// tells it what the stream said (heard, progressed) between ticks.
type streamProbe struct {
	member      uint64    // the member whose header the stream's last response carried; 0: unknown
	heard       bool      // the stream spoke since the last tick
	progressed  bool      // ... with a progress notification
	requested   bool      // a progress request waits for its answer
	quiet       bool      // progress requests go unanswered here
	lastHeard   time.Time // quiet: when the stream last spoke or a read confirmed it
	lastRequest time.Time // quiet: when the last progress request went out
}

// tick returns what the stream needs at now.
func (p *streamProbe) tick(now time.Time, quietInterval time.Duration) probeStep {
	heard, progressed := p.heard, p.progressed
	p.heard, p.progressed = false, false
	if heard {
		p.lastHeard = now
	}
	if !p.quiet {
		switch {
		case heard:
			p.requested = false
			return probeNothing
		case !p.requested:
			p.requested = true
			return probeRequest
		}
		return probeUnanswered
	}
	if p.requested {
		p.requested = false
		if progressed {
			// Possibly one of etcd's own notifications instead of the
			// answer: then the next request, unanswered, says so again.
			return probeAnswered
		}
	}
	switch {
	case now.Sub(p.lastHeard) >= quietInterval:
		p.lastHeard = now
		return probeRead
	case now.Sub(p.lastRequest) >= quietInterval:
		p.requested, p.lastRequest = true, now
		return probeRequest
	}
	return probeNothing
}

// goQuiet makes the probe wait a quiet interval before its next check.
func (p *streamProbe) goQuiet(now time.Time) {
	p.quiet, p.requested = true, false
	p.lastHeard, p.lastRequest = now, now
}

// probeTick does what the stream needs at now, for a watch that started at
// revision from. It reports stop if the watch must end, and then why.
func (w *watcher) probeTick(ctx context.Context, p *streamProbe, now time.Time, from int64) (why cause, stop bool) {
	switch p.tick(now, w.probe.quiet) {
	case probeRequest:
		w.requestProgress(ctx)
	case probeUnanswered:
		// etcd defers progress answers to a watch that starts beyond its
		// current revision: one from the cache's revision gets them (see
		// follow).
		if from > w.snap.Load().revision {
			return causeResume, true
		}
		// Even that watch got no answer: the stream stalled, or nothing
		// on it answers progress requests. A watch created on the stream
		// tells which; a read tells whether etcd is still the same.
		if why := w.confirmStream(ctx, p.member); why != causeNone {
			return why, true
		}
		if !w.progressUnanswered.Swap(true) {
			w.logger.Info("biregister: progress requests go unanswered (etcd's gRPC proxy?), checking the watch every quiet interval",
				"interval", w.probe.quiet)
		}
		p.goQuiet(now)
	case probeAnswered:
		w.progressUnanswered.Store(false)
		p.quiet = false
		w.logger.Debug("biregister: progress requests answered again")
	case probeRead:
		if why := w.confirmStream(ctx, p.member); why != causeNone {
			return why, true
		}
	}
	return causeNone, false
}

// requestProgress asks etcd for a progress notification on whatever stream
// now serves the watch.
func (w *watcher) requestProgress(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	_ = w.client.RequestProgress(ctx)
}

// observe hands the watch loop a response header that etcd sent on another
// stream (a Register's keepalive answers), to check for a replaced or rewound
// etcd. It never blocks: if a header is already waiting, that one is checked.
// It says nothing of the watch stream: a keepalive answered by one member
// proves nothing of a watch held by another, which is probed as any
// Watcher's.
func (w *watcher) observe(header *etcdserverpb.ResponseHeader) {
	select {
	case w.headers <- header:
	default:
	}
}

// heard records that etcd answered now.
func (w *watcher) heard() { w.heardAt.Store(int64(time.Since(w.epoch))) }

// otherEtcd returns why the etcd that answered with clusterID and revision
// is not the one the cache follows — another cluster, or one restored to an
// older revision — or causeNone if it is. The client would resume its watch there
// at a revision that may never come. A cluster id of 0 says nothing (etcd's
// gRPC proxy leaves it out of the responses it makes up itself).
func (w *watcher) otherEtcd(clusterID uint64, revision int64) cause {
	if (clusterID == 0 || clusterID == w.clusterID) && revision >= w.snap.Load().revision {
		return causeNone
	}
	// A member that lags behind the one the watch came from answers with an
	// older revision too; only a linearizable read tells them apart.
	_, why := w.confirm()
	return why
}

// confirmStream checks etcd (confirm) and the watch stream that ctx's
// watches use, whose responses last came from streamMember (0: unknown),
// and returns why the watch must end, or causeNone. A read answered by another
// member proves nothing of the stream, which may sit on a member frozen or
// cut off: the stream is then asked to create a watch (of the prefix key
// itself, no member), which the member behind it, or etcd's gRPC proxy,
// acknowledges on that very stream. (A gRPC proxy checks each new watch
// with a read of its own: not asked when the read came from the stream's
// member, as behind a proxy of one member it does.)
func (w *watcher) confirmStream(ctx context.Context, streamMember uint64) cause {
	read, why := w.confirm()
	if why != causeNone || streamMember != 0 && read.MemberId == streamMember {
		return why
	}
	created, cancel := context.WithCancel(ctx)
	defer cancel()
	giveUp := time.AfterFunc(w.timeout, cancel)
	// Watch returns once etcd has created the watch, or ctx ended.
	w.client.Watch(created, w.prefix)
	if !giveUp.Stop() {
		if w.ctx.Err() == nil {
			w.logger.Warn("biregister: watch stalled, listing again", "err", "the stream acknowledged no new watch in time")
		}
		return causeStalled
	}
	return causeNone
}

// confirm reads etcd's cluster id and revision with one linearizable read,
// and returns its header and why the watch does not follow the etcd the
// cache was read from (a failed read, or another etcd), or causeNone if it does.
func (w *watcher) confirm() (*etcdserverpb.ResponseHeader, cause) {
	revision := w.snap.Load().revision
	// WithRequireLeader: see list.
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(w.ctx), w.timeout)
	resp, err := w.client.Get(ctx, w.prefix, clientv3.WithCountOnly())
	cancel()
	switch {
	case err != nil:
		if w.ctx.Err() == nil {
			w.logger.Warn("biregister: watch stalled, listing again", "err", err)
		}
		return nil, causeStalled
	case resp.Header.ClusterId != w.clusterID || resp.Header.Revision < revision:
		w.logger.Warn("biregister: etcd was replaced or rewound, listing again",
			"cluster", resp.Header.ClusterId, "revision", resp.Header.Revision, "cachedRevision", revision)
		return resp.Header, causeEtcdReplaced
	}
	w.heard()
	return resp.Header, causeNone
}

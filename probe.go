// Checking a watch stream that says nothing: is it alive, and does it still
// follow the etcd the cache was read from?
//
// The etcd client resumes a broken watch stream by itself and says nothing,
// also on an etcd that was replaced or restored behind the same address,
// where the resumed watch may wait for a revision that never comes. A
// Watcher whose stream stays silent for probeInterval therefore sends one
// progress request: its answer proves the stream alive, and its header tells
// the etcd that answered. A Register's watcher is not probed: the keepalive
// answers bring it the same news (observe), at no extra cost.

package biregister

import (
	"context"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// probeStep is what a watch stream needs at one tick of the probe interval.
type probeStep int

const (
	probeNothing probeStep = iota // the stream spoke: it is alive
	probeRequest                  // silent: send a progress request
	probeGiveUp                   // a whole interval without an answer
)

// streamProbe follows the silence of one watch stream; follow owns it.
type streamProbe struct {
	heard     bool // the stream spoke since the last tick
	requested bool // a progress request waits for its answer
}

// tick returns what the stream needs now.
func (p *streamProbe) tick() probeStep {
	switch {
	case p.heard:
		p.heard, p.requested = false, false
		return probeNothing
	case !p.requested:
		p.requested = true
		return probeRequest
	}
	return probeGiveUp
}

// requestProgress asks etcd for a progress notification on whatever stream
// now serves the watch.
func (w *watcher) requestProgress(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	_ = w.client.RequestProgress(ctx)
}

// rewatchFrom decides what to do when a watch from revision from left a
// progress request unanswered: watch again from the returned revision, or,
// if ok is false, list the group again.
//
// etcd defers progress answers to a watch that starts beyond its current
// revision (server watchable_store.go, progressIfSync), as every watch of an
// idle store does; one that starts at the cache's own revision gets answers
// (that revision's events come again and are skipped). Not so from the
// start: such a watch is "unsynced" at first and gets its first events up to
// 100 ms late. If even that watch got no answer, another watch on the
// client's stream holds them back, or the stream stalled: one read tells.
func (w *watcher) rewatchFrom(from int64) (int64, bool) {
	revision := w.snap.Load().revision
	if from > revision || w.confirm() {
		w.logger.Debug("biregister: progress request unanswered, watching again", "revision", revision)
		return revision, true
	}
	return 0, false
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

// otherEtcd reports whether the etcd that answered with clusterID and
// revision is not the one the cache follows: another cluster, or one restored
// to an older revision. The client would resume its watch there at a
// revision that may never come. A cluster id of 0 says nothing (etcd's gRPC
// proxy leaves it out of the responses it makes up itself).
func (w *watcher) otherEtcd(clusterID uint64, revision int64) bool {
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

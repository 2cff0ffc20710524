// The snapshot: one immutable view of a group, and how a batch of events or
// a fresh listing turns it into the next one.

package biregister

import (
	"iter"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// snapshot is an immutable view of a group. The watch loop builds a new one
// for every batch of events and publishes it atomically, so readers never
// take a lock and never wait for etcd or for the loop. Both indexes are
// persistent structures: a new snapshot shares all but O(log n) of its nodes
// with the previous one, so a change costs the same in a group of ten members
// as in one of a million.
type snapshot struct {
	names  nameTrie  // name → member
	order  orderTree // the members' places, ascending create revision
	leader Member    // order's first member, or the zero Member
	// revision is the newest etcd revision the view is known to reflect:
	// that of its events, or of a progress notification, which says that
	// nothing changed up to it — except from etcd before 3.4.25 and 3.5.8,
	// which may send a watch one at the current revision while events
	// below it are still on their way (etcd-io/etcd#15220).
	revision int64
	// applied is the revision of the newest event applied or skipped, or of
	// the listing: an event at or below it is a replay. Unlike revision, it
	// never runs ahead of events to come.
	applied int64
	// cluster is the etcd cluster the view was listed from.
	cluster uint64
	// incarnation counts the times the view found the etcd behind its
	// endpoints replaced or rewound: revisions of one incarnation say
	// nothing of another's, even under the same cluster id.
	incarnation int64
	// own is what etcd holds at a Register's own key, as of applied; zero
	// for a Watcher's view (see register.judge).
	own keyState
	// leaving holds the graceful-leave markers under the prefix (see
	// leaving.go).
	leaving leaves
	// suspects are the members lost that the guard holds, and protected
	// since when protection is on, zero while off (see Protection): the
	// guard sets them on every snapshot the loop publishes (advance).
	suspects    nameTrie
	protected   time.Time
	protections int64         // times protection turned on so far
	replaced    chan struct{} // closed when a newer snapshot is published
}

func newSnapshot(names nameTrie, order orderTree, revision, applied int64) *snapshot {
	var leader Member
	if first, ok := order.first(); ok {
		leader, _ = names.get(first.name)
	}
	return &snapshot{names: names, order: order, leader: leader, revision: revision, applied: applied, replaced: make(chan struct{})}
}

// emptySnapshot returns a view of no members at revision.
func emptySnapshot(revision int64) *snapshot {
	return newSnapshot(nameTrie{}, orderTree{}, revision, revision)
}

// withSuspects returns s with what g holds now.
func (s *snapshot) withSuspects(g *guard) *snapshot {
	next := *s
	next.replaced = make(chan struct{})
	g.show(&next)
	return &next
}

// closedSnapshot returns the last view of a closed Watcher: no members, and
// already replaced.
func closedSnapshot() *snapshot {
	s := emptySnapshot(0)
	close(s.replaced)
	return s
}

func (s *snapshot) lookup(name string) (Member, bool) { return s.names.get(name) }

// size returns the number of members.
func (s *snapshot) size() int { return s.order.size }

// byName yields the members in no particular order, the cheapest way to
// visit them all.
func (s *snapshot) byName() iter.Seq[Member] { return s.names.all() }

// memberNames yields the members' names in ascending create revision.
func (s *snapshot) memberNames() iter.Seq[string] {
	return func(yield func(string) bool) {
		for p := range s.order.all() {
			if !yield(p.name) {
				return
			}
		}
	}
}

// diff returns the members s holds that old lacks or holds otherwise, and
// those of old that s lacks or holds at another create revision (see
// diffTries); either may be nil, an empty group.
func (s *snapshot) diff(old *snapshot) (put, gone []Member) {
	var prev, next nameTrie
	if old != nil {
		prev = old.names
	}
	if s != nil {
		next = s.names
	}
	return diffTries(prev, next)
}

// members yields the members in ascending create revision.
func (s *snapshot) members() iter.Seq[Member] {
	return func(yield func(Member) bool) {
		for p := range s.order.all() {
			m, _ := s.names.get(p.name)
			if !yield(m) {
				return
			}
		}
	}
}

// apply returns the snapshot after events (one or more watch responses, in
// revision order) and the changes they make. Each event costs O(log n), and
// the nodes one call copies are changed in place by its later events (one
// batch), so a burst applied at once copies each touched path only once.
// revision is that of a progress notification among the responses, or 0: the
// view's revision becomes the newest of its own, the events' and that.
// ownKey is a Register's own key, whose state the view keeps (own), or "".
func (s *snapshot) apply(prefix, ownKey string, events []*clientv3.Event, revision int64) (*snapshot, []Change) {
	names, order := s.names, s.order
	b := new(batch)
	changes := make([]Change, 0, len(events))
	applied := s.applied
	own := s.own
	leaving, ownLeaving := s.leaving, false
	for _, ev := range events {
		if ev.Kv.ModRevision <= s.applied {
			continue // s holds it already
		}
		applied = max(applied, ev.Kv.ModRevision)
		if ownKey != "" && string(ev.Kv.Key) == ownKey {
			own = keyStateOf(ev)
		}
		if name, marked, ok := leavingOf(prefix, ev.Kv); ok {
			// A marker goes with its member's lease, in the revision that
			// deletes the member too, maybe before it: the mark is kept
			// for that member's DELETE.
			if m, present := names.get(name); ev.Type == mvccpb.PUT || !present || !leaving.marking(m) {
				leaving = leaving.with(name, marked, &ownLeaving)
			}
			continue
		}
		m, ok := newMember(prefix, ev.Kv)
		if !ok {
			continue
		}
		switch ev.Type {
		case mvccpb.PUT:
			next, old, present := names.set(m, b)
			names = next
			switch {
			case present && old.CreateRevision == m.CreateRevision:
				// Same place: only the nameTrie holds values.
			case present:
				order = order.remove(placeOf(old), b).insert(placeOf(m), b)
			default:
				order = order.insert(placeOf(m), b)
			}
			changes = append(changes, Change{Name: m.Name, Op: OpPut, Value: m.Value, Revision: ev.Kv.ModRevision})
		case mvccpb.DELETE:
			next, old, present := names.delete(m.Name, b)
			if !present {
				continue
			}
			names, order = next, order.remove(placeOf(old), b)
			left := leaving.marking(old)
			if _, marked := leaving[m.Name]; marked {
				leaving = leaving.with(m.Name, 0, &ownLeaving)
			}
			changes = append(changes, Change{Name: m.Name, Op: OpDelete, Value: old.Value, Revision: ev.Kv.ModRevision, Left: left})
		}
	}
	revision = max(s.revision, revision, applied) // never back
	if len(changes) == 0 && revision == s.revision && applied == s.applied {
		return s, nil
	}
	next := newSnapshot(names, order, revision, applied)
	next.cluster, next.incarnation, next.own, next.leaving = s.cluster, s.incarnation, own, leaving
	return next, changes
}

// replace returns the snapshot that a fresh listing (members in any order,
// and the markers of leaves, read at revision; replace sorts the members)
// gives, and the changes from s to it: DELETEs of the members that are
// gone, then PUTs of the new and changed ones, each in create order. A
// member recreated meanwhile gets a DELETE and a PUT, since its place in
// the order changed. It returns every DELETE, and PUTs up to most
// changes in all, and whether it left any out: a feed takes no more than it
// has room for, and a first listing of a million members would otherwise
// make a million PUTs. The DELETEs are weighed for mass-loss protection
// whatever the feed's room (see guard.weigh); there are no more of them than
// members in s.
func (s *snapshot) replace(listed []Member, leaving leaves, revision int64, most int) (*snapshot, []Change, bool) {
	sortByCreate(listed)
	var names nameTrie
	var order orderTree
	build := func(i int) {
		if i == 0 {
			names = buildNameTrie(listed)
		} else {
			order = buildOrderTree(placesOf(listed))
		}
	}
	if len(listed) < parallelMin {
		build(0)
		build(1)
	} else {
		// The two indexes share nothing but listed, which neither changes.
		inParallel(2, build)
	}
	next := newSnapshot(names, order, revision, revision)
	next.leaving = leaving
	puts, gone := listed, []Member(nil)
	if s.names.size > 0 {
		puts, gone = diffTries(s.names, next.names)
		slices.SortFunc(puts, byPlace)
		slices.SortFunc(gone, byPlace)
	}
	changes := make([]Change, 0, len(gone)+min(len(puts), max(most-len(gone), 0)))
	for _, o := range gone {
		changes = append(changes, Change{Name: o.Name, Op: OpDelete, Value: o.Value, Revision: revision, Left: leaving.marking(o)})
	}
	for _, m := range puts[:min(len(puts), max(most-len(gone), 0))] {
		changes = append(changes, Change{Name: m.Name, Op: OpPut, Value: m.Value, Revision: revision})
	}
	return next, changes, len(changes) > most || len(changes) < len(gone)+len(puts)
}

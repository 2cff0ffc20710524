package biregister

import (
	"bytes"
	"iter"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member is one member of a group.
type Member struct {
	Name           string
	Value          string
	CreateRevision int64
}

// snapshot is an immutable view of a group. The watch loop builds a new one
// for every batch of events and publishes it atomically, so readers never
// take a lock and never wait for etcd or for the loop. Both indexes are
// persistent structures: a new snapshot shares all but O(log n) of its nodes
// with the previous one, so a change costs the same in a group of ten members
// as in one of a million.
type snapshot struct {
	names    byName        // name → member
	order    byCreate      // the members' places, ascending create revision
	leader   Member        // order's first member, or the zero Member
	revision int64         // the etcd revision this view reflects
	replaced chan struct{} // closed when a newer snapshot is published
}

func newSnapshot(names byName, order byCreate, revision int64) *snapshot {
	var leader Member
	if first, ok := order.first(); ok {
		leader, _ = names.get(first.name)
	}
	return &snapshot{names: names, order: order, leader: leader, revision: revision, replaced: make(chan struct{})}
}

func (s *snapshot) lookup(name string) (Member, bool) { return s.names.get(name) }

// members yields the members in ascending create revision.
func (s *snapshot) members() iter.Seq[Member] {
	return func(yield func(Member) bool) {
		for k := range s.order.all() {
			m, _ := s.names.get(k.name)
			if !yield(m) {
				return
			}
		}
	}
}

// newMember returns the member kv holds, or false for a key that is not a
// member: the prefix itself, or a key deeper than one level (which belongs to
// a sub-group, not to this one). Name and value share one allocation, and the
// prefix, the same for every member, is not kept.
func newMember(prefix string, kv *mvccpb.KeyValue) (Member, bool) {
	if len(kv.Key) <= len(prefix) || string(kv.Key[:len(prefix)]) != prefix {
		return Member{}, false
	}
	name := kv.Key[len(prefix):]
	if bytes.IndexByte(name, '/') >= 0 {
		return Member{}, false
	}
	both := string(name) + string(kv.Value)
	return Member{Name: both[:len(name)], Value: both[len(name):], CreateRevision: kv.CreateRevision}, true
}

// apply returns the snapshot after events (one or more watch responses, in
// revision order) and the changes they make. Each event costs O(log n), and
// the nodes one call copies are changed in place by its later events, so a
// burst applied at once copies each touched path only once.
func (s *snapshot) apply(prefix string, events []*clientv3.Event, revision int64) (*snapshot, []Change) {
	names, order := s.names, s.order
	ed := new(edit)
	changes := make([]Change, 0, len(events))
	for _, ev := range events {
		if ev.Kv.ModRevision <= s.revision {
			continue // s holds it already
		}
		m, ok := newMember(prefix, ev.Kv)
		if !ok {
			continue
		}
		switch ev.Type {
		case mvccpb.PUT:
			next, old, present := names.set(m, ed)
			names = next
			switch {
			case present && old.CreateRevision == m.CreateRevision:
				// Same place: only byName holds values.
			case present:
				order = order.remove(keyOf(old), ed).insert(keyOf(m), ed)
			default:
				order = order.insert(keyOf(m), ed)
			}
			changes = append(changes, Change{Name: m.Name, Op: OpPut, Value: m.Value, Revision: ev.Kv.ModRevision})
		case mvccpb.DELETE:
			next, old, present := names.delete(m.Name, ed)
			if !present {
				continue
			}
			names, order = next, order.remove(keyOf(old), ed)
			changes = append(changes, Change{Name: m.Name, Op: OpDelete, Value: old.Value, Revision: ev.Kv.ModRevision})
		}
	}
	if len(changes) == 0 && revision == s.revision {
		return s, nil
	}
	return newSnapshot(names, order, revision), changes
}

// replace returns the snapshot that a fresh listing (members in any order, read
// at revision) gives, and the changes from s to it: DELETEs of the members
// that are gone, then PUTs of the new and changed ones in create order. A member
// recreated meanwhile gets a DELETE and a PUT, since its place in the order
// changed.
func (s *snapshot) replace(listed []Member, revision int64) (*snapshot, []Change) {
	listed = sortByCreate(listed)
	next := newSnapshot(buildByName(listed), buildByCreate(keysOf(listed)), revision)
	changes := make([]Change, 0, len(listed))
	for m := range s.members() {
		if n, ok := next.lookup(m.Name); !ok || n.CreateRevision != m.CreateRevision {
			changes = append(changes, Change{Name: m.Name, Op: OpDelete, Value: m.Value, Revision: revision})
		}
	}
	for _, m := range listed {
		if old, ok := s.lookup(m.Name); !ok || old != m {
			changes = append(changes, Change{Name: m.Name, Op: OpPut, Value: m.Value, Revision: revision})
		}
	}
	return next, changes
}

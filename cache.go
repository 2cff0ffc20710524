package biregister

import (
	"cmp"
	"slices"
	"strings"

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
// take a lock and never wait for etcd or for the loop.
type snapshot struct {
	members  []Member       // ascending CreateRevision: members[0] leads
	byName   map[string]int // index into members
	revision int64          // the etcd revision this view reflects
	replaced chan struct{}  // closed when a newer snapshot is published
}

func newSnapshot(members []Member, revision int64) *snapshot {
	byName := make(map[string]int, len(members))
	for i, m := range members {
		byName[m.Name] = i
	}
	return &snapshot{members: members, byName: byName, revision: revision, replaced: make(chan struct{})}
}

func (s *snapshot) lookup(name string) (Member, bool) {
	i, ok := s.byName[name]
	if !ok {
		return Member{}, false
	}
	return s.members[i], true
}

func (s *snapshot) leader() (Member, bool) {
	if len(s.members) == 0 {
		return Member{}, false
	}
	return s.members[0], true
}

// memberName returns the member name of key under prefix, or false for a key
// that is not a member: the prefix itself, or a key deeper than one level
// (which belongs to a sub-group, not to this one).
func memberName(prefix string, key []byte) (string, bool) {
	name := strings.TrimPrefix(string(key), prefix)
	if name == "" || len(name) == len(key) || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

// overlayEntry is the state of one name after part of a batch was applied.
type overlayEntry struct {
	member  Member
	deleted bool
}

// apply returns the snapshot after events (one watch response, in revision
// order) and the changes they make. It costs O(len(s.members) + len(events)):
// new members are always younger than every present one, so they are appended
// in event order and the slice stays sorted without a sort.
func (s *snapshot) apply(prefix string, events []*clientv3.Event, revision int64) (*snapshot, []Change) {
	overlay := make(map[string]overlayEntry, len(events))
	var created []Member // each new life of a name, in event order
	changes := make([]Change, 0, len(events))
	current := func(name string) (Member, bool) {
		if e, ok := overlay[name]; ok {
			return e.member, !e.deleted
		}
		return s.lookup(name)
	}
	for _, ev := range events {
		name, ok := memberName(prefix, ev.Kv.Key)
		if !ok {
			continue
		}
		old, present := current(name)
		switch ev.Type {
		case mvccpb.PUT:
			m := Member{Name: name, Value: string(ev.Kv.Value), CreateRevision: ev.Kv.CreateRevision}
			if !present || old.CreateRevision != m.CreateRevision {
				created = append(created, m)
			}
			overlay[name] = overlayEntry{member: m}
			changes = append(changes, Change{Name: name, Op: OpPut, Value: m.Value, Revision: ev.Kv.ModRevision})
		case mvccpb.DELETE:
			if !present {
				continue
			}
			overlay[name] = overlayEntry{member: old, deleted: true}
			changes = append(changes, Change{Name: name, Op: OpDelete, Value: old.Value, Revision: ev.Kv.ModRevision})
		}
	}
	if len(overlay) == 0 {
		if revision == s.revision {
			return s, nil
		}
		return newSnapshot(s.members, revision), nil
	}
	members := make([]Member, 0, len(s.members)+len(created))
	for _, m := range s.members {
		e, touched := overlay[m.Name]
		switch {
		case !touched:
			members = append(members, m)
		case !e.deleted && e.member.CreateRevision == m.CreateRevision:
			members = append(members, e.member)
		}
	}
	for _, c := range created {
		// Only the life that is still current: a name deleted and created again
		// in one batch takes the place of its last creation.
		if e := overlay[c.Name]; !e.deleted && e.member.CreateRevision == c.CreateRevision {
			members = append(members, e.member)
		}
	}
	return newSnapshot(members, revision), changes
}

// replace returns the snapshot that a fresh listing (members in any order, read
// at revision) gives, and the changes from s to it: DELETEs of the members
// that are gone, then PUTs of the new and changed ones in create order. A member
// recreated meanwhile gets a DELETE and a PUT, since its place in the order
// changed.
func (s *snapshot) replace(listed []Member, revision int64) (*snapshot, []Change) {
	slices.SortFunc(listed, func(a, b Member) int { return cmp.Compare(a.CreateRevision, b.CreateRevision) })
	next := newSnapshot(listed, revision)
	var changes []Change
	for _, m := range s.members {
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

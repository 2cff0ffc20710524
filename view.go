// Views: the exported, read-only face of a snapshot, for code that follows
// a group by comparing what it saw with what there is now.

package biregister

import (
	"iter"
	"slices"
)

// View is one immutable view of a group: the members the cache held at one
// etcd revision. Reading a View never waits and never changes it; the zero
// View is an empty group.
//
// A View lets code follow a group without taking anything from Changes, at a
// cost proportional to what changed: keep the View last acted on, wait on
// its Updated channel, then ask the new View what changed since (Diff).
type View struct{ s *snapshot }

// Revision returns the etcd revision the view reflects.
func (v View) Revision() int64 {
	if v.s == nil {
		return 0
	}
	return v.s.revision
}

// Len returns the number of members.
func (v View) Len() int {
	if v.s == nil {
		return 0
	}
	return v.s.size()
}

// Leader returns the oldest member, and false for an empty group.
func (v View) Leader() (Member, bool) {
	if v.s == nil || v.s.size() == 0 {
		return Member{}, false
	}
	return v.s.leader, true
}

// Member returns the named member, and false if there is none.
func (v View) Member(name string) (Member, bool) {
	if v.s == nil {
		return Member{}, false
	}
	return v.s.lookup(name)
}

// All yields the members oldest first: the leader, then in order of
// registration.
func (v View) All() iter.Seq[Member] {
	if v.s == nil {
		return func(func(Member) bool) {}
	}
	return v.s.members()
}

// Suspects yields the members lost that the view holds for mass-loss
// protection, in no particular order: each as it was when lost. A suspect
// is not a member (Len, Member and All know nothing of it) and never leads;
// it is an address a client may still call (see Protection).
func (v View) Suspects() iter.Seq[Member] {
	if v.s == nil {
		return func(func(Member) bool) {}
	}
	return v.s.suspects.all()
}

// DiffSuspects returns what changed in the suspects from old to v, as Diff
// does for the members: the suspects v holds that old did not (put), and
// those old held that v does not (gone).
func (v View) DiffSuspects(old View) (put, gone []Member) {
	var prev, next nameTrie
	if old.s != nil {
		prev = old.s.suspects
	}
	if v.s != nil {
		next = v.s.suspects
	}
	put, gone = diffTries(prev, next)
	slices.SortFunc(put, byPlace)
	slices.SortFunc(gone, byPlace)
	return put, gone
}

// Updated returns a channel that is closed when a newer view replaces this
// one, and at once for the view of a closed Watcher.
func (v View) Updated() <-chan struct{} {
	if v.s == nil {
		return closedChan
	}
	return v.s.replaced
}

// Diff returns what changed from old to v: the members v holds that old
// lacks or holds with another value or create revision (put), and the
// members of old that v lacks or holds with another create revision (gone:
// a member that registered again is in both), each oldest first. Its cost
// grows with the changes, not with the group: views of one Watcher share
// every part of the group that did not change.
func (v View) Diff(old View) (put, gone []Member) {
	put, gone = v.s.diff(old.s)
	slices.SortFunc(put, byPlace)
	slices.SortFunc(gone, byPlace)
	return put, gone
}

// closedChan is the Updated channel of a view that nothing replaces.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

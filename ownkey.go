// Whether a Register's own key, as etcd holds it, is still the
// registration: bound to its lease, holding its value.

package biregister

import (
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// verdict is what a state of the key means for the registration.
type verdict int

const (
	keyOurs     verdict = iota // bound to our lease, holding our value
	keyDeleted                 // gone
	keyReplaced                // written from outside in place, or a key without a lease: to be deleted
	keyTaken                   // created anew on another lease: the name is another member's
)

// judge returns what held, the state of the key, means for reg, the
// current registration.
func (r *register) judge(reg *registration, held keyState) verdict {
	switch {
	case held.createRevision == 0:
		return keyDeleted
	case held.createRevision == reg.revision && held.lease == r.lease && r.mayHold(held.value):
		return keyOurs
	case held.createRevision == reg.revision || held.lease == 0:
		return keyReplaced
	}
	return keyTaken
}

// ours returns the comparisons that hold while the key is reg's: its
// create revision, on our lease.
func (r *register) ours(reg *registration) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(r.key), "=", reg.revision),
		clientv3.Compare(clientv3.LeaseValue(r.key), "=", r.lease),
	}
}

// keyLost reports whether snap shows the registration gone or not its own,
// and drops it then, for the loop to register again. A view that has not
// applied the registration's last write cannot tell — unless it is of
// another incarnation of etcd (restored from a backup, say), whose
// revisions say nothing of that write's.
func (r *register) keyLost(snap *snapshot) bool {
	reg := r.current.Load()
	if reg == nil || snap.incarnation == r.writtenIn && snap.applied < r.written {
		return false
	}
	held := snap.own
	if !sameCluster(snap.cluster, reg.cluster) {
		held = keyState{} // another etcd: the registration is not there
	}
	if r.judge(reg, held) == keyOurs {
		r.value = held.value // if it is an unsure one, its write went through
		r.written = max(r.written, held.modRevision)
		return false
	}
	r.notOurs(reg, held)
	return true
}

// notOurs drops reg, whose key etcd holds as held, which is not the
// registration's any more, for the loop to register again: after deleting
// the key first if it was written from outside in place.
func (r *register) notOurs(reg *registration, held keyState) {
	switch verdict := r.judge(reg, held); {
	case verdict == keyReplaced:
		r.squatter = held.modRevision
		r.watcher.logger.Warn("biregister: key written from outside, registering again", "key", r.key, "cause", causeKeyReplaced)
		r.lose(causeKeyReplaced)
	case !reg.clock.alive():
		// Gone with the lease, most likely: expired while nothing renewed
		// it (a pause, an outage), not deleted from outside.
		r.watcher.logger.Warn("biregister: lease expired, registering again", "key", r.key, "cause", causeLeaseLost)
		r.lose(causeLeaseLost)
	default:
		r.watcher.logger.Warn("biregister: key deleted, registering again", "key", r.key, "cause", causeKeyDeleted)
		r.lose(causeKeyDeleted)
	}
}

// maxUnsure bounds the values kept whose writes got no answer: a SetValue
// retried through an outage must not grow the Register.
const maxUnsure = 8

// mayHold reports whether etcd may hold value at the key by a write of the
// Register's: the value etcd last accepted, or one whose write got no
// answer.
func (r *register) mayHold(value string) bool {
	return value == r.value || slices.Contains(r.unsure, value)
}

// unanswered records value, whose write got no answer: etcd may hold it.
func (r *register) unanswered(value string) {
	if len(r.unsure) == maxUnsure {
		r.unsure = r.unsure[1:]
	}
	r.unsure = append(r.unsure, value)
}

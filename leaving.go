// Graceful leaves: how a member that leaves on purpose tells every watcher
// so, when etcd gives its leave and a loss the same plain DELETE.

package biregister

import (
	"bytes"
	"maps"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// leavingDir is where, under a group's prefix, a member about to leave on
// purpose writes its marker: the key leavingDir + name, holding the create
// revision of the registration that leaves, on the registration's lease.
// The key is deeper than a member's, so no reader of members (this
// library's, since its first version, or the operator command) takes it
// for one; it goes with the lease, at the latest when the lease expires.
// A member's DELETE is a graceful leave when the marker of its name and
// create revision is there before it, or comes in the same revision.
const leavingDir = ".leaving/"

// leavingKey returns the marker key of name under prefix.
func leavingKey(prefix, name string) string { return prefix + leavingDir + name }

// leavingOf returns the name whose marker kv is, and the create revision
// it marks (0 for a DELETE, which carries no value), or false if kv is not
// a marker under prefix.
func leavingOf(prefix string, kv *mvccpb.KeyValue) (string, int64, bool) {
	dir := len(prefix) + len(leavingDir)
	if len(kv.Key) <= dir || string(kv.Key[:len(prefix)]) != prefix || string(kv.Key[len(prefix):dir]) != leavingDir {
		return "", 0, false
	}
	name := kv.Key[dir:]
	if bytes.IndexByte(name, '/') >= 0 {
		return "", 0, false
	}
	revision, _ := strconv.ParseInt(string(kv.Value), 10, 64)
	return string(name), revision, true
}

// leavingValue is what a marker holds for a registration made at revision.
func leavingValue(revision int64) string { return strconv.FormatInt(revision, 10) }

// leaves is the markers a view knows: name → the create revision marked.
// A published view's map never changes: a change copies it (they are few,
// and live for a leave).
type leaves map[string]int64

// marking reports whether m's DELETE is a graceful leave.
func (l leaves) marking(m Member) bool {
	revision, ok := l[m.Name]
	return ok && revision == m.CreateRevision
}

// with returns l with name marked at revision (or unmarked, at 0), copied
// unless l is the batch's own copy already.
func (l leaves) with(name string, revision int64, own *bool) leaves {
	if !*own {
		l, *own = maps.Clone(l), true
		if l == nil {
			l = leaves{}
		}
	}
	if revision == 0 {
		delete(l, name)
	} else {
		l[name] = revision
	}
	return l
}

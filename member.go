// Members: what a member is, and which keys under a prefix are members.

package biregister

import (
	"bytes"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Member is one member of a group.
type Member struct {
	Name           string
	Value          string
	CreateRevision int64
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

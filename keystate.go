// What etcd held at one key: the state a Register judges its own key by,
// read from an event or a listing.

package biregister

import (
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// keyState is what etcd held at one key at one revision.
type keyState struct {
	createRevision int64 // 0 while the key is absent
	modRevision    int64 // of the last write, or of the deletion
	lease          clientv3.LeaseID
	value          string
}

// keyStateOf returns the state an event left its key in.
func keyStateOf(ev *clientv3.Event) keyState {
	if ev.Type == mvccpb.DELETE {
		return keyState{modRevision: ev.Kv.ModRevision}
	}
	return keyStateOfKV(ev.Kv)
}

// keyStateOfKV returns the state of a key read from etcd.
func keyStateOfKV(kv *mvccpb.KeyValue) keyState {
	return keyState{
		createRevision: kv.CreateRevision,
		modRevision:    kv.ModRevision,
		lease:          clientv3.LeaseID(kv.Lease),
		value:          string(kv.Value),
	}
}

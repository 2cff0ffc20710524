// Listing: reading every member of a group at one revision.

package biregister

import (
	"context"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// listPageSize bounds one range response of a listing, so that a group of
// any size is read without one giant message.
const listPageSize = 1000

// list reads every member at one revision, page by page, and returns the
// header of the first page.
func (w *watcher) list(ctx context.Context) ([]Member, *etcdserverpb.ResponseHeader, error) {
	// A member cut off from its cluster's leader would hold a linearizable
	// read until ctx ends; with WithRequireLeader it refuses at once, and
	// the client retries on another member.
	ctx = clientv3.WithRequireLeader(ctx)
	end := clientv3.GetPrefixRangeEnd(w.prefix)
	key := w.prefix
	var members []Member
	var header *etcdserverpb.ResponseHeader
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if header != nil {
			// Every page reads the first page's revision, so the listing is one
			// consistent snapshot however long it takes.
			opts = append(opts, clientv3.WithRev(header.Revision))
		}
		resp, err := w.client.Get(ctx, key, opts...)
		if err != nil {
			return nil, nil, err
		}
		if header == nil {
			header = resp.Header
		}
		for _, kv := range resp.Kvs {
			if m, ok := newMember(w.prefix, kv); ok {
				members = append(members, m)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return members, header, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

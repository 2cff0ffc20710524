// Listing the groups under a root: each group's size and leader, read once
// at one revision, keys only, in pages of bounded size.

package biregister

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// GroupSummary is one group under a root, as ListGroups reads it.
type GroupSummary struct {
	Name    string // the group's prefix is the root, Name and "/"
	Members int    // how many members it has
	Leader  string // the name of its oldest member
	Term    int64  // the create revision of the leader's registration
}

// ListGroups returns the groups under root, in name order, and the etcd
// revision it read them at. A group is a prefix root + g + "/", g not empty
// and without '/', that has members: keys directly under it, as a Watcher
// of that prefix sees them. Deeper keys (a sub-group's, the markers of
// graceful leaves) are no members, and keys directly under root are in no
// group. ListGroups reads keys only, never values, so that its cost does not
// grow with the members' values; it reads them once, in pages of bounded
// size, every page at the revision of the first, as List does, and holds a
// summary per group, not the members. It takes List's arguments.
func ListGroups(endpoints []string, root string, ttl int64, opts ...Option) (groups []GroupSummary, revision int64, err error) {
	c, err := connect(endpoints, root, ttl, opts)
	if err != nil {
		return nil, 0, err
	}
	defer c.release()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ttl)
	defer cancel()
	groups, revision, err = listRoot(ctx, c.client, c.prefix, listPageBytes, c.cfg.logger)
	if err != nil {
		return nil, 0, fmt.Errorf("biregister: list the groups under %q: %w", c.prefix, err)
	}
	return groups, revision, nil
}

// listRoot reads the groups under root, whose keys are read in pages of
// about pageBytes. A revision compacted before the last page was read makes
// it start again at a new one.
func listRoot(ctx context.Context, client *clientv3.Client, root string, pageBytes int, logger *slog.Logger) ([]GroupSummary, int64, error) {
	// As listGroup: a member cut off from its cluster's leader refuses at
	// once, and the client asks another.
	ctx = clientv3.WithRequireLeader(ctx)
	for {
		r := rootReader{client: client, root: root, pageBytes: pageBytes}
		err := r.read(ctx)
		if !errors.Is(err, rpctypes.ErrCompacted) {
			slices.SortFunc(r.groups, func(a, b GroupSummary) int { return strings.Compare(a.Name, b.Name) })
			return r.groups, r.revision, err
		}
		logger.Debug("biregister: listed revision compacted meanwhile, listing the root again", "revision", r.revision)
	}
}

// rootReader reads the keys under a root, page by page, every page at the
// revision of the first, and sums up each group it meets.
type rootReader struct {
	// Set by listRoot.
	client    *clientv3.Client
	root      string
	pageBytes int

	// Set by read.
	revision int64 // of the first page; 0 before it
	// groups are in the order of their keys, which is not their names'
	// ("a-b/" comes before "a/"), but a group's keys are all together: only
	// the last may grow.
	groups []GroupSummary
	bytes  int // the size of the keys read, which sizes the next page
	keys   int
}

// read reads every key under the root.
func (r *rootReader) read(ctx context.Context) error {
	from, end := r.root, clientv3.GetPrefixRangeEnd(r.root)
	// Keys only: a key is bounded by etcd's request size as a value is, so
	// the first page holds what a listing's first page holds at the most.
	limit := int64(listFirstPage)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit), clientv3.WithKeysOnly()}
		if r.revision != 0 {
			opts = append(opts, clientv3.WithRev(r.revision))
		}
		resp, err := r.client.Get(ctx, from, opts...)
		if err != nil {
			return err
		}
		if r.revision == 0 {
			r.revision = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			r.add(kv)
			r.bytes += len(kv.Key) + kvOverhead
		}
		r.keys += len(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		// As many keys as fit in pageBytes at their mean size: etcd counts
		// the rest of the range for every page, so pages must not be small.
		limit = max(1, int64(r.pageBytes)*int64(r.keys)/int64(r.bytes))
	}
}

// add counts kv in its group if it is a member of one.
func (r *rootReader) add(kv *mvccpb.KeyValue) {
	rest := kv.Key[len(r.root):]
	slash := bytes.IndexByte(rest, '/')
	if slash <= 0 {
		return // directly under the root, or under root + "/"
	}
	group, name := rest[:slash], rest[slash+1:]
	if len(name) == 0 || bytes.IndexByte(name, '/') >= 0 {
		return // the group's prefix itself, or deeper than a member
	}
	p := place{revision: kv.CreateRevision, name: string(name)}
	last := len(r.groups) - 1
	if last < 0 || r.groups[last].Name != string(group) {
		r.groups = append(r.groups, GroupSummary{Name: string(group), Members: 1, Leader: p.name, Term: p.revision})
		return
	}
	g := &r.groups[last]
	g.Members++
	if p.compare(place{revision: g.Term, name: g.Leader}) < 0 {
		g.Leader, g.Term = p.name, p.revision
	}
}

// Listing: reading every member of a group at one revision, in responses of
// bounded size, without making etcd count the group once per page; and
// List, which does it once, without a Watcher.

package biregister

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// listFirstPage is how many members the first page of a listing asks for,
// before any member's size is known: at etcd's default limit of 1.5 MiB a
// request, and so a value, the page holds at most 30 MiB, within
// listPageBytes. Later pages are sized by the bytes read.
const listFirstPage = 20

// kvOverhead is about what a key-value costs in a range response beyond its
// key and value: revisions, version, lease and field tags.
const kvOverhead = 24

// listSample is how many of the cache's names a re-listing sorts to choose
// where its ranges begin.
const listSample = 4096

// List returns the members of the group under prefix, oldest (the leader)
// first, and the etcd revision it read them at: read once, in pages of
// bounded size, as a Watcher's first listing reads them, without watching
// the group. It takes NewWatcher's arguments: ttl bounds connecting and
// reading, and WithBufferSize does not apply.
func List(endpoints []string, prefix string, ttl int64, opts ...Option) (members []Member, revision int64, err error) {
	c, err := connect(endpoints, prefix, ttl, opts)
	if err != nil {
		return nil, 0, err
	}
	defer c.release()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ttl)
	defer cancel()
	l, err := listGroup(ctx, lister{client: c.client, prefix: c.prefix, pageBytes: listPageBytes}, emptySnapshot(0), c.cfg.logger)
	if err != nil {
		return nil, 0, fmt.Errorf("biregister: list %q: %w", c.prefix, err)
	}
	sortByCreate(l.members)
	return l.members, l.header.Revision, nil
}

// listing is what one listing read: every member of the group at one
// revision.
type listing struct {
	members []Member
	header  *etcdserverpb.ResponseHeader // of the first page
	own     keyState                     // the key ownKey, if one was asked for
	leaving leaves                       // the markers of graceful leaves
}

// listGroup reads every member under spec's prefix at one revision, in
// pages of about spec's pageBytes, planned by the names known of the group
// (see plan), and what etcd holds at spec's ownKey. A revision compacted
// before the last page was read makes it start again at a new one.
func listGroup(ctx context.Context, spec lister, known *snapshot, logger *slog.Logger) (listing, error) {
	// A member cut off from its cluster's leader would hold a linearizable
	// read until ctx ends; with WithRequireLeader it refuses at once, and
	// the client retries on another member.
	ctx = clientv3.WithRequireLeader(ctx)
	for {
		l := spec
		err := l.read(ctx, l.plan(known))
		if !errors.Is(err, rpctypes.ErrCompacted) {
			return listing{members: l.members, header: l.header, own: l.own, leaving: l.leaving}, err
		}
		logger.Debug("biregister: listed revision compacted meanwhile, listing again", "revision", l.header.GetRevision())
	}
}

// lister reads one listing: ranges of keys, page by page, every page at the
// revision of the first.
type lister struct {
	// Set by the caller of listGroup.
	client      *clientv3.Client
	prefix      string
	ownKey      string // a Register's own key, whose state it keeps (own), or ""
	pageBytes   int
	pageTimeout time.Duration // bound of each page's read; 0: ctx's alone

	own     keyState // what the listing read at ownKey
	leaving leaves   // the markers read (leaving.go)

	header  *etcdserverpb.ResponseHeader // of the first page; nil before it
	members []Member
	// The size of the keys read, or before the first page the size of a
	// sample of the cache's members: what sizes the next page.
	bytes int
	kvs   int
}

// read reads the ranges that begin at starts (in order; the first is the
// prefix) and end at the next start, the last at the prefix's end: together
// the whole group.
func (l *lister) read(ctx context.Context, starts []string) error {
	end := clientv3.GetPrefixRangeEnd(l.prefix)
	for i, from := range starts {
		to := end
		if i+1 < len(starts) {
			to = starts[i+1]
		}
		if err := l.readRange(ctx, from, to); err != nil {
			return err
		}
	}
	return nil
}

// readRange reads the keys in [from, to). etcd counts the rest of the range
// for every page with a limit, so a range holds about one page where the
// cache tells how (plan), and a page whose range is known to fit in
// pageBytes asks for it whole: then etcd counts nothing beyond what it
// returns.
func (l *lister) readRange(ctx context.Context, from, to string) error {
	rest := int64(-1) // keys left in [from, to), once a page counted them
	for {
		limit := l.pageLimit()
		switch {
		case rest >= 0 && rest <= limit:
			limit = 0
		case rest >= 0:
			// Pages of even size: the last asks for the rest whole.
			pages := (rest + limit - 1) / limit
			limit = (rest + pages - 1) / pages
		}
		opts := []clientv3.OpOption{clientv3.WithRange(to), clientv3.WithLimit(limit)}
		if l.header != nil {
			// Every page reads the first page's revision, so the listing is
			// one consistent snapshot however long it takes.
			opts = append(opts, clientv3.WithRev(l.header.Revision))
		}
		resp, err := l.get(ctx, from, opts)
		if err != nil {
			return err
		}
		if l.header == nil {
			l.header = resp.Header
			// The first page counts what its range holds: room for that.
			l.members = slices.Grow(l.members, int(resp.Count))
		}
		var last []byte
		if len(resp.Kvs) > 0 {
			last = resp.Kvs[len(resp.Kvs)-1].Key
		}
		for i, kv := range resp.Kvs {
			l.bytes += len(kv.Key) + len(kv.Value) + kvOverhead
			if l.ownKey != "" && string(kv.Key) == l.ownKey {
				l.own = keyStateOfKV(kv)
			}
			if m, ok := newMember(l.prefix, kv); ok {
				l.members = append(l.members, m)
			} else if name, marked, ok := leavingOf(l.prefix, kv); ok && marked != 0 {
				if l.leaving == nil {
					l.leaving = leaves{}
				}
				l.leaving[name] = marked
			}
			// Copied into m: the collector may take it before the page ends.
			resp.Kvs[i] = nil
		}
		l.kvs += len(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		rest = resp.Count - int64(len(resp.Kvs))
		from = string(last) + "\x00"
	}
}

// get reads one page, within pageTimeout: a big group read over a slow link
// takes as many timeouts as it has pages, and a bound on the whole would
// make it never list again.
func (l *lister) get(ctx context.Context, from string, opts []clientv3.OpOption) (*clientv3.GetResponse, error) {
	if l.pageTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.pageTimeout)
		defer cancel()
	}
	return l.client.Get(ctx, from, opts...)
}

// pageLimit returns how many keys the next page asks for: as many as fit in
// pageBytes at the mean size read so far.
func (l *lister) pageLimit() int64 {
	if l.kvs == 0 {
		return listFirstPage
	}
	return max(1, int64(l.pageBytes)*int64(l.kvs)/int64(l.bytes))
}

// plan returns where the ranges of the listing begin, in order, the prefix
// first: one range for a group that known does not hold, or else ranges of
// about pageBytes each by the sizes of its members, so that no page makes
// etcd count keys beyond its own range. The split keys are quantiles of a
// sample of its names: byName yields members in the order of their
// names' hashes, so its first members are a sample unrelated to the order
// of the names, read without visiting the rest. The sample's sizes size
// the first page.
func (l *lister) plan(known *snapshot) []string {
	starts := []string{l.prefix}
	var sample []string
	for m := range known.byName() {
		if len(sample) == listSample {
			break
		}
		sample = append(sample, m.Name)
		l.bytes += len(l.prefix) + len(m.Name) + len(m.Value) + kvOverhead
	}
	l.kvs = len(sample)
	// Room for the group as s knows it, and for some growth.
	l.members = make([]Member, 0, known.size()+known.size()/8)
	if len(sample) == 0 {
		return starts
	}
	ranges := min(known.size()*l.bytes/len(sample)/l.pageBytes+1, len(sample))
	if ranges == 1 {
		return starts // one page holds the group: nothing to sort
	}
	slices.Sort(sample)
	for i := 1; i < ranges; i++ {
		if key := l.prefix + sample[i*len(sample)/ranges]; key != starts[len(starts)-1] {
			starts = append(starts, key)
		}
	}
	return starts
}

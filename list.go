// List: reading a group once, without watching it.

package biregister

import (
	"context"
	"fmt"
)

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
	l, err := listGroup(ctx, lister{client: c.client, prefix: c.prefix, pageBytes: listPageBytes}, nameTrie{}, c.cfg.logger)
	if err != nil {
		return nil, 0, fmt.Errorf("biregister: list %q: %w", c.prefix, err)
	}
	sortByCreate(l.members)
	return l.members, l.header.Revision, nil
}

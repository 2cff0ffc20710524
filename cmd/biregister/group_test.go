// The group watch keeps, as of the changes it printed.

package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

// TestGroupForgetsMembersGone: the group that watch keeps holds the places
// of members gone no longer than it has members, and then some.
func TestGroupForgetsMembersGone(t *testing.T) {
	cluster := setup(t, true)
	ctx := context.Background()
	cli := cluster.Client(t)
	keys := fill(t, cli, "/svc/gone/", 500, 128)
	w, err := biregister.NewWatcher(cluster.Endpoints(), "/svc/gone/", 5)
	require.NoError(t, err)
	defer w.Close()
	g := newGroup(w)

	// All but the leader leave, newest first: their places are not the
	// leader's, the first, so none is dropped as it comes first.
	for last := len(keys); last > 1; last -= 128 {
		var ops []clientv3.Op
		for i := last - 1; i >= max(1, last-128); i-- {
			ops = append(ops, clientv3.OpDelete(keys[i]))
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
	}
	for len(g.members) > 1 {
		select {
		case c := <-w.Changes():
			if !g.shown(c) {
				assert.False(t, g.apply(c), "%v", c)
			}
		case <-time.After(waitFor):
			t.Fatalf("%d members left", len(g.members))
		}
	}
	assert.LessOrEqual(t, len(g.ages), 2*len(g.members)+64)
	assert.Equal(t, place{created: g.members["m000"], name: "m000"}, g.leader)
}

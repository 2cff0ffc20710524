package biregister_test

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

// A View is one snapshot; Diff says what changed since an older one.
func TestViewDiff(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		_, err := cli.Put(ctx, "/view/"+n, "v"+n)
		require.NoError(t, err)
	}
	w := startWatcher(t, etcd.Endpoints(), "/view")
	first := w.View()
	require.Equal(t, 3, first.Len())
	leader, ok := first.Leader()
	require.True(t, ok)
	assert.Equal(t, "a", leader.Name)
	names := func(ms []biregister.Member) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	assert.Equal(t, []string{"a", "b", "c"}, names(slices.Collect(first.All())))

	// b changes its value, c registers again, a leaves, d joins.
	_, err := cli.Put(ctx, "/view/b", "vb2")
	require.NoError(t, err)
	_, err = cli.Txn(ctx).Then(clientv3.OpDelete("/view/c")).Commit()
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/view/c", "vc")
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "/view/a")
	require.NoError(t, err)
	resp, err := cli.Put(ctx, "/view/d", "vd")
	require.NoError(t, err)
	for w.View().Revision() < resp.Header.Revision {
		<-w.View().Updated()
	}
	now := w.View()
	put, gone := now.Diff(first)
	assert.Equal(t, []string{"b", "c", "d"}, names(put))
	assert.Equal(t, []string{"a", "c"}, names(gone))
	put, gone = now.Diff(now)
	assert.Empty(t, put)
	assert.Empty(t, gone)
	m, ok := now.Member("b")
	require.True(t, ok)
	assert.Equal(t, "vb2", m.Value)
	_, ok = now.Member("a")
	assert.False(t, ok)
	select {
	case <-first.Updated():
	default:
		t.Fatal("an older view reads as replaced")
	}

	// The zero View is an empty group; Diff against it lists everything.
	var zero biregister.View
	put, gone = now.Diff(zero)
	assert.Equal(t, []string{"b", "c", "d"}, names(put))
	assert.Empty(t, gone)
	_, gone = zero.Diff(now)
	assert.Len(t, gone, 3)

	// After Close, Updated (taken then) is closed, and the view is empty.
	w.Close()
	select {
	case <-w.Updated():
	default:
		t.Fatal("Updated after Close never closes")
	}
	select {
	case <-w.View().Updated():
	default:
		t.Fatal("View().Updated after Close never closes")
	}
	assert.Zero(t, w.View().Len())
}

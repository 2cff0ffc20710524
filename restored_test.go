package biregister_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/leakcheck"
)

// etcd that lost its data and was started again with the same flags (an
// emptyDir volume, a lost disk) is a new etcd with the same cluster id: the
// id derives from the member's peer URLs and the cluster token alone. Its
// revisions start again at 1, and a Register that was the first writer of
// the old one is the first writer of the new one. It must not keep a
// registration at the create revision its old one had: the fence of the
// old term would hold for it. (etcdtest.Wipe changes the token, and with it
// the cluster id: TestFenceOfTermAcrossReplacedEtcd.)
func TestFenceAcrossWipeWithSameClusterID(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	m, start := sameFlagsMember(t)
	endpoints := []string{m.ClientURL.String()}
	a := startRegister(t, endpoints, "/wiped", "a", "v", 2)
	term := waitTerm(t, a)
	cli := memberClient(t, endpoints)
	before, err := cli.Get(context.Background(), "/wiped/a")
	require.NoError(t, err)

	// etcd loses its data and starts again with the same flags.
	start(func() { require.NoError(t, os.RemoveAll(m.Dir)) })

	// Ended by the loss, or by the deadline first if etcd took longer
	// than the ttl to come back.
	select {
	case <-term.Done():
	case <-time.After(waitFor):
		t.Fatal("the term outlived its etcd")
	}
	require.True(t, errors.Is(context.Cause(term), biregister.ErrRegistrationLost) || errors.Is(context.Cause(term), biregister.ErrLeaseDeadline),
		"the term ended with %v", context.Cause(term))
	require.Eventually(t, func() bool { return a.AmILeader() && a.Status().Registered }, waitFor, time.Millisecond)
	after, err := cli.Get(context.Background(), "/wiped/a")
	require.NoError(t, err)
	require.Len(t, after.Kvs, 1)
	t.Logf("cluster id %x then %x; old registration at revision %d, new one at %d",
		before.Header.ClusterId, after.Header.ClusterId, term.Revision(), after.Kvs[0].CreateRevision)
	fenced, err := cli.Txn(context.Background()).If(term.Fence()).Then(clientv3.OpPut("/owner", "a")).Commit()
	require.NoError(t, err)
	require.False(t, fenced.Succeeded, "the fence of a term of the lost etcd holds in the new one")
}

// etcd restored from a backup taken before a SetValue (here: its data
// directory as it was; a snapshot restore with the same flags gives the
// same: the cluster id, an older revision, the member's key and lease as
// they were) holds the value from before on the member's live lease. The
// Register notices that the view is of another incarnation of etcd, whose
// revisions say nothing of its write's, and writes its value again: etcd
// and every watcher then hold the value the Register has.
func TestRestoredEtcdValueRepaired(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	m, start := sameFlagsMember(t)
	endpoints := []string{m.ClientURL.String()}
	a := startRegister(t, endpoints, "/restored", "a", "old", 5)
	cli := memberClient(t, endpoints)

	// The backup: the data directory of the stopped member.
	backup := filepath.Join(t.TempDir(), "backup")
	start(func() { require.NoError(t, os.CopyFS(backup, os.DirFS(m.Dir))) })
	// Writes after the backup, so that the restored revision is well
	// below the SetValue's.
	for range 5 {
		_, err := cli.Put(context.Background(), "/elsewhere", "x")
		require.NoError(t, err)
	}
	require.NoError(t, a.SetValue(context.Background(), "new"))
	// The view holds the write before etcd goes: a view that never saw
	// it is not told apart from an etcd restored to that view's revision.
	require.Eventually(t, func() bool { return a.GetValueByName("a") == "new" }, waitFor, time.Millisecond)
	listings := a.Status().Listings

	start(func() {
		require.NoError(t, os.RemoveAll(m.Dir))
		require.NoError(t, os.CopyFS(m.Dir, os.DirFS(backup)))
		require.NoError(t, os.Chmod(m.Dir, 0o700))
	})
	// An idle Watcher may notice only at a check of its silent stream
	// (5 s of silence, then a read): on a busy machine, more than waitFor.
	require.Eventually(t, func() bool { return a.Status().Listings > listings }, 3*waitFor, 5*time.Millisecond,
		"the Watcher never noticed the rewound etcd")
	require.Eventually(t, func() bool {
		resp, err := cli.Get(context.Background(), "/restored/a")
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "new"
	}, waitFor, 50*time.Millisecond, "etcd holds another value at the key than the Register's %q", "new")
	require.Eventually(t, func() bool { return a.GetValueByName("a") == "new" }, waitFor, 5*time.Millisecond)
}

// sameFlagsMember starts a single-member etcd and returns it with start,
// which stops it, runs meanwhile (a wipe, a restore), and starts it again
// with the same flags: the same cluster id.
func sameFlagsMember(t *testing.T) (devetcd.Member, func(meanwhile func())) {
	urls, err := devetcd.FreeURLs(2)
	require.NoError(t, err)
	m := devetcd.Member{Name: "m", Dir: filepath.Join(t.TempDir(), "m"), ClientURL: urls[0], PeerURL: urls[1]}
	var e *embed.Etcd
	run := func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		e, err = devetcd.StartMember(ctx, devetcd.Config(m, []devetcd.Member{m}, "same-flags", embed.ClusterStateFlagNew))
		require.NoError(t, err)
	}
	run()
	t.Cleanup(func() {
		if e != nil {
			e.Close()
		}
	})
	return m, func(meanwhile func()) {
		e.Close()
		e = nil // meanwhile may fail the test: nothing to close then
		meanwhile()
		run()
	}
}

// memberClient returns a client of endpoints, closed when the test ends.
func memberClient(t *testing.T, endpoints []string) *clientv3.Client {
	cli, err := devetcd.NewClient(endpoints, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

package biregister_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/syncbuf"
)

// A process that restarts under its own name while the lease of its previous
// run is still alive waits, with WithNameWait, for that lease to expire, then
// registers; the previous run's fence never holds for the new registration.
func TestRestartWaitsForPreviousLease(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	// What a crashed run leaves: its key, on a lease nobody renews.
	lease, err := cli.Grant(context.Background(), faultTTL)
	require.NoError(t, err)
	put, err := cli.Put(context.Background(), "/restart/pod-0", "old", clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	previousFence := clientv3.Compare(clientv3.CreateRevision("/restart/pod-0"), "=", put.Header.Revision)

	_, err = biregister.NewRegister(etcd.Endpoints(), "/restart", "pod-0", "new", 5)
	require.ErrorIs(t, err, biregister.ErrNameTaken, "without WithNameWait")

	started := time.Now()
	var logs syncbuf.Buffer
	r := startRegister(t, etcd.Endpoints(), "/restart", "pod-0", "new", 5, biregister.WithNameWait(waitFor),
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	t.Logf("registered %v after the restart (the previous lease: ttl %d s)", time.Since(started), faultTTL)
	// The log says both the wait and its end.
	require.Contains(t, logs.String(), "waiting for its key to go")
	require.Contains(t, logs.String(), `msg="biregister: registered after waiting for the name" prefix=/restart/ key=/restart/pod-0 waited=`)
	require.NotEqual(t, put.Header.Revision, r.MyRevision())
	require.Equal(t, "new", r.GetValueByName("pod-0"))
	resp, err := cli.Txn(context.Background()).If(previousFence).Then(clientv3.OpPut("/restart/owner", "old")).Commit()
	require.NoError(t, err)
	require.False(t, resp.Succeeded, "the previous registration's fence held for the new one")
	require.True(t, r.AmILeader())
}

// WithNameWait never takes over the key of a member that is alive: after
// the wait it fails with ErrNameTaken, and the member keeps its
// registration and its leadership.
func TestNameWaitLeavesLiveMemberAlone(t *testing.T) {
	etcd := startEtcd(t)
	live := startRegister(t, etcd.Endpoints(), "/restart", "pod-0", "live", 5)
	revision := live.MyRevision()

	_, err := biregister.NewRegister(etcd.Endpoints(), "/restart", "pod-0", "other", 5, biregister.WithNameWait(time.Second))
	require.ErrorIs(t, err, biregister.ErrNameTaken)
	require.Equal(t, revision, live.MyRevision())
	require.Equal(t, "live", live.GetValueByName("pod-0"))
	require.True(t, live.AmILeader())

	_, err = biregister.NewRegister(etcd.Endpoints(), "/restart", "pod-1", "v", 5, biregister.WithNameWait(-time.Second))
	require.ErrorIs(t, err, biregister.ErrInvalidArgument)
}

// A process that restarts under its own name, with the same ttl as its
// previous run, waits with WithNameWait for the previous lease to expire and
// registers on the lease it was granted when the wait began: the keeper
// renews that lease at once, an interval after its grant, not an interval
// after the constructor handed it over, when it would have expired.
func TestNameWaitRegistrationOutlivesTheWait(t *testing.T) {
	const ttl = 3
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	// What a run that crashed a keepalive interval after its last renewal
	// leaves: its key, on a lease with ttl - ttl/3 left, which nobody renews.
	lease, err := cli.Grant(context.Background(), ttl-ttl/3)
	require.NoError(t, err)
	_, err = cli.Put(context.Background(), "/restart/pod-0", "old", clientv3.WithLease(lease.ID))
	require.NoError(t, err)

	started := time.Now()
	r := startRegister(t, etcd.Endpoints(), "/restart", "pod-0", "new", ttl, biregister.WithNameWait(waitFor))
	returned := time.Now()
	revision := r.MyRevision()
	got, err := cli.Get(context.Background(), "/restart/pod-0")
	require.NoError(t, err)
	ttlResp, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(got.Kvs[0].Lease))
	require.NoError(t, err)
	t.Logf("registered %v after the start; its lease has %d of %d s left", time.Since(started), ttlResp.TTL, ttlResp.GrantedTTL)
	require.NotZero(t, revision)
	ctx, cancel := context.WithTimeout(context.Background(), 2*ttl*time.Second)
	defer cancel()
	deleted := cli.Watch(ctx, "/restart/pod-0", clientv3.WithRev(revision+1), clientv3.WithFilterPut())
	select {
	case resp := <-deleted:
		t.Fatalf("the registration made after the wait was lost %v after NewRegister returned (%d events); revision now %d",
			time.Since(returned), len(resp.Events), r.MyRevision())
	case <-ctx.Done():
	}
	require.Equal(t, revision, r.MyRevision(), "registered again")
}

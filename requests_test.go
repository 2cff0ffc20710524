package biregister_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/syncbuf"
)

// A SetValue that etcd refuses (a value over its request limit) returns the
// error and leaves the Register as it was: no later registration carries
// the refused value, whatever makes the Register register again.
func TestRefusedSetValueChangesNothing(t *testing.T) {
	huge := strings.Repeat("x", 3<<20) // above etcd's 1.5 MiB request limit
	for _, tc := range []struct {
		name  string
		again func(t *testing.T, cli *clientv3.Client, r biregister.Register)
	}{
		{"Resign", func(t *testing.T, _ *clientv3.Client, r biregister.Register) {
			require.NoError(t, r.Resign(context.Background()))
		}},
		{"deleted from outside", func(t *testing.T, cli *clientv3.Client, r biregister.Register) {
			_, err := cli.Delete(context.Background(), r.MyKey())
			require.NoError(t, err)
		}},
		{"lease revoked from outside", func(t *testing.T, cli *clientv3.Client, r biregister.Register) {
			resp, err := cli.Get(context.Background(), r.MyKey())
			require.NoError(t, err)
			_, err = cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease))
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etcd := startEtcd(t)
			cli := etcd.Client(t)
			r := startRegister(t, etcd.Endpoints(), "/refused", "a", "small", 2)
			before := r.MyRevision()
			require.Error(t, r.SetValue(context.Background(), huge))
			require.Equal(t, "small", r.GetValueByName("a"))
			tc.again(t, cli, r)
			require.Eventually(t, func() bool { return boundToLiveLease(t, cli, r.MyKey(), "small", before) },
				waitFor, 5*time.Millisecond, "registered again with the refused value, or not at all")
			require.Eventually(t, func() bool { return r.Status().Registered && r.GetValueByName("a") == "small" },
				waitFor, 5*time.Millisecond)
		})
	}

	// While registering again, SetValue registers with the new value; a
	// refused one leaves the old value for the registration to come.
	t.Run("while registering again", func(t *testing.T) {
		etcd := startEtcd(t)
		cli := etcd.Client(t)
		r := startRegister(t, etcd.Endpoints(), "/refused", "a", "small", 2)
		ctx := context.Background()
		squat := takeName(t, cli, r)
		require.Eventually(t, func() bool { return !r.Status().Registered }, waitFor, 5*time.Millisecond)
		require.Error(t, r.SetValue(ctx, huge))
		err := r.SetValue(ctx, "also refused: the name is taken")
		require.ErrorIs(t, err, biregister.ErrNameTaken)
		_, err = cli.Revoke(ctx, squat)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return boundToLiveLease(t, cli, r.MyKey(), "small", 0) },
			waitFor, 5*time.Millisecond)
		require.NoError(t, r.SetValue(ctx, "new"))
		require.True(t, boundToLiveLease(t, cli, r.MyKey(), "new", 0))
	})
}

// takeName puts r's key on a lease of another owner, created anew (so that
// it is not r's registration written from outside, but another member's),
// and returns that lease.
func takeName(t *testing.T, cli *clientv3.Client, r biregister.Register) clientv3.LeaseID {
	t.Helper()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 600)
	require.NoError(t, err)
	// The Register puts its key back at once: delete until ours is in.
	require.Eventually(t, func() bool {
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(r.MyKey()), "=", 0)).
			Then(clientv3.OpPut(r.MyKey(), "squatter", clientv3.WithLease(lease.ID))).
			Else(clientv3.OpDelete(r.MyKey())).
			Commit()
		return err == nil && resp.Succeeded
	}, waitFor, time.Millisecond)
	return lease.ID
}

// A SetValue waiting on one endpoint of two that stalls never stops the
// keepalives: the lease holds while the other endpoint serves, and the
// member never leaves anyone's view.
func TestRequestsNeverStarveTheLease(t *testing.T) {
	etcd := startEtcd(t)
	stalled := faultproxy.Start(t, etcd.Endpoint(0))
	healthy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 2
	r := startRegister(t, []string{stalled.Endpoint(), healthy.Endpoint()}, "/starve", "a", "v", ttl)
	w := startWatcher(t, etcd.Endpoints(), "/starve")
	recvUntil(t, w.Changes(), func(c biregister.Change) bool { return c.Name == "a" })
	before := r.MyRevision()

	stalled.Stall()
	defer stalled.Heal()
	// Requests one after the other for 3 ttl: half of them go to the
	// stalled endpoint and wait there.
	end := time.Now().Add(3 * ttl * time.Second)
	stuck := 0
	for i := 0; time.Now().Before(end); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*ttl*time.Second)
		if err := r.SetValue(ctx, fmt.Sprint(i)); err != nil {
			stuck++
		}
		cancel()
	}
	t.Logf("%d requests waited on the stalled endpoint", stuck)
	require.Positive(t, stuck, "no request reached the stalled endpoint")
	for {
		select {
		case c := <-w.Changes():
			require.NotEqual(t, biregister.OpDelete, c.Op, "the member left the group: its lease lapsed")
			continue
		default:
		}
		break
	}
	require.Equal(t, before, r.MyRevision(), "the member registered again: its lease lapsed")
}

// Status.Since is when the registration was lost, however many times
// registering again fails meanwhile.
func TestStatusSinceLoss(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	var logs syncbuf.Buffer
	r := startRegister(t, etcd.Endpoints(), "/since", "a", "v", 2, biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	squat := takeName(t, cli, r)
	require.Eventually(t, func() bool { return !r.Status().Registered }, waitFor, time.Millisecond)
	lost := r.Status().Since
	require.Eventually(t, func() bool { return strings.Count(logs.String(), "registering again failed") >= 3 },
		waitFor, 5*time.Millisecond)
	require.Equal(t, lost, r.Status().Since, "Since moved while registering again failed")
	_, err := cli.Revoke(context.Background(), squat)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.Status().Registered }, waitFor, time.Millisecond)
	require.True(t, r.Status().Since.After(lost))
}

// WithNameWait of the largest Duration waits as long as it takes: on a free
// name it registers at once (nameWait + ttl must not overflow).
func TestNameWaitForever(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/forever", "a", "v", 2, biregister.WithNameWait(math.MaxInt64))
	require.True(t, r.AmILeader())
}

// NewRegisterNoName gets a name within its ttl in a group whose members
// write their values every millisecond, over a link with 2 ms to etcd,
// with one lease for all its tries and a bounded load on etcd.
func TestRegisterNoNameInBusyGroup(t *testing.T) {
	etcd := startEtcd(t)
	slow := faultproxy.Start(t, etcd.Endpoint(0))
	slow.DelayReplies(2 * time.Millisecond)
	busy := []biregister.Register{
		startRegister(t, etcd.Endpoints(), "/busy", "b", "0", 5),
		startRegister(t, etcd.Endpoints(), "/busy", "c", "0", 5),
	}
	ctx, stop := context.WithCancel(context.Background())
	var writers sync.WaitGroup
	for _, b := range busy {
		writers.Add(1)
		go func() {
			defer writers.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				_ = b.SetValue(ctx, fmt.Sprint(i))
				<-tick.C
			}
		}()
	}
	defer writers.Wait()
	defer stop()

	before, err := benchutil.Scrape(etcd.Endpoint(0))
	require.NoError(t, err)
	r, err := biregister.NewRegisterNoName([]string{slow.Endpoint()}, "/busy", "v", 2)
	require.NoError(t, err)
	defer r.Close()
	after, err := benchutil.Scrape(etcd.Endpoint(0))
	require.NoError(t, err)
	calls := after.DeltaBy(before, "grpc_server_started_total", "grpc_method")
	t.Logf("NewRegisterNoName: LeaseGrant %v, Txn %v (the writers' too), LeaseRevoke %v",
		calls["LeaseGrant"], calls["Txn"], calls["LeaseRevoke"])
	assert.EqualValues(t, 1, calls["LeaseGrant"], "one lease for every try")
	assert.Zero(t, calls["LeaseRevoke"])
	assert.Len(t, r.MyName(), 20)
}

// Names can be megabytes long; an error quotes only the start of a key.
func TestErrorQuotesKeyShort(t *testing.T) {
	etcd := startEtcd(t)
	name := strings.Repeat("n", 2<<20)
	_, err := biregister.NewRegister(etcd.Endpoints(), "/huge-name", name, "v", 2)
	require.Error(t, err)
	require.Less(t, len(err.Error()), 1024, "an error of %d bytes", len(err.Error()))
}

// A SetValue whose ctx had already ended when it was called returns
// ctx.Err() and, like every request that fails, leaves the Register as it
// was: no value is written. (Handing the request to an idle loop and the
// ended ctx are both ready: a select would write the value about half of
// the time.)
func TestSetValueWithEndedContextChangesNothing(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/ended", "a", "v0", 5)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 20 {
		// Pacing, not a wait for a condition: the loop is idle, waiting
		// for requests, as it is between a program's calls.
		time.Sleep(10 * time.Millisecond)
		require.ErrorIs(t, r.SetValue(ended, fmt.Sprintf("v%d", i+1)), context.Canceled)
	}
	// The loop serves requests in order: once this one is done, so are the
	// twenty before it.
	require.NoError(t, r.SetValue(context.Background(), "last"))
	resp, err := r.EtcdClient().Get(context.Background(), r.MyKey())
	require.NoError(t, err)
	// Version 1 is the registration, the last is "last".
	require.EqualValues(t, 2, resp.Kvs[0].Version,
		"%d of 20 SetValue calls that returned context.Canceled wrote their value", resp.Kvs[0].Version-2)
}

// The same for Resign: a Resign whose ctx had already ended returns
// ctx.Err(), and the member neither steps down nor registers again.
func TestResignWithEndedContextChangesNothing(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/ended", "a", "v", 5)
	require.Eventually(t, r.AmILeader, waitFor, 5*time.Millisecond)
	revision := r.MyRevision()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for range 10 {
		time.Sleep(10 * time.Millisecond) // pacing: the loop waits for requests
		require.ErrorIs(t, r.Resign(ended), context.Canceled)
	}
	require.NoError(t, r.SetValue(context.Background(), "v")) // after every request before it
	require.Equal(t, revision, r.MyRevision(), "a Resign that returned context.Canceled resigned")
}

package biregister_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// leasesLeft returns the leases etcd holds, and says which, with the keys
// attached to each.
func leasesLeft(t *testing.T, cli *clientv3.Client) (ids []clientv3.LeaseID, said string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := cli.Leases(ctx)
	require.NoError(t, err)
	var each []string
	for _, l := range resp.Leases {
		ttl, err := cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
		require.NoError(t, err)
		if ttl.TTL <= 0 {
			continue // gone meanwhile
		}
		keys := make([]string, len(ttl.Keys))
		for i, k := range ttl.Keys {
			keys[i] = string(k)
		}
		ids = append(ids, l.ID)
		each = append(each, fmt.Sprintf("lease %x (ttl %d s, keys %q)", l.ID, ttl.TTL, keys))
	}
	return ids, strings.Join(each, ", ")
}

// Close leaves no lease behind, whatever the Register was doing: Close
// while it registers again after its lease was revoked or its key deleted
// from outside, with etcd's answers 100 ms late, at once, while a grant is
// on its way, or some milliseconds later. Right after Close, etcd holds no
// lease at all: neither one whose grant Close cut short (etcd granted it,
// the answer never came) nor an old one whose revoke it cut short.
func TestCloseLeavesNoLease(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 3
	provoke := map[string]func(key string) error{
		"lease revoked": func(key string) error {
			resp, err := cli.Get(context.Background(), key)
			if err != nil || len(resp.Kvs) == 0 {
				return fmt.Errorf("get %s: %v, %d keys", key, err, len(resp.Kvs))
			}
			_, err = cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease))
			return err
		},
		"key deleted": func(key string) error {
			_, err := cli.Delete(context.Background(), key)
			return err
		},
	}
	orphans := 0
	for i := range stressCount(24, 200) {
		how := "lease revoked"
		if i%4 == 3 {
			how = "key deleted"
		}
		moment := time.Duration(i%6) * 60 * time.Millisecond
		a, err := biregister.NewRegister([]string{proxy.Endpoint()}, "/orphans", "a", "v", ttl)
		require.NoError(t, err)
		proxy.DelayReplies(100 * time.Millisecond)
		require.NoError(t, provoke[how](a.MyKey()))
		if i%3 == 0 && how == "lease revoked" {
			// At the moment a grant of a new lease is under way.
			moment = 0
			require.Eventually(t, func() bool {
				return strings.Contains(benchutil.Stacks(), "etcdserverpb.(*leaseClient).LeaseGrant")
			}, waitFor, 100*time.Microsecond, "no grant of a new lease")
		}
		// Not a wait for anything: the moment of Close, varied.
		time.Sleep(moment)
		a.Close()
		proxy.Heal()
		if ids, said := leasesLeft(t, cli); len(ids) > 0 {
			orphans++
			t.Errorf("iteration %d (%s, Close %v later): Close left %s", i, how, moment, said)
			for _, id := range ids { // so that the next iteration starts clean
				_, err := cli.Revoke(context.Background(), id)
				require.NoError(t, err)
			}
		}
	}
	t.Logf("%d iterations left a lease behind", orphans)
}

// TestCloseWithOneEndpointStalledLeavesNoKey: a Close whose graceful delete
// waits on a member that takes requests and answers none still revokes the
// lease in time, on another member: no key stays after Close.
func TestCloseWithOneEndpointStalledLeavesNoKey(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 3)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.DirectEndpoint(1), etcd.DirectEndpoint(2)}})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	for i := range 8 { // the client sends a request to the stalled member one time in three
		r, err := biregister.NewRegister(etcd.Endpoints(), "/closestalled/", fmt.Sprintf("s%d", i), "v", 30)
		require.NoError(t, err)
		etcd.Front(0).StallRequests()
		r.Close()
		etcd.Front(0).Heal()
		got, err := cli.Get(context.Background(), r.MyKey(), clientv3.WithCountOnly())
		require.NoError(t, err)
		require.Zero(t, got.Count, "%s: key left after Close", r.MyKey())
	}
}

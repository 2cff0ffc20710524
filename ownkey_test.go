package biregister_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
)

// boundToLiveLease reports whether etcd holds key with value, created after
// revision, on a live lease that lists the key.
func boundToLiveLease(t *testing.T, cli *clientv3.Client, key, value string, after int64) bool {
	t.Helper()
	ctx := context.Background()
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		return false
	}
	kv := resp.Kvs[0]
	if string(kv.Value) != value || kv.CreateRevision <= after || kv.Lease == 0 {
		return false
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease), clientv3.WithAttachedKeys())
	if err != nil || ttl.TTL <= 0 {
		return false
	}
	for _, k := range ttl.Keys {
		if string(k) == key {
			return true
		}
	}
	return false
}

// A member's key is its own: bound to its lease, holding its value. Written
// from outside in any other way — deleted, put without a lease (etcdctl
// put), put with another lease, put with another value on our lease — the
// registration is lost: its term ends, its fence no longer holds, and the
// Register puts a key of its own back, on a live lease, so that the key
// still goes when the process does (here: when its link to etcd stalls).
func TestKeyWrittenFromOutside(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(cli *clientv3.Client, key string, ours clientv3.LeaseID) error
	}{
		{"deleted", func(cli *clientv3.Client, key string, _ clientv3.LeaseID) error {
			_, err := cli.Delete(context.Background(), key)
			return err
		}},
		{"put without a lease", func(cli *clientv3.Client, key string, _ clientv3.LeaseID) error {
			_, err := cli.Put(context.Background(), key, "from outside")
			return err
		}},
		{"put without a lease, same value", func(cli *clientv3.Client, key string, _ clientv3.LeaseID) error {
			_, err := cli.Put(context.Background(), key, "mine")
			return err
		}},
		{"put with another lease", func(cli *clientv3.Client, key string, _ clientv3.LeaseID) error {
			other, err := cli.Grant(context.Background(), 600)
			if err != nil {
				return err
			}
			_, err = cli.Put(context.Background(), key, "mine", clientv3.WithLease(other.ID))
			return err
		}},
		{"put with our lease, another value", func(cli *clientv3.Client, key string, ours clientv3.LeaseID) error {
			_, err := cli.Put(context.Background(), key, "from outside", clientv3.WithLease(ours))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etcd := startEtcd(t)
			cli := etcd.Client(t)
			proxy := faultproxy.Start(t, etcd.Endpoint(0))
			const ttl = 2
			a := startRegister(t, []string{proxy.Endpoint()}, "/own", "a", "mine", ttl)
			w := startWatcher(t, etcd.Endpoints(), "/own")
			term := waitTerm(t, a)
			before := a.MyRevision()
			got, err := cli.Get(context.Background(), a.MyKey())
			require.NoError(t, err)
			require.NoError(t, tc.write(cli, a.MyKey(), clientv3.LeaseID(got.Kvs[0].Lease)))

			requireEnded(t, term, biregister.ErrRegistrationLost)
			require.Eventually(t, func() bool { return boundToLiveLease(t, cli, a.MyKey(), "mine", before) },
				waitFor, 5*time.Millisecond, "the key is not the Register's again")
			require.Eventually(t, func() bool { return a.Status().Registered && a.MyRevision() > before && a.AmILeader() },
				waitFor, 5*time.Millisecond)
			fenced, err := cli.Txn(context.Background()).If(term.Fence()).Then(clientv3.OpPut("/owner", "a")).Commit()
			require.NoError(t, err)
			require.False(t, fenced.Succeeded, "the fence of the term whose key was written from outside still holds")

			// The process dies (its link to etcd goes silent): its key goes
			// with its lease.
			proxy.Stall()
			defer proxy.Heal()
			require.Eventually(t, func() bool { return w.GetValueByName("a") == "" }, waitFor, 10*time.Millisecond,
				"the member's key outlives it")
		})
	}
}

// A key without a lease at a name belongs to no live member, and would
// outlive every member: NewRegister takes the name (it deletes the key if
// it is still as it was read), where a key on a live lease is refused.
func TestRegisterOverKeyWithoutLease(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	_, err := cli.Put(context.Background(), "/detached/a", "left behind")
	require.NoError(t, err)
	a := startRegister(t, etcd.Endpoints(), "/detached", "a", "mine", 2)
	require.True(t, boundToLiveLease(t, cli, a.MyKey(), "mine", 0))
	require.True(t, a.AmILeader())

	_, err = biregister.NewRegister(etcd.Endpoints(), "/detached", "a", "second", 2)
	require.ErrorIs(t, err, biregister.ErrNameTaken, "a live member's name")
}

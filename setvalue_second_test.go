package biregister_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
)

// A SetValue("v1") while the Register registers again gets no answer but
// goes through (etcd holds v1 on the Register's lease). A SetValue("v2")
// that the loop serves before its own retry finds that key, ours but with
// v1: it writes v2 in place, and returns nil only with etcd holding v2.
func TestSecondSetValueWhileRegisteringAgain(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoints()[0])
	logs := newLogLines()
	const key = "/rv2/a"
	r := startRegister(t, []string{proxy.Endpoint()}, "/rv2", "a", "old", 2, biregister.WithLogger(slog.New(logs)))
	ctx := context.Background()

	other, err := cli.Grant(ctx, 60)
	require.NoError(t, err)
	squat(t, cli, key, other.ID)
	waitRetryAtCap(t, logs)

	proxy.DelayReplies(5 * time.Second)
	_, err = cli.Delete(ctx, key)
	require.NoError(t, err)
	err = returnsWithin(t, "SetValue", 2*time.Second+slack, func() error { return r.SetValue(ctx, "v1") })
	require.Error(t, err, "SetValue got an answer through replies delayed 5 s")
	got, err := cli.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1, "the SetValue's put did not reach etcd")
	require.Equal(t, "v1", string(got.Kvs[0].Value))

	// The loop's next try fails too (its answer comes too late): it is idle
	// for half a second at least, and serves the next SetValue first.
	waitRetryAtCapNext(t, logs)
	proxy.Heal()
	require.NoError(t, r.SetValue(ctx, "v2"))
	got, err = cli.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	require.Equal(t, "v2", string(got.Kvs[0].Value), "SetValue(\"v2\") returned nil; etcd holds %q (on the Register's lease: %v)",
		got.Kvs[0].Value, clientv3.LeaseID(got.Kvs[0].Lease) != other.ID)
}

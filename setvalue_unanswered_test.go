package biregister_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
)

const reviewRetryMsg = "biregister: registering again failed, retrying"

// waitRetryAtCap waits until the Register of logs has failed to register
// again often enough for its backoff to reach its cap (0.5–1 s between
// tries), then for its next failure: the loop is then idle for at least
// half a second.
func waitRetryAtCap(t *testing.T, logs *logLines) {
	t.Helper()
	eventually(t, "the Register did not retry at its backoff's cap", func() string {
		if logs.count(reviewRetryMsg) < 7 {
			return "too few retries"
		}
		return ""
	})
	waitRetryAtCapNext(t, logs)
}

// squat deletes key and puts it on lease, another member's, before the
// Register can take it back.
func squat(t *testing.T, cli *clientv3.Client, key string, lease clientv3.LeaseID) {
	t.Helper()
	ctx := context.Background()
	eventually(t, "could not take the name from the Register", func() string {
		if _, err := cli.Delete(ctx, key); err != nil {
			return err.Error()
		}
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, "squat", clientv3.WithLease(lease))).Commit()
		if err != nil {
			return err.Error()
		}
		if !resp.Succeeded {
			return "the Register took it back first"
		}
		return ""
	})
}

// A SetValue while the Register registers again, whose put etcd applied
// but whose answer was lost (replies slower than the ttl the request is
// bounded by), returns an error and leaves etcd holding the new value on
// the Register's own lease. The loop then finds that key on its lease
// holding a value whose write got no answer: the Register takes it as it
// is, the value etcd says it has. It neither deletes its own live key (a
// DELETE every Watcher would see of a member that never left, blamed on an
// outside writer) nor writes the old value over it.
func TestSetValueUnansweredWhileRegisteringAgain(t *testing.T) {
	cli, proxy, logs, r, ours := startSquatted(t, "/rv")
	const key = "/rv/a"
	ctx := context.Background()

	// Now, with the loop idle: replies slower than the ttl, the name free,
	// and a SetValue, which registers at once with the new value.
	proxy.DelayReplies(5 * time.Second)
	_, err := cli.Delete(ctx, key)
	require.NoError(t, err)
	err = returnsWithin(t, "SetValue", 2*time.Second+slack, func() error { return r.SetValue(ctx, "new") })
	require.Error(t, err, "SetValue got an answer through replies delayed 5 s")
	t.Logf("SetValue: %v", err)
	got, err := cli.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1, "the SetValue's put did not reach etcd")
	require.Equal(t, "new", string(got.Kvs[0].Value))
	require.Equal(t, ours, clientv3.LeaseID(got.Kvs[0].Lease), "the key is not on the Register's lease")
	from := got.Header.Revision + 1

	proxy.Heal()
	requireKeyLeftAlone(t, cli, logs, key, ours, from, "new")
	require.NotZero(t, r.MyRevision(), "the Register did not register again")
}

// A SetValue that Close interrupts returns ErrClosed (README, After Close:
// "also for a call Close interrupts"), also while it grants a lease after
// the lease was lost: etcd's gRPC lease client answers Close's cancel with
// a gRPC status (codes.Canceled), not context.Canceled.
func TestSetValueClosedDuringGrant(t *testing.T) {
	cli, proxy, logs, r, ours := startSquatted(t, "/rc")
	ctx := context.Background()
	const lostMsg = "biregister: lease lost, registering again"
	_, err := cli.Revoke(ctx, ours)
	require.NoError(t, err)
	deadline := time.After(waitFor)
	for logs.count(lostMsg) == 0 {
		select {
		case <-logs.note:
		case <-deadline:
			t.Fatal("the Register did not notice its lease was revoked")
		}
	}

	// Replies held: SetValue's grant waits; Close interrupts it.
	proxy.DelayReplies(time.Minute)
	done := make(chan error, 1)
	go func() { done <- r.SetValue(ctx, "new") }()
	select {
	case err := <-done:
		t.Fatalf("setup: SetValue returned before Close: %v", err)
	case <-time.After(time.Second): // within the request's ttl of 2 s
	}
	r.Close()
	select {
	case err := <-done:
		require.ErrorIs(t, err, biregister.ErrClosed, "a SetValue that Close interrupted")
	case <-time.After(waitFor):
		t.Fatal("SetValue did not return after Close")
	}
	proxy.Heal()
}

// Two SetValues in place whose answers never came: the first applied (its
// reply held past the request's ttl), the second not (no connection). The
// Register keeps every value whose write got no answer, so once etcd's
// view comes back holding the first, on the Register's lease and create
// revision, the key is still its own: no DELETE, no term lost.
func TestTwoUnansweredSetValues(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoints()[0])
	logs := newLogLines()
	const key = "/ru/a"
	r := startRegister(t, []string{proxy.Endpoint()}, "/ru", "a", "v0", 2, biregister.WithLogger(slog.New(logs)))
	ctx := context.Background()
	got, err := cli.Get(ctx, key)
	require.NoError(t, err)
	ours := clientv3.LeaseID(got.Kvs[0].Lease)

	// v1 reaches etcd; its answer does not reach the Register.
	proxy.DelayReplies(time.Minute)
	start := time.Now()
	err = returnsWithin(t, "SetValue", 2*time.Second+slack, func() error { return r.SetValue(ctx, "v1") })
	require.Error(t, err)
	t.Logf("SetValue(v1) after %v: %v", time.Since(start), err)
	got, err = cli.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "v1", string(got.Kvs[0].Value), "setup: v1 did not reach etcd")

	// v2 never reaches etcd. The test keeps the Register's lease alive
	// meanwhile, as its keepalives cannot.
	proxy.Cut()
	kaCtx, stopKA := context.WithCancel(ctx)
	defer stopKA()
	ka, err := cli.KeepAlive(kaCtx, ours)
	require.NoError(t, err)
	go func() {
		for range ka {
		}
	}()
	start = time.Now()
	err = returnsWithin(t, "SetValue", 2*time.Second+slack, func() error { return r.SetValue(ctx, "v2") })
	require.Error(t, err)
	t.Logf("SetValue(v2) after %v: %v", time.Since(start), err)
	got, err = cli.Get(ctx, key)
	require.NoError(t, err)
	require.Equal(t, "v1", string(got.Kvs[0].Value), "setup: v2 reached etcd")
	from := got.Header.Revision + 1

	proxy.Heal()
	requireKeyLeftAlone(t, cli, logs, key, ours, from, "v1")
	stopKA()
}

// While the Register registers again, SetValue "registers at once with the
// new value, and returns nil only if that worked" (README): when the
// loop's own try, with the old value, went through and lost its answer,
// SetValue finds the key on its lease with the old value and writes the
// new one in place before it claims the key.
func TestSetValueWhileRegisteringClaimsNoOldValue(t *testing.T) {
	cli, proxy, logs, r, ours := startSquatted(t, "/ro")
	const key = "/ro/a"
	ctx := context.Background()

	// The loop's next try goes through, with the old value; its answer
	// is held past the try's bound.
	proxy.DelayReplies(time.Minute)
	_, err := cli.Delete(ctx, key)
	require.NoError(t, err)
	eventually(t, "the loop's try did not reach etcd", func() string {
		got, err := cli.Get(ctx, key)
		if err != nil || len(got.Kvs) == 0 || clientv3.LeaseID(got.Kvs[0].Lease) != ours {
			return "not yet"
		}
		return ""
	})
	waitRetryAtCapNext(t, logs)
	proxy.Heal()
	require.NoError(t, returnsWithin(t, "SetValue", 2*time.Second+slack, func() error { return r.SetValue(ctx, "new") }))
	got, err := cli.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	require.Equal(t, "new", string(got.Kvs[0].Value), "SetValue returned nil, but etcd holds another value at the key")
}

// requireKeyLeftAlone fails the test if, from revision from on, for 6 s
// (three of these tests' ttl), the Register writes another value than held over its key,
// or deletes the key while it is on the Register's lease ours.
func requireKeyLeftAlone(t *testing.T, cli *clientv3.Client, logs *logLines, key string, ours clientv3.LeaseID, from int64, held string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	const outside = "biregister: key written from outside, registering again"
	for resp := range cli.Watch(ctx, key, clientv3.WithRev(from), clientv3.WithPrevKV()) {
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.PUT && string(ev.Kv.Value) != held {
				t.Fatalf("the Register wrote %q over the value %q its own write left in etcd", ev.Kv.Value, held)
			}
			if ev.Type == mvccpb.DELETE && ev.PrevKv != nil && clientv3.LeaseID(ev.PrevKv.Lease) == ours {
				t.Fatalf("the Register deleted its own live key (value %q, its lease), which nobody wrote from outside; %q logged %d times",
					ev.PrevKv.Value, outside, logs.count(outside))
			}
		}
	}
}

// startSquatted starts a Register named a under prefix, through a proxy,
// whose name another live member then takes: its loop retries, backing
// off, and is idle between tries. It returns the Register's lease.
func startSquatted(t *testing.T, prefix string) (*clientv3.Client, *faultproxy.Proxy, *logLines, biregister.Register, clientv3.LeaseID) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoints()[0])
	logs := newLogLines()
	r := startRegister(t, []string{proxy.Endpoint()}, prefix, "a", "old", 2, biregister.WithLogger(slog.New(logs)))
	got, err := cli.Get(context.Background(), prefix+"/a")
	require.NoError(t, err)
	other, err := cli.Grant(context.Background(), 60)
	require.NoError(t, err)
	squat(t, cli, prefix+"/a", other.ID)
	waitRetryAtCap(t, logs)
	return cli, proxy, logs, r, clientv3.LeaseID(got.Kvs[0].Lease)
}

// waitRetryAtCapNext waits for the Register's next failed try.
func waitRetryAtCapNext(t *testing.T, logs *logLines) {
	t.Helper()
	n := logs.count(reviewRetryMsg)
	deadline := time.After(waitFor)
	for logs.count(reviewRetryMsg) == n {
		select {
		case <-logs.note:
		case <-deadline:
			t.Fatal("no next retry")
		}
	}
}

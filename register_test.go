package biregister_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
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

func TestRegisterBasics(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	a := startRegister(t, etcd.Endpoints(), "/svc/reg", "a", "addr-a", 7)
	b := startRegister(t, etcd.Endpoints(), "/svc/reg/", "b", "addr-b", 7)

	assert.Equal(t, "/svc/reg/a", a.MyKey())
	assert.Equal(t, "a", a.MyName())
	assert.True(t, a.AmILeader())
	assert.False(t, b.AmILeader())
	assert.Less(t, a.MyRevision(), b.MyRevision())

	resp, err := cli.Get(context.Background(), a.MyKey())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	kv := resp.Kvs[0]
	assert.Equal(t, "addr-a", string(kv.Value))
	assert.Equal(t, a.MyRevision(), kv.CreateRevision)
	ttl, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(kv.Lease))
	require.NoError(t, err)
	assert.EqualValues(t, 7, ttl.GrantedTTL, "the key lives on a lease of ttl seconds")

	// Each Register's cache holds the whole group, its own key included.
	require.Eventually(t, func() bool { return len(a.GetNames()) == 2 }, waitFor, time.Millisecond)
	assert.Equal(t, []string{"a", "b"}, a.GetNames())
	assert.Equal(t, []string{"a", "b"}, b.GetNames())
	name, val := b.GetLeader()
	assert.Equal(t, "a", name)
	assert.Equal(t, "addr-a", val)
}

func TestRegisterNameTaken(t *testing.T) {
	etcd := startEtcd(t)
	a := startRegister(t, etcd.Endpoints(), "/taken", "a", "first", 5)
	dup, err := biregister.NewRegister(etcd.Endpoints(), "/taken", "a", "second", 5)
	require.ErrorIs(t, err, biregister.ErrNameTaken)
	// It says what happened once, and what to do.
	require.Equal(t, 1, strings.Count(err.Error(), `"/taken/a"`), err.Error())
	require.Equal(t, 1, strings.Count(err.Error(), "biregister:"), err.Error())
	require.Contains(t, err.Error(), "WithNameWait")
	assert.True(t, dup == nil, "a failed constructor returns a nil interface")
	assert.Equal(t, "first", a.GetValueByName("a"))
	assert.True(t, a.AmILeader())
}

func TestRegisterNoNameConcurrent(t *testing.T) {
	etcd := startEtcd(t)
	const n = 16
	regs := make([]biregister.Register, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A generous ttl: sixteen at once retry each other out, the
			// last after fifteen failed tries and their backoff (50 ms
			// doubling to 1 s: some 9 s), and ttl bounds each
			// constructor.
			regs[i], errs[i] = biregister.NewRegisterNoName(etcd.Endpoints(), "/noname", fmt.Sprint(i), 20)
		}()
	}
	wg.Wait()
	// Every Register made is closed, even if another constructor failed.
	for i := range n {
		if errs[i] == nil {
			t.Cleanup(regs[i].Close)
		}
	}
	for i := range n {
		require.NoError(t, errs[i])
	}
	slices.SortFunc(regs, func(a, b biregister.Register) int { return int(a.MyRevision() - b.MyRevision()) })
	for i, r := range regs {
		assert.Len(t, r.MyName(), 20)
		assert.Equal(t, strings.Repeat("0", 20-len(strings.TrimLeft(r.MyName(), "0")))+strings.TrimLeft(r.MyName(), "0"), r.MyName())
		if i > 0 {
			assert.Less(t, regs[i-1].MyName(), r.MyName(), "names sort like registrations")
		}
	}
	require.Eventually(t, func() bool { return len(regs[0].GetNames()) == n }, waitFor, time.Millisecond)
	names := regs[0].GetNames()
	assert.True(t, slices.IsSorted(names), "create order and name order agree: %v", names)
	assert.True(t, regs[0].AmILeader())
}

// Close revokes the lease: watchers drop the member at once, not after ttl.
func TestRegisterCloseRevokes(t *testing.T) {
	etcd := startEtcd(t)
	w := startWatcher(t, etcd.Endpoints(), "/close")
	const longTTL = 600 // if Close only let the lease expire, the test would time out
	r, err := biregister.NewRegister(etcd.Endpoints(), "/close", "a", "v", longTTL)
	require.NoError(t, err)
	assert.Equal(t, biregister.OpPut, recv(t, w.Changes()).Op)
	client := r.EtcdClient()

	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); r.Close() }()
	}
	wg.Wait()
	r.Close()

	c := recv(t, w.Changes())
	assert.Equal(t, biregister.Change{Name: "a", Op: biregister.OpDelete, Value: "v", Revision: c.Revision, Left: true}, c, "a graceful leave")
	assert.Empty(t, w.GetNames())
	<-r.Closed()
	for range r.Changes() {
	}
	assert.False(t, r.AmILeader())
	assert.Error(t, client.Ctx().Err(), "the client the register created must be closed")
}

func TestRegisterSharedClient(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	r, err := biregister.NewRegister(nil, "/shared", "a", "v", 5, biregister.WithClient(cli))
	require.NoError(t, err)
	assert.Same(t, cli, r.EtcdClient())
	r.Close()
	resp, err := cli.Get(context.Background(), "/shared/a")
	require.NoError(t, err, "a shared client must survive Close")
	assert.Empty(t, resp.Kvs)
}

func TestLeaderFailover(t *testing.T) {
	etcd := startEtcd(t)
	a, err := biregister.NewRegister(etcd.Endpoints(), "/lead", "a", "va", 5)
	require.NoError(t, err)
	b := startRegister(t, etcd.Endpoints(), "/lead", "b", "vb", 5)
	require.True(t, a.AmILeader())

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, b.WaitLeader(ctx), context.DeadlineExceeded)

	waited := make(chan error, 1)
	go func() { waited <- b.WaitLeader(context.Background()) }()
	a.Close()
	require.NoError(t, <-waited)
	assert.True(t, b.AmILeader())
	assert.False(t, a.AmILeader())
	name, _ := b.GetLeader()
	assert.Equal(t, "b", name)
}

func TestValueTooLarge(t *testing.T) {
	etcd := startEtcd(t)
	huge := strings.Repeat("x", 3<<20) // above etcd's 1.5 MiB request limit
	r, err := biregister.NewRegister(etcd.Endpoints(), "/big", "a", huge, 5)
	require.Error(t, err)
	assert.True(t, r == nil, "a failed constructor returns a nil interface")
	ok := startRegister(t, etcd.Endpoints(), "/big", "a", "small", 5)
	assert.Error(t, ok.SetValue(context.Background(), huge))
	assert.Equal(t, "small", ok.GetValueByName("a"))

	// Just under the limit is a value like any other, from the constructor
	// and from SetValue, and a Watcher gets it whole.
	large := strings.Repeat("y", 1400<<10)
	w := startWatcher(t, etcd.Endpoints(), "/big")
	b := startRegister(t, etcd.Endpoints(), "/big", "b", large, 5)
	require.NoError(t, ok.SetValue(context.Background(), large+"a"))
	require.Eventually(t, func() bool {
		return w.GetValueByName("a") == large+"a" && w.GetValueByName("b") == large
	}, waitFor, 10*time.Millisecond)
	assert.Equal(t, large, b.GetValueByName("b"))
}

func TestOperationsAfterClose(t *testing.T) {
	etcd := startEtcd(t)
	r, err := biregister.NewRegister(etcd.Endpoints(), "/after", "a", "v", 5)
	require.NoError(t, err)
	r.Close()
	ctx := context.Background()
	assert.ErrorIs(t, r.SetValue(ctx, "x"), biregister.ErrClosed)
	assert.ErrorIs(t, r.Resign(ctx), biregister.ErrClosed)
	assert.ErrorIs(t, r.WaitLeader(ctx), biregister.ErrClosed)
	assert.False(t, r.AmILeader())
	assert.Empty(t, r.GetNames())
}

// WaitLeader returns ErrClosed when the Register closes while it waits.
func TestWaitLeaderClosed(t *testing.T) {
	etcd := startEtcd(t)
	startRegister(t, etcd.Endpoints(), "/wl", "a", "v", 5)
	b, err := biregister.NewRegister(etcd.Endpoints(), "/wl", "b", "v", 5)
	require.NoError(t, err)
	requireReturnsClosed(t, b, "WaitLeader", func() error { return b.WaitLeader(context.Background()) })
}

func TestSetValue(t *testing.T) {
	etcd := startEtcd(t)
	a := startRegister(t, etcd.Endpoints(), "/set", "a", "v1", 5)
	w := startWatcher(t, etcd.Endpoints(), "/set")
	recv(t, w.Changes())
	revision := a.MyRevision()

	require.NoError(t, a.SetValue(context.Background(), "v2"))
	c := recv(t, w.Changes())
	assert.Equal(t, biregister.Change{Name: "a", Op: biregister.OpPut, Value: "v2", Revision: c.Revision}, c)
	assert.Equal(t, revision, a.MyRevision(), "same registration, same lease")
	assert.True(t, a.AmILeader())
}

func TestResign(t *testing.T) {
	etcd := startEtcd(t)
	a := startRegister(t, etcd.Endpoints(), "/resign", "a", "va", 5)
	b := startRegister(t, etcd.Endpoints(), "/resign", "b", "vb", 5)
	require.True(t, a.AmILeader())
	before := a.MyRevision()

	require.NoError(t, a.Resign(context.Background()))
	assert.Greater(t, a.MyRevision(), before)
	require.NoError(t, b.WaitLeader(context.Background()))
	require.Eventually(t, func() bool { return slices.Equal(a.GetNames(), []string{"b", "a"}) }, waitFor, time.Millisecond)
	assert.False(t, a.AmILeader())
	require.Eventually(t, func() bool { return b.GetValueByName("a") == "va" }, waitFor, time.Millisecond,
		"still registered, same value")
}

func TestFence(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	a := startRegister(t, etcd.Endpoints(), "/fence", "a", "v", 5)
	ctx := context.Background()

	fence := a.Fence()
	resp, err := cli.Txn(ctx).If(fence).Then(clientv3.OpPut("/data", "1")).Commit()
	require.NoError(t, err)
	assert.True(t, resp.Succeeded, "the fence holds while registered")

	before := a.MyRevision()
	_, err = cli.Delete(ctx, a.MyKey())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.MyRevision() > before }, waitFor, time.Millisecond)

	resp, err = cli.Txn(ctx).If(fence).Then(clientv3.OpPut("/data", "2")).Commit()
	require.NoError(t, err)
	assert.False(t, resp.Succeeded, "a fence of a lost registration must fail")
	resp, err = cli.Txn(ctx).If(a.Fence()).Then(clientv3.OpPut("/data", "3")).Commit()
	require.NoError(t, err)
	assert.True(t, resp.Succeeded, "the new registration's fence holds")
}

// A key deleted or a lease revoked from outside: the Register puts itself
// back under the same name, and says so in its log.
func TestReRegisterAfterOutsideDelete(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	a := startRegister(t, etcd.Endpoints(), "/rereg", "a", "v", 3, biregister.WithLogger(logger))
	ctx := context.Background()

	for _, remove := range []func() error{
		func() error { _, err := cli.Delete(ctx, a.MyKey()); return err },
		func() error {
			resp, err := cli.Get(ctx, a.MyKey())
			if err != nil {
				return err
			}
			_, err = cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
			return err
		},
	} {
		before := a.MyRevision()
		removed := time.Now()
		require.NoError(t, remove())
		require.Eventually(t, func() bool {
			resp, err := cli.Get(ctx, a.MyKey())
			return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision > before
		}, waitFor, time.Millisecond)
		t.Logf("key back %v after it was removed", time.Since(removed))
		require.Eventually(t, a.AmILeader, waitFor, time.Millisecond)
		assert.Equal(t, "a", a.MyName())
		assert.Equal(t, "/rereg/a", a.MyKey())
		assert.Greater(t, a.MyRevision(), before)
		assert.Equal(t, "v", a.GetValueByName("a"))
	}
	assert.Contains(t, logs.String(), "registering again")
	assert.Contains(t, logs.String(), "leadership lost")
	// The loop logs the gain as it looks, which can be just after
	// AmILeader, which reads it directly, turned true.
	assert.Empty(t, logs.WaitFor(time.After(waitFor), "leadership gained"), "logs:\n%s", logs.String())
}

// Close ends a SetValue or Resign that waits on an etcd that does not
// answer: it returns ErrClosed, and Close returns within its bound — the ttl
// it may wait for the revoke, which gets no answer either, and room for a
// loaded machine — instead of waiting for the request (the etcd client waits
// for a connection as long as the caller's context lets it).
func TestCloseEndsRequestWaitingOnEtcd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		do     func(r biregister.Register) error
		inLoop string // what the loop runs for it
	}{
		{"SetValue", func(r biregister.Register) error { return r.SetValue(context.Background(), "v2") }, "setValue("},
		{"Resign", func(r biregister.Register) error { return r.Resign(context.Background()) }, "resign("},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etcd := startEtcd(t)
			proxy := faultproxy.Start(t, etcd.Endpoint(0))
			const ttl = 2
			r, err := biregister.NewRegister([]string{proxy.Endpoint()}, "/close-busy", "a", "v", ttl)
			require.NoError(t, err)
			t.Cleanup(r.Close)
			proxy.Stall()
			done := make(chan error, 1)
			go func() { done <- tc.do(r) }()
			// Close only once the request waits on etcd inside the loop.
			require.Eventually(t, func() bool { return stackHas("biregister.(*register)." + tc.inLoop) },
				waitFor, time.Millisecond)
			closed := make(chan struct{})
			go func() { r.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(ttl*time.Second + 3*time.Second):
				t.Fatal("Close waited on the request, or much more than ttl on the revoke")
			}
			require.ErrorIs(t, <-done, biregister.ErrClosed)
		})
	}
}

// stackHas reports whether any goroutine's stack holds fn.
func stackHas(fn string) bool { return strings.Contains(benchutil.Stacks(), fn) }

// A deletion the Register's watch delivers while its loop is busy with a
// request is still noticed: the Register registers again, with the value
// set meanwhile. (The loop once looked only at snapshots published while
// it waited, and lost its key for good about half the time here.)
func TestReRegisterAfterDeleteDuringRequest(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	a := startRegister(t, etcd.Endpoints(), "/rereg-busy", "a", "v0", 3)
	ctx := context.Background()
	for i := range 10 {
		before := a.MyRevision()
		_, err := cli.Delete(ctx, a.MyKey())
		require.NoError(t, err)
		value := fmt.Sprintf("v%d", i+1)
		// The fence fails (the key is gone), so the value goes with the
		// next registration.
		require.NoError(t, a.SetValue(ctx, value))
		require.Eventually(t, func() bool {
			resp, err := cli.Get(ctx, a.MyKey())
			return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision > before && string(resp.Kvs[0].Value) == value
		}, waitFor, time.Millisecond, "round %d: the key stayed deleted", i)
	}
}

// While another live member holds the name, the Register keeps trying, with
// backoff and a log line per failure, and gets its name back once it is free.
func TestReRegisterWhileNameTaken(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	var logs syncbuf.Buffer
	a := startRegister(t, etcd.Endpoints(), "/squat", "a", "mine", 3,
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))

	// Someone takes the name the moment a's key is gone.
	ctx := context.Background()
	lease := takeName(t, cli, a)

	require.Eventually(t, func() bool { return strings.Count(logs.String(), "registering again failed") >= 3 }, waitFor, time.Millisecond,
		"the Register must keep trying, and say so")
	assert.Zero(t, a.MyRevision())
	assert.False(t, a.AmILeader())
	assert.Equal(t, "squatter", a.GetValueByName("a"))

	freed := time.Now()
	_, err := cli.Revoke(ctx, lease)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.GetValueByName("a") == "mine" && a.MyRevision() != 0 }, waitFor, time.Millisecond)
	t.Logf("name taken back %v after it was freed", time.Since(freed))
	assert.Contains(t, logs.String(), biregister.ErrNameTaken.Error())
}

// Answers that lag by more than half a renewal interval make the next
// keepalive go out on a new stream, and the lease lives on: the old
// streams' answers still extend it.
func TestKeepAliveNewStreamWhenAnswersLag(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const method = "LeaseKeepAlive"
	streams := func() (started, open float64) {
		m, err := benchutil.Scrape(etcd.Endpoint(0))
		require.NoError(t, err)
		started = m.DeltaBy(benchutil.Metrics{}, "grpc_server_started_total", "grpc_method")[method]
		handled := m.DeltaBy(benchutil.Metrics{}, "grpc_server_handled_total", "grpc_method")[method]
		return started, started - handled
	}
	const ttl = 3 // renewals every second; a new stream after 500 ms unanswered
	r := startRegister(t, []string{proxy.Endpoint()}, "/svc/ka-lag", "a", "v", ttl)
	revision := r.MyRevision()
	started0, _ := streams()
	proxy.DelayReplies(1200 * time.Millisecond)
	var most float64
	require.Eventually(t, func() bool {
		started, open := streams()
		most = max(most, open)
		return started-started0 >= 3
	}, waitFor, 20*time.Millisecond, "no new stream for keepalives left unanswered")
	// Sample for three more intervals of renewals, each on a new stream.
	sample := time.NewTicker(20 * time.Millisecond)
	defer sample.Stop()
	led := 0
	samples := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-sample.C {
		_, open := streams()
		most = max(most, open)
		samples++
		if r.AmILeader() {
			led++
		}
	}
	t.Logf("answers 1.2 s late: at most %.0f keepalive streams open at once; leading in %d of %d samples", most, led, samples)
	// Each answer extends the lease 0.5 s beyond the next one's arrival: a
	// loop stalled that long on a loaded machine may see a lapse, correctly;
	// the lease itself must last.
	assert.Equal(t, revision, r.MyRevision(), "the lease lasted: no registration again")
	assert.Greater(t, led, samples/2, "the lease lapsed although its answers only lagged")

	// Answers that do not come for longer than the lease: a keepalive still
	// goes out every interval, each on a new stream. (How many are open at
	// once is TestKeepAliveStreamsWhileAnswersHeld's: etcd's count of open
	// streams lags behind the client's cancellations.)
	proxy.DelayReplies(waitFor)
	startedLate, _ := streams()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); <-sample.C {
		_, open := streams()
		most = max(most, open)
	}
	started, _ := streams()
	t.Logf("answers held: %.0f streams opened in 5 s, at most %.0f open at once on etcd's count", started-startedLate, most)
	assert.GreaterOrEqual(t, started-startedLate, 3.0, "keepalive streams opened while answers were held")
	proxy.DelayReplies(0) // so that Close's revoke is answered
}

// An idle Register renews its lease over one long-lived stream: one message
// per keepalive, not a stream per keepalive.
func TestKeepAliveOneStream(t *testing.T) {
	etcd := startEtcd(t)
	const method = "LeaseKeepAlive"
	count := func() (streams, messages float64) {
		m, err := benchutil.Scrape(etcd.Endpoint(0))
		require.NoError(t, err)
		started := m.DeltaBy(benchutil.Metrics{}, "grpc_server_started_total", "grpc_method")
		received := m.DeltaBy(benchutil.Metrics{}, "grpc_server_msg_received_total", "grpc_method")
		return started[method], received[method]
	}
	streams0, messages0 := count()
	// ttl 2: a keepalive goes to a new stream only if the last one is
	// unanswered for half of ttl/3, 333 ms, which even a loaded CI machine
	// does not take.
	r := startRegister(t, etcd.Endpoints(), "/svc/ka", "a", "v", 2)
	revision := r.MyRevision()
	// Five keepalives at ttl/3 take about 3.3 s.
	require.Eventually(t, func() bool {
		_, messages := count()
		return messages-messages0 >= 5
	}, waitFor, 50*time.Millisecond)
	streams, _ := count()
	assert.Equal(t, 1.0, streams-streams0, "LeaseKeepAlive streams opened")
	assert.True(t, r.AmILeader())
	assert.Equal(t, revision, r.MyRevision(), "the lease lasted: no registration again")
}

package biregister_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/metertest"
)

// faultTTL is the lease TTL of fault tests: short, so that expiry-driven
// behaviour is quick to observe, yet several keepalive periods long.
const faultTTL = 2

// sameAsEtcd reports whether the cache of w equals what etcd holds under prefix.
func sameAsEtcd(t *testing.T, cli *clientv3.Client, w biregister.Watcher, prefix string) bool {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return false
	}
	var want []biregister.Member
	for _, kv := range resp.Kvs {
		want = append(want, biregister.Member{Name: string(kv.Key[len(prefix):]), Value: string(kv.Value), CreateRevision: kv.CreateRevision})
	}
	got := w.Members()
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// collector keeps every change a watcher delivers, for checks at the end.
type collector struct {
	mu      sync.Mutex
	changes []biregister.Change
	done    chan struct{}
}

func collect(w biregister.Watcher) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for ch := range w.Changes() {
			c.mu.Lock()
			c.changes = append(c.changes, ch)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) snapshot() []biregister.Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]biregister.Change(nil), c.changes...)
}

func (c *collector) has(op biregister.Op, name string) bool {
	for _, ch := range c.snapshot() {
		if ch.Op == op && ch.Name == name {
			return true
		}
	}
	return false
}

// A member whose process dies (no revoke) is dropped by every watcher once its
// lease expires.
func TestCrashedMemberDropped(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	w := startWatcher(t, etcd.Endpoints(), "/crash")
	seen := collect(w)
	startRegister(t, []string{proxy.Endpoint()}, "/crash", "a", "v", faultTTL)
	require.Eventually(t, func() bool { return seen.has(biregister.OpPut, "a") }, waitFor, time.Millisecond)

	crashed := time.Now()
	proxy.Stall() // the process is gone: no keepalive, no revoke
	require.Eventually(t, func() bool { return seen.has(biregister.OpDelete, "a") }, (faultTTL+2)*time.Second, time.Millisecond,
		"a member that stopped heartbeating must be dropped within about ttl")
	t.Logf("crashed member dropped after %v (ttl %ds)", time.Since(crashed), faultTTL)
	proxy.Heal()
}

// leaderSample records, on one clock, when each of two candidates believed it led.
type leaderSample struct {
	lastOld, firstNew time.Time
	overlap           bool
}

// sampleLeaders polls both candidates every ~200µs until the new one has led
// for 200 samples in a row, or until stop is closed.
func sampleLeaders(old, next biregister.Register, stop <-chan struct{}) *leaderSample {
	var s leaderSample
	for newLed := 0; newLed < 200; {
		select {
		case <-stop:
			return &s
		default:
		}
		oldLeads := old.AmILeader()
		nextLeads := next.AmILeader()
		now := time.Now()
		if oldLeads {
			s.lastOld = now
		}
		if nextLeads && s.firstNew.IsZero() {
			s.firstNew = now
		}
		if oldLeads && nextLeads {
			s.overlap = true
		}
		if nextLeads {
			newLed++
		} else {
			newLed = 0
		}
		time.Sleep(200 * time.Microsecond)
	}
	return &s
}

// leaderSampler samples two candidates in the background (sampleLeaders).
type leaderSampler struct {
	stop    chan struct{}
	sampled chan *leaderSample
}

// startSampling starts sampling old and next.
func startSampling(old, next biregister.Register) *leaderSampler {
	ls := &leaderSampler{stop: make(chan struct{}), sampled: make(chan *leaderSample, 1)}
	go func() { ls.sampled <- sampleLeaders(old, next, ls.stop) }()
	return ls
}

// result waits for the sample, at most waitFor, and then stops sampling.
func (ls *leaderSampler) result() *leaderSample {
	select {
	case s := <-ls.sampled:
		return s
	case <-time.After(waitFor):
		close(ls.stop)
		return <-ls.sampled
	}
}

// requireOneLeaderAtATime fails the test unless s shows the old candidate's
// last lead strictly before the next one's first.
func requireOneLeaderAtATime(t *testing.T, s *leaderSample) {
	t.Helper()
	require.False(t, s.overlap, "two leaders at the same moment")
	require.False(t, s.firstNew.IsZero(), "the next candidate never led")
	require.True(t, s.lastOld.Before(s.firstNew), "old leader's last true %v, new leader's first true %v", s.lastOld, s.firstNew)
}

// A leader cut off from etcd by a silent stall stops leading before anyone
// else can: its last true comes strictly before its successor's first true.
// With slowReplies, etcd's answers reach the leader late for a while first: the
// guarantee must hold by construction, not by timing luck.
func TestLeaderStallNeverTwoLeaders(t *testing.T) {
	for name, slowReplies := range map[string]time.Duration{"prompt replies": 0, "replies delayed 1.2s": 1200 * time.Millisecond} {
		t.Run(name, func(t *testing.T) {
			etcd := startEtcd(t)
			proxy := faultproxy.Start(t, etcd.Endpoint(0))
			const ttl = 3
			old := startRegister(t, []string{proxy.Endpoint()}, "/stall", "old", "v", ttl)
			next := startRegister(t, etcd.Endpoints(), "/stall", "next", "v", ttl)
			require.True(t, old.AmILeader())

			if slowReplies > 0 {
				proxy.DelayReplies(slowReplies)
				// Let several keepalives go through the slow link.
				deadline := time.Now().Add(ttl * time.Second)
				for time.Now().Before(deadline) {
					require.False(t, next.AmILeader())
					time.Sleep(10 * time.Millisecond)
				}
				require.True(t, old.AmILeader(), "a slow link alone must not cost leadership")
			}

			sampler := startSampling(old, next)
			stalled := time.Now()
			proxy.Stall()
			s := sampler.result()

			require.False(t, s.overlap, "two leaders at the same moment")
			require.False(t, s.firstNew.IsZero())
			require.True(t, s.lastOld.Before(s.firstNew), "old leader's last true %v, new leader's first true %v", s.lastOld, s.firstNew)
			t.Logf("gap between old leader's last true and new leader's first true: %v; takeover %v after the stall began",
				s.firstNew.Sub(s.lastOld), s.firstNew.Sub(stalled))

			// After the heal the old leader registers again, behind the new one.
			before := old.MyRevision()
			healed := time.Now()
			proxy.Heal()
			require.Eventually(t, func() bool {
				name, _ := old.GetLeader()
				return old.MyRevision() != before && old.MyRevision() != 0 && name == "next" &&
					old.GetValueByName("old") == "v"
			}, waitFor, time.Millisecond)
			t.Logf("old leader registered again %v after the heal", time.Since(healed))
			assert.False(t, old.AmILeader())
			assert.True(t, next.AmILeader())
		})
	}
}

// A watcher cut off from etcd while members come, go and change and the
// history is compacted: after the heal its cache equals etcd, and every
// deletion reached Changes (or a RESYNC did, for a consumer that fell behind).
func TestWatcherCutWithCompaction(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	for _, name := range []string{"keep", "gone", "changed"} {
		_, err := cli.Put(ctx, "/cut/"+name, "v1")
		require.NoError(t, err)
	}
	m := metertest.New(t)
	w := startWatcher(t, []string{proxy.Endpoint()}, "/cut", biregister.WithMeterProvider(m.Provider))
	seen := collect(w)
	slow := startWatcher(t, []string{proxy.Endpoint()}, "/cut", biregister.WithBufferSize(3))
	require.Eventually(t, func() bool { return len(seen.snapshot()) == 3 }, waitFor, time.Millisecond)

	proxy.Cut()
	_, err := cli.Delete(ctx, "/cut/gone")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/cut/changed", "v2")
	require.NoError(t, err)
	for _, name := range []string{"new1", "new2"} {
		_, err = cli.Put(ctx, "/cut/"+name, "v1")
		require.NoError(t, err)
	}
	last, err := cli.Put(ctx, "/elsewhere", "x")
	require.NoError(t, err)
	_, err = cli.Compact(ctx, last.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	proxy.Heal()

	require.Eventually(t, func() bool { return sameAsEtcd(t, cli, w, "/cut/") }, waitFor, 10*time.Millisecond)
	require.Eventually(t, func() bool { return sameAsEtcd(t, cli, slow, "/cut/") }, waitFor, 10*time.Millisecond)
	require.Eventually(t, func() bool { return seen.has(biregister.OpDelete, "gone") }, waitFor, time.Millisecond,
		"a deletion made while the watch was down must be delivered")
	assert.True(t, seen.has(biregister.OpPut, "new1"))
	assert.True(t, seen.has(biregister.OpPut, "new2"))
	// Resumed at a compacted revision, the watch failed: listed again for that.
	assert.EqualValues(t, 1, m.Value(t, "biregister.listings", forCause("watch_failed")))
	assert.EqualValues(t, 2, w.Status().Listings)

	var slowChanges []biregister.Change
	for len(slowChanges) == 0 || slowChanges[len(slowChanges)-1].Op != biregister.OpResync {
		slowChanges = append(slowChanges, recv(t, slow.Changes()))
	}
	assert.LessOrEqual(t, len(slowChanges), 4, "the slow consumer's backlog stays within its buffer")
}

// etcd killed and restarted with its data within ttl: nobody is dropped, the
// leader stays, and the watch comes back (new members are seen).
func TestEtcdRestartWithData(t *testing.T) {
	etcd := startEtcd(t)
	const ttl = 3
	a := startRegister(t, etcd.Endpoints(), "/restart", "a", "va", ttl)
	b := startRegister(t, etcd.Endpoints(), "/restart", "b", "vb", ttl)
	w := startWatcher(t, etcd.Endpoints(), "/restart")
	seen := collect(w)
	require.Eventually(t, func() bool { return len(seen.snapshot()) == 2 }, waitFor, time.Millisecond)

	revision := a.MyRevision()
	bLed := watchLeading(b)
	etcd.Stop(t, 0)
	etcd.Restart(t, 0)
	c := startRegister(t, etcd.Endpoints(), "/restart", "c", "vc", ttl)

	require.Eventually(t, func() bool { return seen.has(biregister.OpPut, "c") }, waitFor, time.Millisecond,
		"the watch must come back after the restart")
	require.Eventually(t, a.AmILeader, waitFor, time.Millisecond)
	for _, r := range []biregister.Register{a, b, c} {
		require.Eventually(t, func() bool { return len(r.GetNames()) == 3 }, waitFor, time.Millisecond)
		assert.Equal(t, []string{"a", "b", "c"}, r.GetNames())
	}
	assert.False(t, seen.has(biregister.OpDelete, "a"))
	assert.False(t, seen.has(biregister.OpDelete, "b"))
	assert.False(t, bLed(), "leadership must never move")
	assert.Equal(t, revision, a.MyRevision(), "the leader registered again")
}

// watchLeading samples r.AmILeader every millisecond until the function it
// returns is called, which reports whether r ever led meanwhile.
func watchLeading(r biregister.Register) (stop func() bool) {
	done := make(chan struct{})
	led := make(chan bool, 1)
	go func() {
		ever := false
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			ever = ever || r.AmILeader()
			select {
			case <-done:
				led <- ever
				return
			case <-tick.C:
			}
		}
	}()
	return func() bool {
		close(done)
		return <-led
	}
}

// etcd replaced by an empty cluster on the same address: members create their
// keys again and watchers follow the new cluster.
func TestEtcdReplacedByEmptyCluster(t *testing.T) {
	etcd := startEtcd(t)
	a := startRegister(t, etcd.Endpoints(), "/wipe", "a", "va", faultTTL)
	b := startRegister(t, etcd.Endpoints(), "/wipe", "b", "vb", faultTTL)
	w := startWatcher(t, etcd.Endpoints(), "/wipe")
	require.Eventually(t, func() bool { return len(w.GetNames()) == 2 }, waitFor, time.Millisecond)

	// Push the old cluster's revision well above anything the new one will
	// reach soon, with writes the watches get (under the prefix, one level
	// too deep to be members), so that a watch resumed after the last of
	// them would wait for nothing.
	cli := etcd.Client(t)
	for range 50 {
		_, err := cli.Put(context.Background(), "/wipe/filler/x", "x")
		require.NoError(t, err)
	}
	resp, err := cli.Get(context.Background(), "/wipe/filler/x")
	require.NoError(t, err)
	for _, watcher := range []biregister.Watcher{w, a, b} {
		require.Eventually(t, func() bool { return watcher.View().Revision() >= resp.Header.Revision }, waitFor, time.Millisecond)
	}
	etcd.Wipe(t)
	fresh := etcd.Client(t)

	require.Eventually(t, func() bool {
		resp, err := fresh.Get(context.Background(), "/wipe/", clientv3.WithPrefix())
		return err == nil && len(resp.Kvs) == 2
	}, waitFor, 10*time.Millisecond, "members must register again on the new cluster")
	_, err = fresh.Put(context.Background(), "/wipe/newcomer", "vn")
	require.NoError(t, err)
	for _, watcher := range []biregister.Watcher{w, a, b} {
		require.Eventually(t, func() bool { return sameAsEtcd(t, fresh, watcher, "/wipe/") }, waitFor, 10*time.Millisecond)
	}
	// The oldest member leads: a or b, or the newcomer if they registered
	// again after it (a registration at a revision one of the old
	// cluster's had is made again).
	require.Eventually(t, func() bool {
		leader, _ := w.GetLeader()
		return a.AmILeader() == (leader == "a") && b.AmILeader() == (leader == "b")
	}, waitFor, time.Millisecond)
}

// A 3-member cluster whose members are stopped and restarted in turn, the
// client's own included: no member of ours is dropped and leadership stays.
func TestClusterRollingRestart(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 3)
	const ttl = 3
	a := startRegister(t, etcd.Endpoints(), "/roll", "a", "va", ttl)
	b := startRegister(t, etcd.Endpoints(), "/roll", "b", "vb", ttl)
	w := startWatcher(t, []string{etcd.Endpoint(2), etcd.Endpoint(1)}, "/roll")
	seen := collect(w)
	require.Eventually(t, func() bool { return len(seen.snapshot()) == 2 }, waitFor, time.Millisecond)

	bLed := watchLeading(b)
	for i := range 3 {
		etcd.Stop(t, i)
		etcd.Restart(t, i)
	}
	require.Eventually(t, a.AmILeader, waitFor, time.Millisecond)
	assert.False(t, bLed(), "leadership must never move")
	assert.False(t, seen.has(biregister.OpDelete, "a"))
	assert.False(t, seen.has(biregister.OpDelete, "b"))
	assert.Equal(t, []string{"a", "b"}, w.GetNames())
}

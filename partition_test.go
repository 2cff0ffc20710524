package biregister_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// partitionBound is how long after a member is cut off from its peers a
// Watcher whose watch it held may still show an older state than the
// majority. The member notices within an election timeout or two that it
// has no leader, and cancels the watch 3 election timeouts later (about 2 s
// in all with the tests' 500 ms); the listing that follows refuses at once
// on that member (it requires a leader too), and the client lists from
// another.
const partitionBound = 5 * time.Second

// A member of a 3-member cluster cut off from its two peers while it still
// serves our clients. A Watcher whose watch it holds reaches the majority's
// state within partitionBound, although the member would go on serving its
// old state; a Register that reaches only that member stops leading strictly
// before the majority can let the next member lead; healed, it registers
// again behind the new leader and everything converges.
//
// Both cases are deterministic: the cut member is made a follower, or the
// raft leader, by moving etcd's leadership before the cut.
func TestMemberCutOffFromPeers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cutLeader bool
	}{{"follower", false}, {"raft leader", true}} {
		t.Run(tc.name, func(t *testing.T) { testMemberCutOffFromPeers(t, tc.cutLeader) })
	}
}

func testMemberCutOffFromPeers(t *testing.T, cutLeader bool) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.StartIsolated(t, 3)
	const (
		ttl    = 3
		prefix = "/partition/"
		cut    = 0 // the member cut off
	)
	majority := []string{etcd.Endpoint(1), etcd.Endpoint(2)}
	majorityClient := clientFor(t, majority...)

	// old runs on the cut member's side of the partition: its endpoints
	// name all three members, but only the cut one answers. If it reached
	// the others, its next keepalive stream would find one of them and it
	// would rightly lead on.
	var oldEndpoints []string
	var oldCut []*faultproxy.Proxy
	for i := range 3 {
		front := faultproxy.Start(t, etcd.Endpoint(i))
		if i != cut {
			front.Cut()
			oldCut = append(oldCut, front)
		}
		oldEndpoints = append(oldEndpoints, front.Endpoint())
	}
	// The Watcher reaches every member, but its watch is to be held by the
	// cut member: the others are out of the test's reach while it starts.
	// gRPC keeps a stream on the connection it started on.
	for _, i := range []int{1, 2} {
		etcd.CutClient(t, i)
	}
	old := startRegister(t, oldEndpoints, prefix, "old", "v", ttl)
	w := startWatcher(t, etcd.Endpoints(), prefix)
	for _, i := range []int{1, 2} {
		etcd.HealClient(t, i)
	}
	// Two watches on the cut member, the Watcher's and old's own, and none
	// elsewhere yet.
	require.Eventually(t, func() bool {
		return watchers(etcd.Endpoint(cut)) == 2
	}, waitFor, 10*time.Millisecond, "the watches must be on member %d", cut)
	for _, i := range []int{1, 2} {
		require.Zero(t, watchers(etcd.Endpoint(i)), "watches on member %d", i)
	}
	next := startRegister(t, majority, prefix, "next", "v", ttl)
	require.Eventually(t, func() bool { return sameAsEtcd(t, majorityClient, w, prefix) && len(w.GetNames()) == 2 },
		waitFor, 10*time.Millisecond)
	require.True(t, old.AmILeader())

	makeRole(t, etcd, cut, cutLeader)
	sampler := startSampling(old, next)
	cutAt := time.Now()
	etcd.IsolateFromPeers(t, cut)

	// The majority goes on changing the group. Its first write may wait
	// for it to elect a leader.
	for _, op := range []clientv3.Op{
		clientv3.OpPut(prefix+"a", "1"),
		clientv3.OpPut(prefix+"b", "1"),
		clientv3.OpDelete(prefix + "a"),
		clientv3.OpPut(prefix+"b", "2"),
		clientv3.OpPut(prefix+"c", "1"),
	} {
		require.Eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := majorityClient.Do(ctx, op)
			return err == nil
		}, waitFor, 10*time.Millisecond, "the majority must take writes")
	}
	written := time.Since(cutAt)
	// Polled past the bound, so that a slow convergence is measured too.
	var converged time.Duration
	for deadline := cutAt.Add(2 * partitionBound); ; time.Sleep(10 * time.Millisecond) {
		if w.GetValueByName("c") == "1" && sameAsEtcd(t, majorityClient, w, prefix) {
			converged = time.Since(cutAt)
			break
		}
		require.True(t, time.Now().Before(deadline), "the Watcher did not reach the majority's state within %v of the cut: it has %v",
			2*partitionBound, w.Members())
	}
	t.Logf("Watcher equal to the majority %v after the cut (the majority's writes done after %v)", converged, written)
	assert.LessOrEqual(t, converged, partitionBound, "the Watcher took too long to reach the majority's state")

	s := sampler.result()
	requireOneLeaderAtATime(t, s)
	t.Logf("gap between old leader's last true and new leader's first true: %v; takeover %v after the cut",
		s.firstNew.Sub(s.lastOld), s.firstNew.Sub(cutAt))
	// The Watcher follows the majority on: it sees old's key expire.
	require.Eventually(t, func() bool {
		name, _ := w.GetLeader()
		return name == "next" && sameAsEtcd(t, majorityClient, w, prefix)
	}, waitFor, 10*time.Millisecond)

	before := old.MyRevision()
	healed := time.Now()
	etcd.HealPeers(t, cut)
	for _, front := range oldCut {
		front.Heal()
	}
	require.Eventually(t, func() bool {
		name, _ := old.GetLeader()
		return old.MyRevision() != before && old.MyRevision() > next.MyRevision() && name == "next" &&
			old.GetValueByName("old") == "v"
	}, waitFor, 10*time.Millisecond, "old must register again, behind next")
	t.Logf("old registered again %v after the heal", time.Since(healed))
	all := etcd.Client(t)
	for _, r := range []biregister.Watcher{w, old, next} {
		require.Eventually(t, func() bool { return sameAsEtcd(t, all, r, prefix) }, waitFor, 10*time.Millisecond)
	}
	// Which of the majority's writes took is etcd's to say (sameAsEtcd
	// checked it): a write retried after its deadline may have taken too.
	names := w.GetNames()
	assert.Equal(t, "next", names[0])
	assert.Equal(t, "old", names[len(names)-1])
	assert.False(t, old.AmILeader())
	// The rejoining member may call an election (etcd 3.4 has no pre-vote
	// by default), which can hold next's keepalives long enough for it to
	// doubt its lease for a moment.
	require.Eventually(t, next.AmILeader, waitFor, time.Millisecond)
}

// makeRole moves etcd's leadership so that member i leads, if leader, or
// follows otherwise, and checks that it does.
func makeRole(t *testing.T, etcd *etcdtest.Cluster, i int, leader bool) {
	t.Helper()
	eps := etcd.Endpoints()
	ids := make([]uint64, len(eps))
	lead := -1
	admin := etcd.Client(t)
	status := func(ep string) *clientv3.StatusResponse {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := admin.Status(ctx, ep)
		require.NoError(t, err)
		return resp
	}
	for j, ep := range eps {
		resp := status(ep)
		ids[j] = resp.Header.MemberId
		if resp.Leader == resp.Header.MemberId {
			lead = j
		}
	}
	require.NotEqual(t, -1, lead, "no member leads")
	to := lead
	switch {
	case leader && lead != i:
		to = i
	case !leader && lead == i:
		to = (i + 1) % len(eps)
	}
	if to != lead {
		// Only the leader takes a request to hand its leadership over.
		cli := clientFor(t, eps[lead])
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.MoveLeader(ctx, ids[to])
		cancel()
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		resp := status(eps[i])
		return resp.Leader == ids[to] && (resp.Leader == ids[i]) == leader
	}, waitFor, 10*time.Millisecond, "member %d must be the leader: %v", i, leader)
}

// watchers returns how many watches the member at ep holds, or -1 if it
// cannot tell.
func watchers(ep string) float64 {
	m, err := benchutil.Scrape(ep)
	if err != nil {
		return -1
	}
	return m.Sum("etcd_debugging_mvcc_watcher_total")
}

// clientFor returns a client of the given endpoints only; t.Cleanup closes it.
func clientFor(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := devetcd.NewClient(endpoints, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

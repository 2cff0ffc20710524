package biregister_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// Registrations outlive a raft leader frozen past their ttl while the other
// two members are a quorum: 30 Registers on one shared client and 30 on a
// client each, ttl 2 s; the raft leader is frozen (SIGSTOP) for 2×ttl, round
// after round, and etcd deletes none of their keys, as watches on every
// member show.
//
// The frozen member is then killed and restarted rather than resumed: a
// leader resumed after its leases' ttl revokes them all in some rounds, on
// etcd 3.4.23 and 3.6.8 alike (etcd-io/etcd#15247, which newer releases only
// mitigate), and those deletes, which no client can prevent, may even land in
// the next round.
func TestFrozenLeader(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcdtest.RequireProcesses(t)
	const (
		ttl    = 2
		n      = 30
		prefix = "/frozen/"
	)
	etcd := etcdtest.Start(t, 3)
	admin := etcd.Client(t)
	deletes := watchDeletes(t, etcd, prefix)
	shared := etcd.Client(t)
	for i := range n {
		name := fmt.Sprintf("r%02d", i)
		startRegister(t, etcd.Endpoints(), prefix+"shared/", name, "v", ttl, biregister.WithClient(shared))
		startRegister(t, etcd.Endpoints(), prefix+"own/", name, "v", ttl)
	}
	all := clientFor(t, etcd.Endpoints()...)
	registered := func() bool { return keys(all, prefix) == 2*n }
	require.Eventually(t, registered, waitFor, 10*time.Millisecond)
	from := revision(t, all, prefix)

	for round := range stressCount(3, 10) {
		lead := raftLeader(t, admin, etcd.Endpoints())
		etcd.Pause(t, lead)
		select {
		case <-time.After(2 * ttl * time.Second): // the freeze itself, not a wait for a condition
		case <-t.Context().Done():
		}
		etcd.Stop(t, lead)
		etcd.Restart(t, lead)
		require.Eventually(t, registered, waitFor, 10*time.Millisecond)
		to := revision(t, all, prefix)
		lost := deletes.between(from, to)
		t.Logf("round %d: member %d frozen for %v: %d keys deleted (%s)", round, lead, 2*ttl*time.Second, len(lost), strings.Join(lost, " "))
		if len(lost) > 0 {
			t.Errorf("round %d: %d keys deleted while a quorum was up: %s", round, len(lost), strings.Join(lost, " "))
		}
		from = to
	}
}

// deleteLog records the DELETEs etcd makes under a prefix, as a watch on each
// member sees them: one of them may be frozen, and it tells them later.
type deleteLog struct {
	mu      sync.Mutex
	deletes map[string]int64 // "key@revision": the revision
}

// watchDeletes starts recording the DELETEs under prefix from now on, until
// the test ends.
func watchDeletes(t *testing.T, etcd *etcdtest.Cluster, prefix string) *deleteLog {
	l := &deleteLog{deletes: map[string]int64{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for _, ep := range etcd.Endpoints() {
		cli := clientFor(t, ep)
		w := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if resp := <-w; !resp.Created {
			t.Fatalf("watch on %s: %v", ep, resp.Err())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range w {
				l.mu.Lock()
				for _, ev := range resp.Events {
					if ev.Type == mvccpb.DELETE {
						l.deletes[fmt.Sprintf("%s@%d", ev.Kv.Key, ev.Kv.ModRevision)] = ev.Kv.ModRevision
					}
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// between returns the DELETEs made after revision from, up to revision to.
func (l *deleteLog) between(from, to int64) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var got []string
	for d, rev := range l.deletes {
		if rev > from && rev <= to {
			got = append(got, d)
		}
	}
	return got
}

// raftLeader returns the index of the member that every member names as
// etcd's raft leader.
func raftLeader(t *testing.T, admin *clientv3.Client, eps []string) int {
	t.Helper()
	lead := -1
	require.Eventually(t, func() bool {
		lead = -1
		var leader uint64
		for i, ep := range eps {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := admin.Status(ctx, ep)
			cancel()
			if err != nil || resp.Leader == 0 || (leader != 0 && resp.Leader != leader) {
				return false
			}
			leader = resp.Leader
			if resp.Header.MemberId == leader {
				lead = i
			}
		}
		return lead >= 0
	}, waitFor, 10*time.Millisecond, "the members must agree on a raft leader")
	return lead
}

// keys returns how many keys etcd holds under prefix, or -1 if it cannot
// tell in time.
func keys(cli *clientv3.Client, prefix string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return -1
	}
	return int(resp.Count)
}

// revision returns etcd's current revision, read through cli.
func revision(t *testing.T, cli *clientv3.Client, key string) int64 {
	t.Helper()
	var rev int64
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
		if err == nil {
			rev = resp.Header.Revision
		}
		return err == nil
	}, waitFor, 10*time.Millisecond)
	return rev
}

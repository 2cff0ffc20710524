package biregister_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/metertest"
)

// sharedFleet is K Registers on one Lease, in groups of a root.
type sharedFleet struct {
	lease     *biregister.Lease
	registers []biregister.Register
	root      string
}

// startSharedFleet puts k Registers, named m000…, in groups groups under
// root, on one Lease of ttl, registered side by side.
func startSharedFleet(t *testing.T, endpoints []string, root string, k, groups int, ttl int64, value func(i int) string) *sharedFleet {
	t.Helper()
	lease, err := biregister.NewLease(endpoints, ttl)
	require.NoError(t, err)
	t.Cleanup(lease.Close)
	f := &sharedFleet{lease: lease, registers: make([]biregister.Register, k), root: root}
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.registers[i], errs[i] = biregister.NewRegister(nil, f.group(i, groups), fmt.Sprintf("m%03d", i), value(i), ttl, biregister.WithLease(lease))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "register %d", i)
		t.Cleanup(f.registers[i].Close)
	}
	return f
}

// leaders returns the Register that leads each of groups, once each knows
// who does.
func (f *sharedFleet) leaders(t *testing.T, groups int) []biregister.Register {
	t.Helper()
	leaders := make([]biregister.Register, groups)
	for i, r := range f.registers {
		require.Eventually(t, func() bool { name, _ := r.GetLeader(); return name != "" }, waitFor, 5*time.Millisecond)
		if name, _ := r.GetLeader(); name == r.MyName() {
			leaders[i%groups] = r
		}
	}
	for g, r := range leaders {
		require.NotNil(t, r, "group %d", g)
	}
	return leaders
}

func (f *sharedFleet) group(i, groups int) string { return fmt.Sprintf("%sg%02d/", f.root, i%groups) }

// revisions returns each Register's create revision.
func (f *sharedFleet) revisions() []int64 {
	revs := make([]int64, len(f.registers))
	for i, r := range f.registers {
		revs[i] = r.MyRevision()
	}
	return revs
}

// awaitAll waits until every Register is registered with a revision
// other than in old (nil: any).
func (f *sharedFleet) awaitAll(t *testing.T, old []int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		for i, r := range f.registers {
			if rev := r.MyRevision(); rev == 0 || (old != nil && rev == old[i]) {
				return false
			}
		}
		return true
	}, waitFor, 5*time.Millisecond)
}

// watchRoot returns the events under root from the revision after rev.
func watchRoot(t *testing.T, cli *clientv3.Client, root string, rev int64) <-chan clientv3.WatchResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return cli.Watch(ctx, root, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
}

// eventsUntil collects events from events until done says enough.
func eventsUntil(t *testing.T, events <-chan clientv3.WatchResponse, done func([]*clientv3.Event) bool) []*clientv3.Event {
	t.Helper()
	var got []*clientv3.Event
	timeout := time.After(waitFor)
	for !done(got) {
		select {
		case resp := <-events:
			require.NoError(t, resp.Err())
			got = append(got, resp.Events...)
		case <-timeout:
			t.Fatalf("events in time: %d", len(got))
		}
	}
	return got
}

// memberEvents keeps the events of members' keys (no leave markers) of
// type typ.
func memberEvents(events []*clientv3.Event, typ mvccpb.Event_EventType) []*clientv3.Event {
	var kept []*clientv3.Event
	for _, e := range events {
		if e.Type == typ && !strings.Contains(string(e.Kv.Key), "/.leaving/") {
			kept = append(kept, e)
		}
	}
	return kept
}

// distinctRevisions counts the revisions of events.
func distinctRevisions(events []*clientv3.Event) int {
	revs := map[int64]bool{}
	for _, e := range events {
		revs[e.Kv.ModRevision] = true
	}
	return len(revs)
}

func addr(i int) string { return fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1) }

// K Registers in several groups share one lease in etcd, each with a key
// and create revision of its own; the oldest of each group leads.
func TestSharedLeaseOneLeaseForAll(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	const k, groups = 40, 4
	f := startSharedFleet(t, etcd.Endpoints(), "/shared/", k, groups, 5, addr)
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	ttl, err := cli.TimeToLive(context.Background(), ids[0], clientv3.WithAttachedKeys())
	require.NoError(t, err)
	require.Len(t, ttl.Keys, k)
	for i, r := range f.registers {
		got, err := cli.Get(context.Background(), r.MyKey())
		require.NoError(t, err)
		require.Len(t, got.Kvs, 1)
		require.Equal(t, got.Kvs[0].CreateRevision, r.MyRevision())
		require.Equal(t, addr(i), r.GetValueByName(r.MyName()))
	}
	for g := range groups {
		leaders := 0
		for i := g; i < k; i += groups {
			r := f.registers[i]
			if name, _ := r.GetLeader(); name == r.MyName() {
				require.Eventually(t, r.AmILeader, waitFor, 5*time.Millisecond)
				leaders++
			} else {
				require.False(t, r.AmILeader())
			}
		}
		require.Equal(t, 1, leaders, "group %d", g)
	}
}

// A key deleted from outside is put back alone: one transaction writes it,
// and no other Register's key changes.
func TestSharedLeaseRepairsOneKey(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	const k = 30
	f := startSharedFleet(t, etcd.Endpoints(), "/shared/", k, 3, 5, addr)
	before := f.revisions()
	victim := f.registers[7]
	del, err := cli.Delete(context.Background(), victim.MyKey())
	require.NoError(t, err)
	events := watchRoot(t, cli, f.root, del.Header.Revision-1)
	require.Eventually(t, func() bool { return victim.MyRevision() > del.Header.Revision }, waitFor, 5*time.Millisecond)
	// Whatever else would come has come by a round trip later.
	_, err = cli.Put(context.Background(), f.root+"zz-fence", "x")
	require.NoError(t, err)
	got := eventsUntil(t, events, func(got []*clientv3.Event) bool {
		return len(got) > 0 && string(got[len(got)-1].Kv.Key) == f.root+"zz-fence"
	})
	puts := memberEvents(got[:len(got)-1], mvccpb.PUT)
	require.Len(t, puts, 1, "only the deleted key is written again")
	require.Equal(t, victim.MyKey(), string(puts[0].Kv.Key))
	require.Len(t, memberEvents(got, mvccpb.DELETE), 1)
	for i, r := range f.registers {
		if r != victim {
			require.Equal(t, before[i], r.MyRevision(), "register %d", i)
		}
	}
}

// The lease revoked from outside: one new lease, and every key back on it,
// 128 to a transaction (K = 300: three revisions).
func TestSharedLeaseRevokedPutsAllBack(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	const k = 300
	f := startSharedFleet(t, etcd.Endpoints(), "/shared/", k, 10, 5, addr)
	before := f.revisions()
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	revoked, err := cli.Revoke(context.Background(), ids[0])
	require.NoError(t, err)
	events := watchRoot(t, cli, f.root, revoked.Header.Revision)
	got := eventsUntil(t, events, func(got []*clientv3.Event) bool { return len(memberEvents(got, mvccpb.PUT)) >= k })
	puts := memberEvents(got, mvccpb.PUT)
	require.Len(t, puts, k)
	require.LessOrEqual(t, distinctRevisions(puts), (k+127)/128, "transactions that put the keys back")
	f.awaitAll(t, before)
	ids, said = leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	for _, p := range puts {
		require.Equal(t, int64(ids[0]), p.Kv.Lease)
	}
}

// Values too big for 128 in one request: etcd refuses the transaction
// (--max-request-bytes, 1.5 MiB), and the Lease puts fewer at once.
func TestSharedLeasePutsFewerWhenRefused(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	// 12 × 200 KiB in one request: more than etcd takes; 6 fit. Two a
	// group, so that the Registers' listings stay small.
	const k = 12
	big := strings.Repeat("v", 200<<10)
	f := startSharedFleet(t, etcd.Endpoints(), "/shared/", k, k/2, 10, func(i int) string { return fmt.Sprint(i, big) })
	before := f.revisions()
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	_, err := cli.Revoke(context.Background(), ids[0])
	require.NoError(t, err)
	f.awaitAll(t, before)
	for i, r := range f.registers {
		require.Eventually(t, func() bool { return r.GetValueByName(r.MyName()) == fmt.Sprint(i, big) }, waitFor, 5*time.Millisecond, "register %d", i)
	}
}

// Closing the Lease ends every Register on it, and their keys leave in one
// revision, each read as a graceful leave; no lease is left.
func TestSharedLeaseCloseLeavesInOneRevision(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	const k = 200
	f := startSharedFleet(t, etcd.Endpoints(), "/shared/", k, 1, 5, addr)
	w := startWatcher(t, etcd.Endpoints(), f.group(0, 1))
	drain(t, w, k)
	head, err := cli.Get(context.Background(), "/")
	require.NoError(t, err)
	events := watchRoot(t, cli, f.root, head.Header.Revision)
	f.lease.Close()
	got := eventsUntil(t, events, func(got []*clientv3.Event) bool { return len(memberEvents(got, mvccpb.DELETE)) >= k })
	deletes := memberEvents(got, mvccpb.DELETE)
	require.Len(t, deletes, k)
	require.Equal(t, 1, distinctRevisions(deletes), "revisions the keys left in")
	left := 0
	for left < k {
		c := recv(t, w.Changes())
		require.Equal(t, biregister.OpDelete, c.Op, "%+v", c)
		require.True(t, c.Left, "%s read as a loss", c.Name)
		left++
	}
	ids, said := leasesLeft(t, cli)
	require.Empty(t, ids, said)
	for _, r := range f.registers {
		select {
		case <-r.Closed():
		default:
			t.Fatal("a Register on the closed Lease is not closed")
		}
		require.ErrorIs(t, r.SetValue(context.Background(), "x"), biregister.ErrClosed)
		r.Close() // idempotent
	}
	_, err = biregister.NewRegister(nil, f.root+"late/", "late", "v", 5, biregister.WithLease(f.lease))
	require.ErrorIs(t, err, biregister.ErrClosed)
}

// Closing one Register on a shared lease deletes its key and its leave
// marker only: the lease and the others stay.
func TestSharedLeaseRegisterCloseDeletesItsKeyOnly(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	f := startSharedFleet(t, etcd.Endpoints(), "/shared/", 6, 1, 5, addr)
	w := startWatcher(t, etcd.Endpoints(), f.group(0, 1))
	drain(t, w, 6)
	f.registers[2].Close()
	c := recv(t, w.Changes())
	require.Equal(t, biregister.OpDelete, c.Op)
	require.True(t, c.Left)
	resp, err := cli.Get(context.Background(), f.root, clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 5, "the other keys, and no marker")
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	// The name is free again on the same Lease.
	again := startRegister(t, nil, f.group(0, 1), "m002", "back", 5, biregister.WithLease(f.lease))
	require.NotZero(t, again.MyRevision())
}

// What a shared lease cannot take is refused with ErrInvalidArgument, and
// a name another Register on the Lease has with ErrNameTaken.
func TestSharedLeaseRefusals(t *testing.T) {
	etcd := startEtcd(t)
	eps := etcd.Endpoints()
	lease, err := biregister.NewLease(eps, 5)
	require.NoError(t, err)
	defer lease.Close()
	other := etcd.Client(t)
	for name, call := range map[string]func() error{
		"another ttl": func() error {
			_, err := biregister.NewRegister(nil, "/refused/", "a", "v", 6, biregister.WithLease(lease))
			return err
		},
		"another client": func() error {
			_, err := biregister.NewRegister(nil, "/refused/", "a", "v", 5, biregister.WithLease(lease), biregister.WithClient(other))
			return err
		},
		"no name": func() error {
			_, err := biregister.NewRegisterNoName(nil, "/refused/", "v", 5, biregister.WithLease(lease))
			return err
		},
		"a Watcher on a lease": func() error {
			_, err := biregister.NewWatcher(nil, "/refused/", 5, biregister.WithLease(lease))
			return err
		},
		"lease of a lease": func() error {
			_, err := biregister.NewLease(eps, 5, biregister.WithLease(lease))
			return err
		},
		"ttl 0": func() error {
			_, err := biregister.NewLease(eps, 0)
			return err
		},
		"no endpoints": func() error {
			_, err := biregister.NewLease(nil, 5)
			return err
		},
	} {
		require.ErrorIs(t, call(), biregister.ErrInvalidArgument, name)
	}
	startRegister(t, nil, "/refused/", "a", "v", 5, biregister.WithLease(lease))
	_, err = biregister.NewRegister(nil, "/refused/", "a", "w", 5, biregister.WithLease(lease))
	require.ErrorIs(t, err, biregister.ErrNameTaken)
	require.False(t, errors.Is(err, biregister.ErrInvalidArgument))
}

// Keepalives of the shared lease unanswered: every leader on it stops
// leading by the lease's send-time deadline, each term ending with
// ErrLeaseDeadline; answered again, every Register leads or follows as
// before, on the same lease.
func TestSharedLeaseStalledLeadersStepDown(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const groups = 3
	f := startSharedFleet(t, []string{proxy.Endpoint()}, "/shared/", 2*groups, groups, 3, addr)
	leaders := f.leaders(t, groups)
	terms := make([]*biregister.Term, groups)
	for g, r := range leaders {
		terms[g] = waitTerm(t, r)
	}
	proxy.Stall()
	for g, term := range terms {
		requireEnded(t, term, biregister.ErrLeaseDeadline)
		require.False(t, leaders[g].AmILeader())
	}
	proxy.Heal()
	for g, r := range leaders {
		next := waitTerm(t, r)
		require.Equal(t, terms[g].Revision(), next.Revision(), "the same registration leads again")
	}
	ids, said := leasesLeft(t, etcd.Client(t))
	require.Len(t, ids, 1, said)
}

// etcd replaced by an empty one: one new lease, every key back on it, and
// no fence of a term of the old etcd holds in the new one.
func TestSharedLeaseEtcdReplaced(t *testing.T) {
	etcd := startEtcd(t)
	const k, groups = 20, 2
	f := startSharedFleet(t, etcd.Endpoints(), "/shared/", k, groups, 2, addr)
	terms := make([]*biregister.Term, groups)
	for g, r := range f.leaders(t, groups) {
		terms[g] = waitTerm(t, r)
	}
	etcd.Wipe(t)
	for _, term := range terms {
		requireEnded(t, term, biregister.ErrRegistrationLost)
	}
	fresh := etcd.Client(t)
	require.Eventually(t, func() bool {
		resp, err := fresh.Get(context.Background(), f.root, clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == k
	}, waitFor, 10*time.Millisecond)
	f.awaitAll(t, nil)
	ids, said := leasesLeft(t, fresh)
	require.Len(t, ids, 1, said)
	for g, term := range terms {
		fenced, err := fresh.Txn(context.Background()).If(term.Fence()).Then(clientv3.OpPut("/owner", "x")).Commit()
		require.NoError(t, err)
		require.False(t, fenced.Succeeded, "group %d: the fence of a term of the replaced etcd holds", g)
	}
}

// Lease.Close while Registers join it: each constructor returns a Register
// that the Lease closed, or ErrClosed; nothing is left in etcd.
func TestSharedLeaseCloseWhileJoining(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	for round := range 3 {
		lease, err := biregister.NewLease(etcd.Endpoints(), 5)
		require.NoError(t, err)
		const k = 40
		root := fmt.Sprintf("/joining/%d/", round)
		registers := make([]biregister.Register, k)
		errs := make([]error, k)
		var wg sync.WaitGroup
		for i := range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				registers[i], errs[i] = biregister.NewRegister(nil, fmt.Sprintf("%sg%d/", root, i%4), fmt.Sprint("m", i), "v", 5, biregister.WithLease(lease))
			}()
			if i == k/2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lease.Close()
				}()
			}
		}
		wg.Wait()
		for i := range k {
			if errs[i] != nil {
				require.ErrorIs(t, errs[i], biregister.ErrClosed, "register %d: %v", i, errs[i])
				continue
			}
			select {
			case <-registers[i].Closed():
			case <-time.After(waitFor):
				t.Fatalf("register %d: not closed with its Lease", i)
			}
			registers[i].Close()
		}
		resp, err := cli.Get(context.Background(), root, clientv3.WithPrefix())
		require.NoError(t, err)
		require.Empty(t, resp.Kvs, "keys left")
		ids, said := leasesLeft(t, cli)
		require.Empty(t, ids, said)
	}
}

// Names too long for 128 markers in one request: Lease.Close marks them in
// smaller transactions, and every key still leaves as a graceful leave.
func TestSharedLeaseCloseMarksFewerWhenRefused(t *testing.T) {
	etcd := startEtcd(t)
	const k = 20
	long := strings.Repeat("n", 100<<10)
	lease, err := biregister.NewLease(etcd.Endpoints(), 5)
	require.NoError(t, err)
	defer lease.Close()
	w := startWatcher(t, etcd.Endpoints(), "/long/")
	for i := range k {
		_, err := biregister.NewRegister(nil, "/long/", fmt.Sprint(i, long), "v", 5, biregister.WithLease(lease))
		require.NoError(t, err)
	}
	drain(t, w, k)
	lease.Close()
	for range k {
		c := recv(t, w.Changes())
		require.Equal(t, biregister.OpDelete, c.Op)
		require.True(t, c.Left, "read as a loss")
	}
}

// A Lease given WithMeterProvider records its keepalives' round trips;
// the Registers on it have their own registration metrics.
func TestSharedLeaseMetrics(t *testing.T) {
	etcd := startEtcd(t)
	m := metertest.New(t)
	lease, err := biregister.NewLease(etcd.Endpoints(), 3, biregister.WithMeterProvider(m.Provider))
	require.NoError(t, err)
	defer lease.Close()
	startRegister(t, nil, "/lease-metrics/", "a", "v", 3, biregister.WithLease(lease), biregister.WithMeterProvider(m.Provider))
	require.EqualValues(t, 1, m.Value(t, "biregister.registrations", attribute.String("biregister.name", "a"), attribute.String("biregister.cause", "start")))
	require.Eventually(t, func() bool { return m.Count(t, "biregister.keepalive.duration") > 0 }, waitFor, 10*time.Millisecond,
		"the Lease's keepalive round trips")
}

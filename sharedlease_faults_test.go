package biregister_test

// Faults of Registers on a shared Lease (WithLease): a key left behind,
// a Close that waits on another Register's put, a Register that never
// comes back, two leaders, and the Lease's own Close under load.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// fleetSettled returns why the Registers of open are not in their contract
// state on one shared lease, or "": etcd holds each one's key at the
// create revision it reports, all on one live lease, and under root no
// other member key but those of others (names of keys another party
// holds). Graceful-leave markers are not looked at.
func fleetSettled(cli *clientv3.Client, root string, open []biregister.Register, others ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := cli.Get(ctx, root, clientv3.WithPrefix())
	if err != nil {
		return err.Error()
	}
	held := map[string]int64{}
	leaseOf := map[string]int64{}
	for _, kv := range resp.Kvs {
		held[string(kv.Key)] = kv.CreateRevision
		leaseOf[string(kv.Key)] = kv.Lease
	}
	var lease int64
	for _, r := range open {
		rev, ok := held[r.MyKey()]
		switch {
		case !ok:
			return fmt.Sprintf("%s: etcd holds no key (MyRevision %d)", r.MyKey(), r.MyRevision())
		case rev != r.MyRevision():
			return fmt.Sprintf("%s: created at %d, MyRevision %d", r.MyKey(), rev, r.MyRevision())
		case lease == 0:
			lease = leaseOf[r.MyKey()]
		case leaseOf[r.MyKey()] != lease:
			return fmt.Sprintf("%s: on lease %x, others on %x", r.MyKey(), leaseOf[r.MyKey()], lease)
		}
		delete(held, r.MyKey())
	}
	for _, k := range others {
		delete(held, k)
	}
	for k := range held {
		if strings.Contains(k, "/.leaving/") {
			delete(held, k) // see leaveMarkers
		}
	}
	if len(held) > 0 {
		var left []string
		for k := range held {
			left = append(left, k)
		}
		return fmt.Sprintf("keys no open Register holds: %q", left)
	}
	if lease != 0 {
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease))
		if err != nil || ttl.TTL <= 0 {
			return fmt.Sprintf("lease %x not alive: %v", lease, err)
		}
	}
	return ""
}

// proxiedLease starts etcd and returns a client of it, a fault proxy in
// front of it, and a Lease of ttl that reaches etcd through the proxy,
// closed when the test ends.
func proxiedLease(t *testing.T, ttl int64) (*clientv3.Client, *faultproxy.Proxy, *biregister.Lease) {
	t.Helper()
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	lease, err := biregister.NewLease([]string{proxy.Endpoint()}, ttl)
	require.NoError(t, err)
	t.Cleanup(lease.Close)
	return etcd.Client(t), proxy, lease
}

// countKeys returns how many keys etcd holds under prefix.
func countKeys(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	return resp.Count
}

// A Register closed while the Lease is putting its key back (the key
// deleted from outside, or the lease revoked; etcd's answers slow) leaves
// no key: the Lease carries the put to its end after the Register stopped
// waiting for it, and nothing may then keep that key alive on the shared
// lease.
func TestSharedLeaseCloseDuringPutBackLeavesNoKey(t *testing.T) {
	cli, proxy, lease := proxiedLease(t, 5)
	ctx := context.Background()
	keep := startRegister(t, nil, "/faults-put/", "keep", "v", 5, biregister.WithLease(lease))
	left := 0
	for i := range 6 {
		a, err := biregister.NewRegister(nil, "/faults-put/", "a", "v", 5, biregister.WithLease(lease))
		require.NoError(t, err)
		eventually(t, "the fleet", func() string { return fleetSettled(cli, "/faults-put/", []biregister.Register{keep, a}) })
		proxy.DelayReplies(300 * time.Millisecond)
		how := "key deleted"
		if i%2 == 0 {
			_, err = cli.Delete(ctx, a.MyKey())
			require.NoError(t, err)
			require.Eventually(t, func() bool { return stackHas("biregister.(*Lease).putChunk") }, waitFor, 100*time.Microsecond,
				"the Lease never put the key back")
		} else {
			// The key goes back on the next lease: Close once that one is
			// granted, with the put on it under way.
			how = "lease revoked"
			ids, said := leasesLeft(t, cli)
			require.Len(t, ids, 1, said)
			_, err = cli.Revoke(ctx, ids[0])
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				resp, err := cli.Leases(ctx)
				require.NoError(t, err)
				return len(resp.Leases) > 0 && stackHas("biregister.(*Lease).putChunk")
			}, waitFor, 100*time.Microsecond, "the Lease never put the keys back on a new lease")
		}
		a.Close()
		proxy.Heal()
		if n := countKeys(t, cli, a.MyKey()); n != 0 {
			left++
			ids, said := leasesLeft(t, cli)
			t.Errorf("iteration %d (%s): the closed Register's key is still in etcd: %s", i, how, said)
			require.Len(t, ids, 1, "the key is on the shared lease, kept alive with it")
			_, err := cli.Delete(ctx, a.MyKey())
			require.NoError(t, err)
		}
	}
	t.Logf("%d of 6 Closes left the key behind", left)
}

// A constructor that fails because etcd answers too late (its puts went
// through, their answers did not come in time) leaves no key on the shared
// lease, as a constructor with a lease of its own revokes what it may have
// granted.
func TestSharedLeaseFailedConstructorLeavesNoKey(t *testing.T) {
	const ttl = 2
	cli, proxy, lease := proxiedLease(t, ttl)
	// Requests reach etcd at once (the lease stays renewed); answers come
	// after the constructor's ttl.
	proxy.DelayReplies(3 * time.Second)
	_, err := biregister.NewRegister(nil, "/faults-ctor/", "b", "v", ttl, biregister.WithLease(lease))
	require.Error(t, err, "the constructor got no answer in time")
	proxy.Heal()
	require.Zero(t, countKeys(t, cli, "/faults-ctor/b"), "a failed constructor left its key on the shared lease")
}

// The lease lost again while the Registers put their keys back on the
// next one, several times in a row: every Register comes back, on one
// lease, and no key is left that no Register holds.
func TestSharedLeaseLostTwiceInARow(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	const k = 40
	f := startSharedFleet(t, etcd.Endpoints(), "/faults-twice/", k, 4, 5, addr)
	ctx := context.Background()
	// Each lease revoked as soon as it is there: some keys are on it,
	// others on their way to it.
	revoked := map[clientv3.LeaseID]bool{}
	for round := range 6 {
		require.Eventually(t, func() bool {
			resp, err := cli.Leases(ctx)
			require.NoError(t, err)
			for _, l := range resp.Leases {
				if !revoked[l.ID] {
					revoked[l.ID] = true
					_, err := cli.Revoke(ctx, l.ID)
					return err == nil
				}
			}
			return false
		}, waitFor, 100*time.Microsecond, "round %d: no new lease", round)
	}
	eventually(t, "the fleet after six losses", func() string { return fleetSettled(cli, f.root, f.registers) })
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
}

// etcd replaced by an empty one on the same address: every Register on the
// Lease comes back there, on one new lease.
func TestSharedLeaseWiped(t *testing.T) {
	etcd := startEtcd(t)
	const k = 30
	f := startSharedFleet(t, etcd.Endpoints(), "/faults-wipe/", k, 3, 3, addr)
	before := f.revisions()
	etcd.Wipe(t)
	cli := etcd.Client(t)
	eventually(t, "the fleet on the new etcd", func() string { return fleetSettled(cli, f.root, f.registers) })
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	for i, r := range f.registers {
		require.NotEqual(t, before[i], r.MyRevision(), "register %d kept the revision of the old etcd", i)
	}
}

// Each way of changing one key from outside repairs that key alone: the
// Register comes back with its value on the shared lease, and no other
// Register's registration changes.
func TestSharedLeaseOutsideWrites(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	f := startSharedFleet(t, etcd.Endpoints(), "/faults-outside/", 12, 2, 5, addr)
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	shared := ids[0]
	other, err := cli.Grant(ctx, 600)
	require.NoError(t, err)
	defer cli.Revoke(ctx, other.ID) //nolint:errcheck // best effort
	writes := map[string]func(key string) error{
		"deleted":             func(key string) error { _, err := cli.Delete(ctx, key); return err },
		"put without a lease": func(key string) error { _, err := cli.Put(ctx, key, "outside"); return err },
		"put with another lease": func(key string) error {
			_, err := cli.Put(ctx, key, "outside", clientv3.WithLease(other.ID))
			return err
		},
		"put with the shared lease": func(key string) error { _, err := cli.Put(ctx, key, "outside", clientv3.WithLease(shared)); return err },
		"same value, no lease":      func(key string) error { _, err := cli.Put(ctx, key, addr(3)); return err },
		"same value, another lease": func(key string) error { _, err := cli.Put(ctx, key, addr(3), clientv3.WithLease(other.ID)); return err },
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			before := f.revisions()
			victim := f.registers[3]
			require.NoError(t, write(victim.MyKey()))
			eventually(t, "the victim back", func() string {
				if why := fleetSettled(cli, f.root, f.registers); why != "" {
					return why
				}
				if victim.MyRevision() == before[3] {
					return "the victim did not notice"
				}
				if got := victim.GetValueByName(victim.MyName()); got != addr(3) {
					return "the victim reads " + got
				}
				return ""
			})
			for i, r := range f.registers {
				if i != 3 {
					require.Equal(t, before[i], r.MyRevision(), "register %d", i)
				}
			}
		})
	}
}

// Two processes' worth of Registers in the same groups, each on a Lease of
// its own; the first leads every group. Cut off from etcd for longer than
// the ttl, the first stops leading in every group before the second leads
// there, and once healed every Register of it comes back.
func TestSharedLeaseStalledPastTTLNeverTwoLeaders(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl, groups = 2, 4
	first := startGroups(t, []string{proxy.Endpoint()}, "/faults-stall/", "first", groups, ttl)
	second := startGroups(t, etcd.Endpoints(), "/faults-stall/", "second", groups, ttl)
	var stops []func() int
	for g := range groups {
		require.Eventually(t, first[g].AmILeader, waitFor, 5*time.Millisecond)
		stops = append(stops, sampleLeading(first[g], second[g]))
	}
	proxy.Stall()
	for g := range groups {
		require.Eventually(t, second[g].AmILeader, waitFor, 5*time.Millisecond, "group %d", g)
	}
	proxy.Heal()
	eventually(t, "both back", func() string {
		if why := fleetSettled(cli, "/faults-stall/", first, keysOf(second)...); why != "" {
			return why
		}
		return fleetSettled(cli, "/faults-stall/", second, keysOf(first)...)
	})
	for g, stop := range stops {
		require.Zero(t, stop(), "group %d: two leaders at one moment", g)
	}
}

// startGroups puts one Register named name in each of groups groups under
// root, all on one Lease of ttl reaching etcd at endpoints.
func startGroups(t *testing.T, endpoints []string, root, name string, groups int, ttl int64) []biregister.Register {
	t.Helper()
	lease, err := biregister.NewLease(endpoints, ttl)
	require.NoError(t, err)
	t.Cleanup(lease.Close)
	regs := make([]biregister.Register, groups)
	for g := range groups {
		regs[g] = startRegister(t, nil, fmt.Sprintf("%sg%02d/", root, g), name, "v", ttl, biregister.WithLease(lease))
	}
	return regs
}

func keysOf(regs []biregister.Register) []string {
	keys := make([]string, len(regs))
	for i, r := range regs {
		keys[i] = r.MyKey()
	}
	return keys
}

// Every call on Registers of a Lease, from many goroutines, while the Lease
// closes: each returns (nil or ErrClosed, or a constructor's ErrClosed),
// nothing hangs, and once all returned etcd holds neither a lease nor a
// key of theirs.
func TestSharedLeaseConcurrentWithLeaseClose(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	for round := range 3 {
		root := fmt.Sprintf("/faults-conc%d/", round)
		lease, err := biregister.NewLease(etcd.Endpoints(), 3)
		require.NoError(t, err)
		var regs []biregister.Register
		for i := range 8 {
			r, err := biregister.NewRegister(nil, root+fmt.Sprintf("g%d/", i%2), fmt.Sprintf("r%d", i), "v", 3, biregister.WithLease(lease))
			require.NoError(t, err)
			regs = append(regs, r)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		var calls sync.WaitGroup
		errs := make(chan error, 1000)
		call := func(what string, do func() error) {
			calls.Add(1)
			go func() {
				defer calls.Done()
				for ctx.Err() == nil {
					err := do()
					if errors.Is(err, biregister.ErrClosed) {
						return
					}
					if err != nil && !errors.Is(err, biregister.ErrNameTaken) && ctx.Err() == nil {
						errs <- fmt.Errorf("%s: %w", what, err)
						return
					}
				}
			}()
		}
		for i, r := range regs {
			call("SetValue", func() error { return r.SetValue(ctx, fmt.Sprint(time.Now().UnixNano())) })
			call("Resign", func() error { return r.Resign(ctx) })
			call("Lead", func() error {
				return r.Lead(ctx, func(term *biregister.Term) {
					_, _ = cli.Txn(term).If(term.Fence()).Then(clientv3.OpPut(root+"work", "x")).Commit()
				})
			})
			call("WaitTerm", func() error { _, err := r.WaitTerm(ctx); return err })
			if i%4 == 0 {
				call("Close", func() error { r.Close(); return biregister.ErrClosed })
			}
		}
		for i := range 4 {
			call("NewRegister", func() error {
				r, err := biregister.NewRegister(nil, root+"late/", fmt.Sprintf("l%d", i), "v", 3, biregister.WithLease(lease))
				if err == nil {
					r.Close()
				}
				return err
			})
		}
		// Not a wait for anything: let the calls run a while before the
		// Lease closes under them.
		time.Sleep(time.Duration(200+round*300) * time.Millisecond)
		returnsWithin(t, "Lease.Close, three at once", closeBound(3*time.Second)+time.Second, func() struct{} {
			var closing sync.WaitGroup
			for range 3 {
				closing.Add(1)
				go func() {
					defer closing.Done()
					lease.Close()
				}()
			}
			closing.Wait()
			return struct{}{}
		})
		returnsWithin(t, "the calls", waitFor, func() struct{} { calls.Wait(); return struct{}{} })
		cancel()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
		for _, r := range regs {
			checkClosed(t, r)
		}
		ids, said := leasesLeft(t, cli)
		require.Empty(t, ids, said)
		resp, err := cli.Get(context.Background(), root, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		require.NoError(t, err)
		var left []string
		for _, kv := range resp.Kvs {
			if string(kv.Key) != root+"work" {
				left = append(left, string(kv.Key))
			}
		}
		require.Empty(t, left, "round %d: keys left", round)
	}
}

// Inputs at their extremes: nothing panics or hangs, and bad input is
// ErrInvalidArgument.
func TestSharedLeaseInputs(t *testing.T) {
	etcd := startEtcd(t)
	eps := etcd.Endpoints()
	newRegister := func(name string, opts ...biregister.Option) error {
		return returnsWithin(t, "NewRegister", 10*time.Second, func() error {
			r, err := biregister.NewRegister(eps, "/faults-in/", name, "v", 5, opts...)
			if err == nil {
				r.Close()
			}
			return err
		})
	}
	t.Run("zero Lease", func(t *testing.T) {
		var zero biregister.Lease
		require.ErrorIs(t, newRegister("a", biregister.WithLease(&zero)), biregister.ErrInvalidArgument)
		returnsWithin(t, "Close of a zero Lease", readBound, func() struct{} { zero.Close(); return struct{}{} })
	})
	t.Run("nil Lease", func(t *testing.T) {
		var none *biregister.Lease
		returnsWithin(t, "Close of a nil Lease", readBound, func() struct{} { none.Close(); return struct{}{} })
		// As WithClient(nil): no Lease given, and then no endpoints either.
		_, err := biregister.NewRegister(nil, "/faults-in/", "a", "v", 5, biregister.WithLease(none))
		require.ErrorIs(t, err, biregister.ErrInvalidArgument)
	})
	t.Run("huge ttl", func(t *testing.T) {
		err := returnsWithin(t, "NewLease", 10*time.Second, func() error {
			l, err := biregister.NewLease(eps, 1<<62)
			if err == nil {
				l.Close()
			}
			return err
		})
		require.ErrorIs(t, err, biregister.ErrInvalidArgument)
	})
	t.Run("name at the request limit", func(t *testing.T) {
		lease, err := biregister.NewLease(eps, 5)
		require.NoError(t, err)
		defer lease.Close()
		name := strings.Repeat("n", 600<<10) // fits once in a request, not three times
		err = newRegister(name, biregister.WithLease(lease))
		t.Logf("NewRegister with a name of 600 KiB: %v", err)
	})
}

// A constructor that the Lease's Close overtakes after it listed its group
// (its join refused with ErrClosed) returns ErrClosed and leaves nothing
// running: its watcher's loop, started by then, ends too.
func TestSharedLeaseCloseDuringConstructorLeaksNothing(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{proxy.Endpoint()}})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	// With WithClient the Lease's Close leaves the client open, so the
	// constructor's listing ends well and its join is what Close refuses.
	lease, err := biregister.NewLease(nil, 5, biregister.WithClient(cli))
	require.NoError(t, err)
	proxy.DelayReplies(500 * time.Millisecond)
	made := make(chan error, 1)
	go func() {
		r, err := biregister.NewRegister(nil, "/faults-ctor-close/", "a", "v", 5, biregister.WithLease(lease))
		if err == nil {
			r.Close()
		}
		made <- err
	}()
	require.Eventually(t, func() bool { return stackHas("biregister.(*watcher).list(") }, waitFor, 100*time.Microsecond,
		"the constructor never listed its group")
	lease.Close()
	proxy.Heal()
	select {
	case err := <-made:
		require.ErrorIs(t, err, biregister.ErrClosed)
	case <-time.After(waitFor):
		t.Fatal("the constructor did not return")
	}
	require.Eventually(t, func() bool { return !stackHas("biregister.(*watcher).run(") }, waitFor, 5*time.Millisecond,
		"a failed constructor's watcher still runs")
}

// TestSharedLeaseLeaseCloseBoundedWhileAnotherPuts: the Lease's Close
// waits for etcd no longer than its markers and its revoke allow (half of
// min(ttl, 2 s), then min(ttl, 2 s)), also while the Lease puts a
// Register's key back on an etcd that stopped answering.
func TestSharedLeaseLeaseCloseBoundedWhileAnotherPuts(t *testing.T) {
	closeWhileAnotherPuts(t, func(lease *biregister.Lease, _ biregister.Register) { lease.Close() })
}

// closeWhileAnotherPuts puts a and b on a Lease of ttl 30 s, deletes a's
// key from outside, stalls etcd once the Lease is putting it back, and
// requires closeIt to return within closeBound, and a second for the
// Lease's markers.
func closeWhileAnotherPuts(t *testing.T, closeIt func(lease *biregister.Lease, b biregister.Register)) {
	const ttl = 30
	cli, proxy, lease := proxiedLease(t, ttl)
	a := startRegister(t, nil, "/faults-bound/", "a", "v", ttl, biregister.WithLease(lease))
	b := startRegister(t, nil, "/faults-bound/", "b", "v", ttl, biregister.WithLease(lease))
	proxy.DelayReplies(100 * time.Millisecond)
	_, err := cli.Delete(context.Background(), a.MyKey())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return stackHas("biregister.(*Lease).putChunk") }, waitFor, 100*time.Microsecond)
	proxy.Stall()
	defer proxy.Heal()
	start := time.Now()
	returnsWithin(t, "Close", closeBound(ttl*time.Second)+time.Second, func() struct{} { closeIt(lease, b); return struct{}{} })
	t.Logf("Close returned after %v", time.Since(start))
}

// TestSharedLeaseRegisterCloseBoundedWhileAnotherPuts: a Register's
// Close on a shared Lease is bounded as on a lease of its own (README:
// Close waits at most min(ttl, 2 s) for etcd; TestCloseBoundedWithLongTTL),
// also while the Lease puts another Register's key back on an etcd that
// stopped answering: a Register leaves the Lease without waiting for the
// Lease's loop, which answers only once that put ends (up to the put's
// deadline, ttl/3 here).
func TestSharedLeaseRegisterCloseBoundedWhileAnotherPuts(t *testing.T) {
	closeWhileAnotherPuts(t, func(_ *biregister.Lease, b biregister.Register) { b.Close() })
}

// A value refused on its own (over the client's 2 MiB) rides in the
// Lease's batch with other Registers' puts (constructors side by side):
// the batch is refused for its size, and the Lease puts fewer keys at once
// until the value is alone. Only that value is refused, and only that
// constructor fails; the transactions of the next loss still carry 128
// keys each.
func TestSharedLeaseRefusedValueKeepsBatches(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	const k, ttl = 100, 60
	lease, err := biregister.NewLease(etcd.Endpoints(), ttl)
	require.NoError(t, err)
	t.Cleanup(lease.Close)
	huge := strings.Repeat("x", 3<<20)
	var regs []biregister.Register
	for round := range 3 {
		for _, r := range regs {
			r.Close()
		}
		regs = make([]biregister.Register, k)
		errs := make([]error, k)
		var hugeErr error
		var made sync.WaitGroup
		made.Add(k + 1)
		go func() {
			defer made.Done()
			_, hugeErr = biregister.NewRegister(nil, "/faults-batch/", "huge", huge, ttl, biregister.WithLease(lease))
		}()
		for i := range k {
			go func() {
				defer made.Done()
				regs[i], errs[i] = biregister.NewRegister(nil, "/faults-batch/", fmt.Sprintf("m%03d", i), addr(i), ttl, biregister.WithLease(lease))
			}()
		}
		made.Wait()
		require.Error(t, hugeErr, "a value over the client's request limit")
		for i, err := range errs {
			require.NoError(t, err, "round %d, register %d", round, i)
		}
	}
	for _, r := range regs {
		t.Cleanup(r.Close)
	}
	eventually(t, "the Registers", func() string { return fleetSettled(cli, "/faults-batch/", regs) })
	ids, said := leasesLeft(t, cli)
	require.Len(t, ids, 1, said)
	revoked, err := cli.Revoke(ctx, ids[0])
	require.NoError(t, err)
	events := watchRoot(t, cli, "/faults-batch/", revoked.Header.Revision)
	got := eventsUntil(t, events, func(got []*clientv3.Event) bool { return len(memberEvents(got, mvccpb.PUT)) >= k })
	require.LessOrEqual(t, distinctRevisions(memberEvents(got, mvccpb.PUT)), (k+127)/128, "transactions that put the keys back")
}

// Every method of Registers on a shared Lease under each fault — etcd's
// answers 300 ms late, etcd cut off past the ttl and back, one endpoint of
// three taking requests and answering none, a value etcd refuses — returns
// within its bound; once the fault heals every Register is back on one
// lease with a value it was given; then the Lease closes under calls in
// flight, which return ErrClosed, and every method of the closed Registers
// answers as README's After Close says.
func TestSharedLeaseMethodsUnderFaults(t *testing.T) {
	type fault struct {
		name    string
		members int
		start   func(c *etcdtest.Cluster, p *faultproxy.Proxy)
		heal    func(c *etcdtest.Cluster, p *faultproxy.Proxy)
		hold    time.Duration // how long the fault holds before the calls
	}
	faults := []fault{
		{"slow", 1, func(_ *etcdtest.Cluster, p *faultproxy.Proxy) { p.DelayReplies(300 * time.Millisecond) },
			func(_ *etcdtest.Cluster, p *faultproxy.Proxy) { p.Heal() }, 0},
		{"down past the ttl and back", 1, func(_ *etcdtest.Cluster, p *faultproxy.Proxy) { p.Cut() },
			func(_ *etcdtest.Cluster, p *faultproxy.Proxy) { p.Heal() }, 3 * matrixLease / 2},
		{"one endpoint of three stalled", 3, func(c *etcdtest.Cluster, _ *faultproxy.Proxy) { c.Front(0).StallRequests() },
			func(c *etcdtest.Cluster, _ *faultproxy.Proxy) { c.Front(0).Heal() }, 0},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			leakcheck.VerifyNoLeaks(t)
			etcd := etcdtest.Start(t, f.members)
			cli := etcd.Client(t)
			proxy := faultproxy.Start(t, etcd.Endpoint(0))
			eps := etcd.Endpoints()
			if f.members == 1 {
				eps = []string{proxy.Endpoint()}
			}
			lease := construct(t, "NewLease", matrixLease+slack, func() (*biregister.Lease, error) { return biregister.NewLease(eps, matrixTTL) })
			root := "/faults-methods/"
			var regs []biregister.Register
			for i, name := range []string{"a", "b", "c"} {
				prefix := fmt.Sprintf("%sg%d/", root, i/2)
				regs = append(regs, construct(t, "NewRegister", matrixLease+slack, func() (biregister.Register, error) {
					return biregister.NewRegister(nil, prefix, name, "v", matrixTTL, biregister.WithLease(lease))
				}))
			}
			w := startWatcher(t, etcd.Endpoints(), root+"g0/")
			stop := sampleLeading(regs[0], regs[1])
			f.start(etcd, proxy)
			if f.hold > 0 {
				deadline := time.Now().Add(f.hold)
				eventually(t, "the fault held", func() string {
					for _, r := range regs {
						if r.AmILeader() {
							return "a Register still leads, its lease unrenewed for " + time.Until(deadline).String()
						}
					}
					if time.Now().Before(deadline) {
						return "holding"
					}
					return ""
				})
			}
			values := map[biregister.Register][]string{}
			for i, r := range regs {
				values[r] = []string{"v", duringFault(t, r, matrixLease/2, fmt.Sprint("during ", i))}
			}
			f.heal(etcd, proxy)
			// A Resign's leave marker may stay (its delete waited on the
			// stalled member), as with a lease of the Register's own: the
			// caches are compared with the members alone.
			eventually(t, "one lease for all", func() string { return fleetSettled(cli, root, regs) })
			for _, r := range regs {
				eventually(t, "the value of "+r.MyKey(), func() string {
					got := r.GetValueByName(r.MyName())
					if !slices.Contains(values[r], got) {
						return "reads " + short(got)
					}
					if held := heldBy(t, cli, r); held.value != got {
						return "etcd holds " + short(held.value)
					}
					return ""
				})
			}
			// A value etcd refuses changes nothing.
			before := heldBy(t, cli, regs[0])
			require.Error(t, regs[0].SetValue(context.Background(), strings.Repeat("x", 1600<<10)))
			checkUnchanged(t, cli, regs[0], before)
			require.Zero(t, stop(), "two leaders at one moment")
			checkReads(t, w)

			// The Lease's Close under calls in flight.
			ctx := context.Background()
			results := make(chan error, 5*len(regs))
			for _, r := range regs {
				for _, c := range requests(ctx, r) {
					if c.name == "SetValue" || c.name == "Resign" {
						continue // they end by themselves
					}
					go func() {
						// A leader's WaitLeader and WaitTerm return at once.
						if err := c.do(); !errors.Is(err, biregister.ErrClosed) && (c.name == "Lead" || err != nil) {
							results <- fmt.Errorf("%s returned %v, not ErrClosed", c.name, err)
							return
						}
						results <- nil
					}()
				}
			}
			calls := 3 * len(regs) // WaitLeader, WaitTerm and Lead of each
			returnsWithin(t, "Lease.Close", closeBound(matrixLease)+time.Second, func() struct{} { lease.Close(); return struct{}{} })
			for range calls {
				select {
				case err := <-results:
					require.NoError(t, err)
				case <-time.After(readBound):
					t.Fatal("a call did not return once the Lease had closed")
				}
			}
			for _, r := range regs {
				checkClosed(t, r)
			}
			ids, said := leasesLeft(t, cli)
			require.Empty(t, ids, said)
			require.Zero(t, countKeys(t, cli, root), "keys left after the Lease's Close")
		})
	}
}

// A Register on a shared Lease closed while one endpoint of three takes
// requests and answers none leaves neither its key nor its leave marker:
// the shared lease, which stays, would keep either for as long as it lives
// (a Register's own lease goes with its Close, and takes them along).
func TestSharedLeaseCloseWithOneEndpointStalledLeavesNothing(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 3)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.DirectEndpoint(1), etcd.DirectEndpoint(2)}})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	lease, err := biregister.NewLease(etcd.Endpoints(), 30)
	require.NoError(t, err)
	t.Cleanup(lease.Close)
	startRegister(t, nil, "/faults-stalled/", "stays", "v", 30, biregister.WithLease(lease))
	var left []string
	for i := range 8 { // the client sends a request to the stalled member one time in three
		r, err := biregister.NewRegister(nil, "/faults-stalled/", fmt.Sprintf("s%d", i), "v", 30, biregister.WithLease(lease))
		require.NoError(t, err)
		etcd.Front(0).StallRequests()
		returnsWithin(t, "Close", closeBound(30*time.Second), func() struct{} { r.Close(); return struct{}{} })
		etcd.Front(0).Heal()
		resp, err := cli.Get(context.Background(), "/faults-stalled/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		require.NoError(t, err)
		for _, kv := range resp.Kvs {
			if k := string(kv.Key); k != "/faults-stalled/stays" && !slices.Contains(left, k) {
				left = append(left, k)
			}
		}
	}
	require.Empty(t, left, "keys left on the shared lease after Close")
}

// The lease lost while a Register is in its constructor, after its key
// went in and before its listing (etcd's answers slow): the constructor
// returns a Register that registers again by itself, on the next lease.
func TestSharedLeaseLostDuringConstructor(t *testing.T) {
	const ttl = 3
	cli, proxy, lease := proxiedLease(t, ttl)
	ctx := context.Background()
	other := startRegister(t, nil, "/faults-ctor-lost/", "other", "v", ttl, biregister.WithLease(lease))
	for i := range 3 {
		proxy.DelayReplies(500 * time.Millisecond)
		type made struct {
			r   biregister.Register
			err error
		}
		done := make(chan made, 1)
		name := fmt.Sprintf("new%d", i)
		go func() {
			r, err := biregister.NewRegister(nil, "/faults-ctor-lost/", name, "v", ttl, biregister.WithLease(lease))
			done <- made{r, err}
		}()
		// The key is in etcd: its answer, and then the listing, are on their way.
		var id int64
		require.Eventually(t, func() bool {
			resp, err := cli.Get(ctx, "/faults-ctor-lost/"+name)
			require.NoError(t, err)
			if len(resp.Kvs) == 0 {
				return false
			}
			id = resp.Kvs[0].Lease
			return true
		}, waitFor, 100*time.Microsecond)
		_, err := cli.Revoke(ctx, clientv3.LeaseID(id))
		require.NoError(t, err)
		var m made
		select {
		case m = <-done:
		case <-time.After(waitFor):
			t.Fatal("the constructor did not return")
		}
		proxy.Heal()
		require.NoError(t, m.err)
		t.Cleanup(m.r.Close)
		eventually(t, "the new Register back", func() string {
			return fleetSettled(cli, "/faults-ctor-lost/", []biregister.Register{other, m.r})
		})
		m.r.Close()
	}
}

// A Register that leaves unregistered while the Lease's put of its key
// outlasts the Register's wait: the Lease deletes the key once the put
// ends, so that no key of a Register gone stays on the shared lease.
func TestSharedLeaseAbandonedKeyDeleted(t *testing.T) {
	const ttl = 30 // a close wait of 2 s: the Register waits 1 s for the Lease
	cli, proxy, lease := proxiedLease(t, ttl)
	keep := startRegister(t, nil, "/faults-abandoned/", "keep", "v", ttl, biregister.WithLease(lease))
	a, err := biregister.NewRegister(nil, "/faults-abandoned/", "a", "v", ttl, biregister.WithLease(lease))
	require.NoError(t, err)
	proxy.DelayReplies(1500 * time.Millisecond)
	_, err = cli.Delete(context.Background(), a.MyKey())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return stackHas("biregister.(*Lease).putChunk") }, waitFor, 100*time.Microsecond,
		"the Lease never put the key back")
	a.Close()
	proxy.Heal()
	require.Eventually(t, func() bool { return countKeys(t, cli, a.MyKey()) == 0 }, waitFor, 10*time.Millisecond,
		"the key of a Register gone stays on the shared lease")
	require.NotZero(t, keep.MyRevision())
}

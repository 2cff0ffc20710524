// Benchmark 14, a fleet in one process: K registrations in K/10 groups on
// one shared Lease, on K leases of their own, and K elections on one etcd
// concurrency.Session — what joining all K takes, the leases etcd holds,
// the messages etcd receives idle, how long all K keys take to come back
// after the lease is revoked from outside, and the revisions they leave in
// on close.

package biregister_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/etcdtest"
)

// fleet is K registrations, however they are held.
type fleet struct {
	keys     []string
	revoke   func(b *testing.B) // revokes every lease from outside
	closeAll func()
}

// fleetKinds are the ways to hold K registrations, side by side.
var fleetKinds = []struct {
	name  string
	start func(b *testing.B, cli *clientv3.Client, root string, k int) fleet
}{
	{"biregister-shared-Lease", startSharedLeaseFleet},
	{"biregister-own-leases", startOwnLeaseFleet},
	{"concurrency-Session", startSessionFleet},
}

// fleetKey is the i-th registration's group and name under root: ten per
// group.
func fleetKey(root string, i int) (group, name string) {
	return fmt.Sprintf("%sg%03d/", root, i/10), fmt.Sprintf("m%04d", i)
}

// startConcurrently runs start(i) for every i < k from k goroutines.
func startConcurrently(b *testing.B, k int, start func(i int) error) {
	var wg sync.WaitGroup
	errs := make([]error, k)
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = start(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

func startSharedLeaseFleet(b *testing.B, cli *clientv3.Client, root string, k int) fleet {
	lease, err := biregister.NewLease(nil, benchFleetTTL, biregister.WithClient(cli))
	if err != nil {
		b.Fatal(err)
	}
	f := fleet{keys: make([]string, k)}
	startConcurrently(b, k, func(i int) error {
		group, name := fleetKey(root, i)
		r, err := biregister.NewRegister(nil, group, name, endpointAddr(i), benchFleetTTL, biregister.WithLease(lease))
		if err == nil {
			f.keys[i] = r.MyKey()
		}
		return err
	})
	f.revoke = revokeAllLeases(cli)
	f.closeAll = lease.Close
	return f
}

func startOwnLeaseFleet(b *testing.B, cli *clientv3.Client, root string, k int) fleet {
	f := fleet{keys: make([]string, k)}
	registers := make([]biregister.Register, k)
	startConcurrently(b, k, func(i int) error {
		group, name := fleetKey(root, i)
		r, err := biregister.NewRegister(nil, group, name, endpointAddr(i), benchFleetTTL, biregister.WithClient(cli))
		if err == nil {
			registers[i], f.keys[i] = r, r.MyKey()
		}
		return err
	})
	f.revoke = revokeAllLeases(cli)
	f.closeAll = func() {
		var wg sync.WaitGroup
		for _, r := range registers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.Close()
			}()
		}
		wg.Wait()
	}
	return f
}

// startSessionFleet campaigns in K elections (one per registration, ten
// per group prefix) on one Session: a key each on the Session's lease.
func startSessionFleet(b *testing.B, cli *clientv3.Client, root string, k int) fleet {
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(benchFleetTTL))
	if err != nil {
		b.Fatal(err)
	}
	f := fleet{keys: make([]string, k)}
	startConcurrently(b, k, func(i int) error {
		group, name := fleetKey(root, i)
		e := concurrency.NewElection(s, group+name)
		ctx, cancel := ctxWait()
		defer cancel()
		if err := e.Campaign(ctx, endpointAddr(i)); err != nil {
			return err
		}
		f.keys[i] = e.Key()
		return nil
	})
	f.revoke = revokeAllLeases(cli)
	f.closeAll = func() { s.Close() }
	return f
}

// revokeAllLeases returns what revokes every lease etcd holds.
func revokeAllLeases(cli *clientv3.Client) func(b *testing.B) {
	return func(b *testing.B) {
		ctx, cancel := ctxWait()
		defer cancel()
		resp, err := cli.Leases(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range resp.Leases {
			if _, err := cli.Revoke(ctx, l.ID); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// benchFleetTTL is the fleets' ttl, as the targets say.
const benchFleetTTL = 10

// countLeases returns how many leases etcd holds.
func countLeases(b *testing.B, cli *clientv3.Client) int {
	ctx, cancel := ctxWait()
	defer cancel()
	resp, err := cli.Leases(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return len(resp.Leases)
}

// keysPresent counts how many of keys etcd holds.
func keysPresent(b *testing.B, cli *clientv3.Client, root string, keys []string) int {
	ctx, cancel := ctxWait()
	defer cancel()
	resp, err := cli.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		b.Fatal(err)
	}
	held := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		held[string(kv.Key)] = true
	}
	n := 0
	for _, k := range keys {
		if held[k] {
			n++
		}
	}
	return n
}

// BenchmarkFleet, on an etcd process of BIREGISTER_ETCD_BIN if set, holds K registrations (BIREGISTER_BENCH_FLEET_K, default
// 1,000, ten per group; ttl 10) each of the three ways, one after the
// other on one etcd, and reports: join-ms, all K started side by side;
// leases, that etcd holds; idle-msgs/s, all gRPC messages etcd received
// over an idle window (BIREGISTER_BENCH_FLEET_IDLE, default 20s, after
// 17 s of settling; 0 skips it) per second; back-ms, from an outside
// revoke of every lease until all K keys are there again (-1: they never
// came back within 3×ttl); leave-revisions, the revisions the K keys left
// in on close.
func BenchmarkFleet(b *testing.B) {
	k := benchutil.EnvInt("BIREGISTER_BENCH_FLEET_K", 1000)
	idle := benchutil.EnvDuration("BIREGISTER_BENCH_FLEET_IDLE", 20*time.Second)
	// A member of internal/etcdtest: an etcd process of BIREGISTER_ETCD_BIN
	// when it names one (etcd 3.4, the targets), embedded otherwise.
	etcd := etcdtest.Start(b, 1)
	eps := []string{etcd.DirectEndpoint(0)}
	cli := benchClient(b, eps)
	for _, kind := range fleetKinds {
		b.Run(kind.name, func(b *testing.B) {
			for range b.N {
				root := uniquePrefix("fleet")
				start := time.Now()
				f := kind.start(b, cli, root, k)
				b.ReportMetric(ms(time.Since(start)), "join-ms")
				b.ReportMetric(float64(countLeases(b, cli)), "leases")
				if idle > 0 {
					time.Sleep(17 * time.Second)
					m0, err := benchutil.Scrape(eps[0])
					if err != nil {
						b.Fatal(err)
					}
					time.Sleep(idle)
					m1, err := benchutil.Scrape(eps[0])
					if err != nil {
						b.Fatal(err)
					}
					received := m1.Sum("grpc_server_msg_received_total") - m0.Sum("grpc_server_msg_received_total")
					b.ReportMetric(received/idle.Seconds(), "idle-msgs/s")
					b.Logf("idle messages by method: %v", m1.DeltaBy(m0, "grpc_server_msg_received_total", "grpc_method"))
				}
				revoked := time.Now()
				f.revoke(b)
				back := -1.0
				for time.Since(revoked) < 3*benchFleetTTL*time.Second {
					if keysPresent(b, cli, root, f.keys) == k {
						back = ms(time.Since(revoked))
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				b.ReportMetric(back, "back-ms")
				head, err := cli.Get(context.Background(), "/")
				if err != nil {
					b.Fatal(err)
				}
				f.closeAll()
				b.ReportMetric(float64(leaveRevisions(b, cli, root, head.Header.Revision)), "leave-revisions")
			}
		})
	}
}

// leaveRevisions counts the revisions after from that deleted keys under
// root, up to a key it then writes there.
func leaveRevisions(b *testing.B, cli *clientv3.Client, root string, from int64) int {
	ctx, cancel := ctxWait()
	defer cancel()
	end := root + "~end"
	if _, err := cli.Put(ctx, end, ""); err != nil {
		b.Fatal(err)
	}
	revs := map[int64]bool{}
	for resp := range cli.Watch(ctx, root, clientv3.WithPrefix(), clientv3.WithRev(from+1)) {
		if err := resp.Err(); err != nil {
			b.Fatal(err)
		}
		for _, e := range resp.Events {
			if string(e.Kv.Key) == end {
				return len(revs)
			}
			if e.Type == clientv3.EventTypeDelete {
				revs[e.Kv.ModRevision] = true
			}
		}
	}
	b.Fatal("the watch ended before the end key")
	return 0
}

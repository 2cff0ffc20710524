// What the benchmarks share: one embedded etcd per top-level benchmark, its
// clients, group prefixes, bounded waits, and the raw-watch and cache waits
// that several of them time against.
//
// The benchmarks put biregister side by side with etcd's own
// recipes (a raw clientv3.Watch, concurrency.Session + Election,
// naming/endpoints), every peer on the same embedded etcd in the same run. See
// BENCHMARKS.md for how to run them and what they measured. One file a
// subject:
//
//	bench_propagation_test.go   BenchmarkPropagation   1. Put → change received
//	bench_failover_test.go      BenchmarkFailover      2. graceful failover
//	bench_registration_test.go  BenchmarkRegistration  3. registration
//	bench_reads_test.go         BenchmarkReads         4. reads with 1,000 members
//	bench_scale_test.go         BenchmarkScale         5. big groups: initial sync, heap per member
//	bench_scale_burst_test.go                          5. big groups: bursts of updates
//	bench_scale_leader_test.go                         5. big groups: leader change
//	bench_idle_test.go          BenchmarkFootprint,    6. footprint and load on etcd
//	                            BenchmarkIdleLoad,        at steady state, also
//	                            BenchmarkIdleWatchersBehindGRPCProxy  behind etcd's gRPC proxy
//	bench_term_test.go          BenchmarkTermEnd       7. a term's end after its key is deleted
//	bench_listing_test.go       BenchmarkListing       8. listing against one Get, on etcd 3.4 too
//	bench_fixedcost_test.go     BenchmarkFixedCost     8. heap of an idle instance
//	cmd/biregister              BenchmarkMembers       8. the members command against one Get
//	bench_txn_test.go           BenchmarkTxnCreates    10. a Txn creating members out of name order
//
// Every top-level benchmark starts one quiet single-member etcd in this process
// (internal/devetcd, no proxy between client and server) and closes it at the
// end; those of section 8 also start an etcd process of BIREGISTER_ETCD_BIN,
// when it names one, and measure on both. Latencies are reported as p50/p99 custom metrics in microseconds.
//
// Environment:
//
//	BIREGISTER_BENCH_SIZES=1000,10000  BenchmarkScale at these sizes (default 1000,10000,100000)
//	BIREGISTER_BENCH_1M=1              BenchmarkScale also at 1,000,000 members (opt-in, slow)
//	BIREGISTER_BENCH_IDLE=1            BenchmarkIdleLoad and BenchmarkIdleWatchersBehindGRPCProxy, idle windows (opt-in)
//	BIREGISTER_BENCH_IDLE_WINDOW=20s   its window

package biregister_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/devetcd"
)

const (
	// benchTTL is the ttl (seconds) of every Register, Session and Watcher.
	benchTTL = 5
	// benchWait bounds every wait of the benchmarks: it only turns a hang
	// into a failure.
	benchWait = 60 * time.Second
	// quietGap is how long every timed failover or leader change waits,
	// once everything is in place, before it starts: the same for every peer.
	// An operation that comes after an idle moment takes 2–4× longer on a VM
	// (thread wake-ups) than one right after another, so peers timed after
	// different setups would not compare.
	quietGap = 10 * time.Millisecond
)

var (
	envOnce      sync.Once
	prefixSerial atomic.Int64
)

// startBenchEtcd starts the benchmark's etcd, closed when b ends, and returns
// its client endpoints.
func startBenchEtcd(b *testing.B) []string {
	b.Helper()
	srv, err := devetcd.Start("")
	if err != nil {
		b.Fatalf("start etcd: %v", err)
	}
	b.Cleanup(srv.Close)
	eps := srv.Endpoints()
	envOnce.Do(func() { logEnvironment(b, eps) })
	return eps
}

// logEnvironment prints the machine and the versions the figures belong to.
func logEnvironment(b *testing.B, eps []string) {
	c := benchClient(b, eps)
	ctx, cancel := context.WithTimeout(context.Background(), benchWait)
	defer cancel()
	server := "?"
	if st, err := c.Status(ctx, eps[0]); err == nil {
		server = st.Version
	}
	load, _ := os.ReadFile("/proc/loadavg")
	// Printed, not logged: a parent benchmark's log shows only with -v.
	fmt.Printf("# machine: %d CPUs, GOMAXPROCS %d, %s/%s, %s; etcd server %s (embedded, single member), etcd API/client %s; loadavg %s\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version(),
		server, version.Version, strings.TrimSpace(string(load)))
}

// benchClient returns a new etcd client, closed when b ends.
func benchClient(b *testing.B, eps []string) *clientv3.Client {
	b.Helper()
	c, err := devetcd.NewClient(eps, 5*time.Second)
	if err != nil {
		b.Fatalf("client: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// uniquePrefix returns a group prefix no other run of this process uses.
func uniquePrefix(what string) string {
	return fmt.Sprintf("/bench/%s/%d/", what, prefixSerial.Add(1))
}

func ctxWait() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), benchWait)
}

// awaitCache waits until cond holds on w's cache, waking on w.Updated.
func awaitCache(w biregister.Watcher, cond func() bool) error {
	timeout := time.NewTimer(benchWait)
	defer timeout.Stop()
	for {
		updated := w.Updated()
		if cond() {
			return nil
		}
		select {
		case <-updated:
		case <-timeout.C:
			return errors.New("cache did not reach the expected state in time")
		}
	}
}

// awaitTime receives one timestamp from done, or fails b.
func awaitTime(b *testing.B, done <-chan time.Time, errs <-chan error) time.Time {
	b.Helper()
	select {
	case t := <-done:
		return t
	case err := <-errs:
		b.Fatal(err)
	case <-time.After(benchWait):
		b.Fatal("timed out")
	}
	return time.Time{}
}

// settle waits until etcd has no unsynced watcher (see ETCD-FACTS: a watch
// started at a past revision catches up in 100 ms batches).
func settle(b *testing.B, eps []string, ok func(watchers float64) bool) {
	b.Helper()
	if ok == nil {
		ok = func(float64) bool { return true }
	}
	if err := benchutil.WaitWatchesSettled(eps[0], ok, benchWait); err != nil {
		b.Fatal(err)
	}
}

// probeWatcher proves that w's watch is live: it writes a throw-away member
// and waits until w's cache shows it, then deletes it and waits until it is
// gone.
func probeWatcher(b *testing.B, c *clientv3.Client, w biregister.Watcher, prefix string) {
	b.Helper()
	ctx, cancel := ctxWait()
	defer cancel()
	name := "~probe"
	token := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	if _, err := c.Put(ctx, prefix+name, token); err != nil {
		b.Fatal(err)
	}
	if err := awaitCache(w, func() bool { return w.GetValueByName(name) == token }); err != nil {
		b.Fatalf("probe put: %v", err)
	}
	if _, err := c.Delete(ctx, prefix+name); err != nil {
		b.Fatal(err)
	}
	if err := awaitCache(w, func() bool { return w.GetValueByName(name) == "" }); err != nil {
		b.Fatalf("probe delete: %v", err)
	}
}

// endpointAddr is the address of endpoint i.
func endpointAddr(i int) string {
	return fmt.Sprintf("10.%d.%d.%d:8080", (i>>16)&255, (i>>8)&255, i&255)
}

// openWatch opens a raw watch on prefix and waits until etcd created it.
func openWatch(b *testing.B, c *clientv3.Client, prefix string) (clientv3.WatchChan, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	wch := c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		cancel()
		b.Fatal("watch not created")
	}
	return wch, cancel
}

// watchDelete returns a channel that yields when wch delivers the DELETE of
// key. Only one such reader of wch may run at a time.
func watchDelete(wch clientv3.WatchChan, key string) (<-chan time.Time, <-chan error) {
	done, errs := make(chan time.Time, 1), make(chan error, 1)
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE && string(ev.Kv.Key) == key {
					done <- time.Now()
					return
				}
			}
		}
		errs <- errors.New("watch closed")
	}()
	return done, errs
}

// etcdWatchers returns how many watchers etcd holds now, all streams and
// clients together.
func etcdWatchers(b *testing.B, eps []string) float64 {
	m, err := benchutil.Scrape(eps[0])
	if err != nil {
		b.Fatal(err)
	}
	return m.Sum("etcd_debugging_mvcc_watcher_total")
}

// ms is d in milliseconds, for the metrics that are means in ms.
func ms(d time.Duration) float64 { return benchutil.Micros(d) / 1000 }

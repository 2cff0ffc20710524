// Benchmark 5, scale: the big groups BenchmarkScale runs on (1k to 1M
// members), its sub-benchmarks, and the first two of them: the initial sync
// against one unpaginated Get of the group, and the heap a synced Watcher
// holds per member.
// Bursts are in bench_scale_burst_test.go, leader changes in
// bench_scale_leader_test.go.

package biregister_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// populateWorkers is how many goroutines fill a big group, one Put each at a
// time: enough to keep etcd's write batching busy.
const populateWorkers = 256

// scaleSizes returns the group sizes of BenchmarkScale (see benchutil.Sizes).
func scaleSizes() []int { return benchutil.Sizes(1000, 10000, 100000) }

// scaleValue is member i's value in generation gen: 20–40 bytes.
func scaleValue(i int, gen int) string {
	return fmt.Sprintf("%s gen=%d", endpointAddr(i), gen)
}

// scaleGroup is a big group filled by BenchmarkScale.
type scaleGroup struct {
	prefix string
	names  []string
	keys   []string
	kvSize float64     // mean key+value bytes per member
	twin   *scaleGroup // a group of the same size, made when first needed
}

// newScaleGroup fills a group of n members under prefix, one Put per member,
// as members register: members written by one transaction would share a
// create revision, which no group of Registers ever has.
func newScaleGroup(b *testing.B, writer *clientv3.Client, prefix string, n int) *scaleGroup {
	g := &scaleGroup{prefix: prefix, names: make([]string, n), keys: make([]string, n)}
	var bytes int
	for i := range g.names {
		g.names[i] = fmt.Sprintf("m%07d", i)
		g.keys[i] = g.prefix + g.names[i]
		bytes += len(g.keys[i]) + len(scaleValue(i, 0))
	}
	g.kvSize = float64(bytes) / float64(n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	if err := benchutil.Populate(ctx, writer, g.keys, func(i int) string { return scaleValue(i, 0) }, 1, populateWorkers); err != nil {
		b.Fatalf("populate %s: %v", prefix, err)
	}
	fmt.Printf("# scale: %d members written under %s in %v\n", n, prefix, time.Since(start).Round(time.Millisecond))
	return g
}

// twinOf returns g's twin, filling it on first use.
func twinOf(b *testing.B, writer *clientv3.Client, g *scaleGroup) *scaleGroup {
	if g.twin == nil {
		g.twin = newScaleGroup(b, writer, strings.TrimSuffix(g.prefix, "/")+"-twin/", len(g.keys))
	}
	return g.twin
}

func BenchmarkScale(b *testing.B) {
	eps := startBenchEtcd(b)
	writer := benchClient(b, eps)
	for _, n := range scaleSizes() {
		g := newScaleGroup(b, writer, fmt.Sprintf("/bench/scale/%d/", n), n)
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) { scaleSuite(b, eps, writer, g) })
	}
}

func scaleSuite(b *testing.B, eps []string, writer *clientv3.Client, g *scaleGroup) {
	n := len(g.keys)
	reader := benchClient(b, eps)
	// A watcher's ttl bounds its initial listing; a million members take a while.
	syncTTL := int64(600)

	b.Run("sync/biregister", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			w, err := biregister.NewWatcher(nil, g.prefix, syncTTL, biregister.WithClient(reader))
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if got := len(w.Members()); got != n {
				b.Fatalf("synced %d members, want %d", got, n)
			}
			w.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(time.Millisecond), "ms/sync")
	})
	b.Run("sync/raw-get", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
		defer cancel()
		for i := 0; i < b.N; i++ {
			kvs, err := listRaw(ctx, reader, g.prefix)
			if err != nil {
				b.Fatal(err)
			}
			if len(kvs) != n {
				b.Fatalf("listed %d, want %d", len(kvs), n)
			}
		}
		b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(time.Millisecond), "ms/sync")
	})

	b.Run("sync/interleaved", func(b *testing.B) { syncInterleaved(b, eps, writer, reader, g, syncTTL) })

	b.Run("heap/biregister", func(b *testing.B) {
		// An empty group's Watcher: what a Watcher costs whatever its size
		// (the Changes buffer among it).
		empty := heapOf(b, func() func() {
			w, err := biregister.NewWatcher(nil, uniquePrefix("scale/empty"), benchTTL, biregister.WithClient(reader))
			if err != nil {
				b.Fatal(err)
			}
			return w.Close
		})
		var total float64
		for i := 0; i < b.N; i++ {
			total += heapOf(b, func() func() {
				w, err := biregister.NewWatcher(nil, g.prefix, syncTTL, biregister.WithClient(reader))
				if err != nil {
					b.Fatal(err)
				}
				return w.Close
			})
		}
		heap := total / float64(b.N)
		b.ReportMetric(heap/float64(n), "heap-B/member")
		b.ReportMetric((heap-empty)/float64(n), "marginal-B/member")
		b.ReportMetric(g.kvSize, "kv-B/member")
		b.ReportMetric(2*g.kvSize+100, "target-B/member")
	})
	b.Run("heap/raw-kvs", func(b *testing.B) {
		// For comparison: holding the raw listing as the client decodes it.
		ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
		defer cancel()
		var total float64
		for i := 0; i < b.N; i++ {
			total += heapOf(b, func() func() {
				kvs, err := listRaw(ctx, reader, g.prefix)
				if err != nil {
					b.Fatal(err)
				}
				return func() { runtime.KeepAlive(kvs) }
			})
		}
		b.ReportMetric(total/float64(b.N)/float64(n), "heap-B/member")
		b.ReportMetric(g.kvSize, "kv-B/member")
	})

	b.Run("burst/biregister", func(b *testing.B) { burstBiregister(b, eps, writer, reader, g) })
	b.Run("burst/raw-watch", func(b *testing.B) { burstRawWatch(b, writer, reader, g) })
	b.Run("burst/interleaved", func(b *testing.B) { burstInterleaved(b, eps, writer, reader, g, twinOf(b, writer, g)) })

	b.Run("leader-change/biregister", func(b *testing.B) { leaderChangeBiregister(b, eps, writer, reader, g) })
	b.Run("leader-change/raw-watch", func(b *testing.B) { leaderChangeRawWatch(b, writer, reader, g) })
}

// listRaw lists prefix in one Get, as etcdctl get --prefix does: what a
// listing is measured against (BENCHMARKS.md section 8).
func listRaw(ctx context.Context, c *clientv3.Client, prefix string) ([]*mvccpb.KeyValue, error) {
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	return resp.Kvs, nil
}

// syncInterleaved times one Get and a Watcher's sync turn by
// turn, each first every other time, each after etcd has settled from the
// last: alone, a Watcher's sync shares the machine with etcd ending the
// previous Watcher's watch, and a raw Get with nothing.
func syncInterleaved(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup, ttl int64) {
	ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
	defer cancel()
	var raw, lib benchutil.Latencies
	timeRaw := func() {
		start := time.Now()
		kvs, err := listRaw(ctx, reader, g.prefix)
		raw.Add(time.Since(start))
		if err != nil || len(kvs) != len(g.keys) {
			b.Fatalf("listed %d, want %d (%v)", len(kvs), len(g.keys), err)
		}
	}
	timeWatcher := func() {
		start := time.Now()
		w, err := biregister.NewWatcher(nil, g.prefix, ttl, biregister.WithClient(reader))
		lib.Add(time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if got := len(w.Members()); got != len(g.keys) {
			b.Fatalf("synced %d members, want %d", got, len(g.keys))
		}
		// Closed once its watch is live: the client cancels on the server
		// only the watches whose id it knows.
		probeWatcher(b, writer, w, g.prefix)
		live := etcdWatchers(b, eps)
		w.Close()
		settle(b, eps, func(w float64) bool { return w < live })
	}
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			timeRaw()
			timeWatcher()
		} else {
			timeWatcher()
			timeRaw()
		}
	}
	b.ReportMetric(ms(lib.Mean()), "biregister-ms")
	b.ReportMetric(ms(raw.Mean()), "raw-get-ms")
	b.ReportMetric(float64(lib.Mean())/float64(raw.Mean()), "biregister/raw-x")
}

// heapOf returns how much the live heap grows while what build makes is
// held; build returns the function that releases it.
func heapOf(b *testing.B, build func() (release func())) float64 {
	b.StopTimer()
	before := benchutil.LiveHeap()
	b.StartTimer()
	release := build()
	b.StopTimer()
	after := benchutil.LiveHeap()
	release()
	b.StartTimer()
	return float64(after) - float64(before)
}

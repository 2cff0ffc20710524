// BENCHMARKS.md section 8, listing: the initial listing (NewWatcher until it
// returns) and a re-listing against one unpaginated Get of the whole prefix,
// turn by turn in one run, on the embedded etcd and, with
// BIREGISTER_ETCD_BIN, on that etcd binary too; and the peak heap of an
// initial listing against the heap of the cache it leaves.
//
//	BIREGISTER_ETCD_BIN=/usr/bin/etcd BIREGISTER_BENCH_1M=1 go test -run '^$' -bench BenchmarkListing -benchtime 5x -timeout 60m .
//
// It is in the package itself to time a re-listing alone: list and the
// difference from the cache, as relist does, without a failed watch to
// cause it.

package biregister

import (
	"context"
	"fmt"
	"runtime/metrics"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/benchutil"
)

func BenchmarkListing(b *testing.B) {
	servers := benchutil.Servers(b)
	for _, n := range benchutil.Sizes(1000, 100000) {
		prefix := fmt.Sprintf("/bench/listing/%d/", n)
		for _, srv := range servers {
			benchutil.FillGroup(b, srv.Client, prefix, n)
			b.Run(fmt.Sprintf("server=%s/members=%d/interleaved", srv.Name, n), func(b *testing.B) {
				listingInterleaved(b, srv.Client, prefix, n)
			})
			b.Run(fmt.Sprintf("server=%s/members=%d/peak-heap", srv.Name, n), func(b *testing.B) {
				listingPeakHeap(b, srv.Client, prefix, n)
			})
		}
	}
}

// listingInterleaved times, turn by turn in a rotating order, one Get of
// the whole prefix, an initial listing (NewWatcher until it returns) and a
// re-listing of a synced Watcher (list and the difference from its cache).
func listingInterleaved(b *testing.B, c *clientv3.Client, prefix string, n int) {
	ttl := int64(600) // bounds the listing; a million members take a while
	kept, err := NewWatcher(nil, prefix, ttl, WithClient(c))
	if err != nil {
		b.Fatal(err)
	}
	defer kept.Close()
	w := kept.(*watcher)
	ctx := context.Background()
	var get, initial, relist benchutil.Latencies
	steps := []func(){
		func() {
			start := time.Now()
			resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
			get.Add(time.Since(start))
			if err != nil || len(resp.Kvs) != n {
				b.Fatalf("Get: %d keys, want %d (%v)", len(resp.Kvs), n, err)
			}
		},
		func() {
			start := time.Now()
			fresh, err := NewWatcher(nil, prefix, ttl, WithClient(c))
			initial.Add(time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
			defer fresh.Close()
			if got := fresh.(*watcher).snap.Load().names.size; got != n {
				b.Fatalf("initial listing: %d members, want %d", got, n)
			}
		},
		func() {
			start := time.Now()
			l, err := w.list(ctx)
			if err != nil {
				b.Fatal(err)
			}
			next, changes, _ := w.snap.Load().replace(l.members, l.leaving, l.header.Revision, DefaultBufferSize)
			relist.Add(time.Since(start))
			if next.names.size != n || len(changes) != 0 {
				b.Fatalf("re-listing: %d members and %d changes, want %d and none", next.names.size, len(changes), n)
			}
		},
	}
	// Small groups take milliseconds: more rounds, for figures that hold
	// still.
	rounds := b.N * max(1, 100000/n)
	b.ResetTimer()
	for i := 0; i < rounds; i++ {
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(get.Mean()), "get-ms")
	b.ReportMetric(ms(initial.Mean()), "initial-ms")
	b.ReportMetric(ms(relist.Mean()), "relist-ms")
	b.ReportMetric(float64(initial.Mean())/float64(get.Mean()), "initial/get-x")
	b.ReportMetric(float64(relist.Mean())/float64(get.Mean()), "relist/get-x")
}

// listingPeakHeap samples the heap every millisecond while NewWatcher lists,
// and reports its peak above the heap before, against the live heap the
// synced Watcher holds. "heap" is all the heap's objects, garbage not yet
// collected among them; "live" is what the last collection found in use.
// With the embedded etcd, the server's own work is in this process's heap
// too.
func listingPeakHeap(b *testing.B, c *clientv3.Client, prefix string, n int) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	var peakHeap, peakLive, cache float64
	for i := 0; i < b.N; i++ {
		before := float64(benchutil.LiveHeap())
		metrics.Read(samples)
		maxHeap, maxLive := samples[0].Value.Uint64(), samples[1].Value.Uint64()
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					metrics.Read(samples)
					maxHeap = max(maxHeap, samples[0].Value.Uint64())
					maxLive = max(maxLive, samples[1].Value.Uint64())
				}
			}
		}()
		w, err := NewWatcher(nil, prefix, 600, WithClient(c))
		close(stop)
		<-stopped
		if err != nil {
			b.Fatal(err)
		}
		peakHeap += float64(maxHeap) - before
		peakLive += float64(maxLive) - before
		cache += float64(benchutil.LiveHeap()) - before
		w.Close()
	}
	N := float64(b.N)
	b.ReportMetric(peakHeap/N/(1<<20), "peak-heap-MiB")
	b.ReportMetric(peakLive/N/(1<<20), "peak-live-MiB")
	b.ReportMetric(cache/N/(1<<20), "cache-MiB")
	b.ReportMetric(cache/N/float64(n), "cache-B/member")
	b.ReportMetric(peakHeap/cache, "peak-heap/cache-x")
	b.ReportMetric(peakLive/cache, "peak-live/cache-x")
}

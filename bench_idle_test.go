// Benchmark 6, steady state: what idle Registers, Watchers and
// concurrency.Session + Election cost once settled — goroutines, watches and
// watch streams (BenchmarkFootprint), the messages they send etcd
// (BenchmarkIdleLoad), and what idle Watchers cost behind etcd's gRPC proxy
// (BenchmarkIdleWatchersBehindGRPCProxy).

package biregister_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/etcdtest"
)

// idleInstances is how many instances each footprint or idle measurement
// runs at once, to average over.
const idleInstances = 10

// instances starts idleInstances of one kind and returns what closes them.
type instances func(b *testing.B, c func(i int) *clientv3.Client, prefix string) (closeAll func())

// startAll starts idleInstances instances, instance i with start(i), and
// returns what closes them all.
func startAll[T interface{ Close() }](b *testing.B, start func(i int) (T, error)) func() {
	var all []T
	for i := 0; i < idleInstances; i++ {
		x, err := start(i)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, x)
	}
	return func() {
		for _, x := range all {
			x.Close()
		}
	}
}

func startRegisters(b *testing.B, c func(i int) *clientv3.Client, prefix string) func() {
	return startAll(b, func(i int) (biregister.Register, error) {
		return biregister.NewRegister(nil, prefix, fmt.Sprintf("m%02d", i), endpointAddr(i), benchTTL, biregister.WithClient(c(i)))
	})
}

func startWatchers(b *testing.B, c func(i int) *clientv3.Client, prefix string) func() {
	return startAll(b, func(i int) (biregister.Watcher, error) {
		return biregister.NewWatcher(nil, prefix, benchTTL, biregister.WithClient(c(i)))
	})
}

// startElections starts a Session per instance, each campaigning in one
// election: the first leads, the others wait in Campaign (each with a
// goroutine of the caller's and a watch), as candidates do.
func startElections(b *testing.B, c func(i int) *clientv3.Client, prefix string) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var sessions []*concurrency.Session
	var wg sync.WaitGroup
	for i := 0; i < idleInstances; i++ {
		s, err := concurrency.NewSession(c(i), concurrency.WithTTL(benchTTL))
		if err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, s)
		e := concurrency.NewElection(s, prefix)
		if i == 0 {
			if err := e.Campaign(ctx, endpointAddr(i)); err != nil {
				b.Fatal(err)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = e.Campaign(ctx, endpointAddr(i))
		}()
	}
	return func() {
		cancel()
		wg.Wait()
		for _, s := range sessions {
			s.Close()
		}
	}
}

var kinds = []struct {
	name  string
	start instances
}{
	{"biregister-Register", startRegisters},
	{"concurrency-Session+Election", startElections},
	{"biregister-Watcher", startWatchers},
}

// footprint is what idleInstances instances hold once they settled.
type footprint struct {
	goroutines map[string]int
	watchers   float64
	streams    float64
}

// minGoroutines samples the goroutines a few times and keeps, per origin,
// the fewest seen: short-lived ones (a keepalive in flight) do not count.
func minGoroutines() map[string]int {
	least := benchutil.Goroutines()
	for i := 0; i < 10; i++ {
		time.Sleep(100 * time.Millisecond)
		for k, v := range benchutil.Goroutines() {
			if v < least[k] {
				least[k] = v
			}
		}
	}
	return least
}

func measureFootprint(b *testing.B, eps []string, start instances, c func(i int) *clientv3.Client) footprint {
	time.Sleep(300 * time.Millisecond)
	before := minGoroutines()
	m0, err := benchutil.Scrape(eps[0])
	if err != nil {
		b.Fatal(err)
	}
	closeAll := start(b, c, uniquePrefix("footprint"))
	time.Sleep(time.Second)
	settle(b, eps, nil)
	after := minGoroutines()
	m1, err := benchutil.Scrape(eps[0])
	if err != nil {
		b.Fatal(err)
	}
	closeAll()
	f := footprint{goroutines: map[string]int{}}
	for k, v := range after {
		f.goroutines[k] = v - before[k]
	}
	f.watchers = m1.Sum("etcd_debugging_mvcc_watcher_total") - m0.Sum("etcd_debugging_mvcc_watcher_total")
	f.streams = m1.Sum("etcd_debugging_mvcc_watch_stream_total") - m0.Sum("etcd_debugging_mvcc_watch_stream_total")
	return f
}

// BenchmarkFootprint counts, per instance, the goroutines (N instances on
// one shared client) and the watches and watch streams etcd holds for it
// (on one shared client, where the client multiplexes watches onto one
// stream, and with a client per instance).
func BenchmarkFootprint(b *testing.B) {
	eps := startBenchEtcd(b)
	shared := benchClient(b, eps)
	own := make([]*clientv3.Client, idleInstances)
	for i := range own {
		own[i] = benchClient(b, eps)
	}
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				f := measureFootprint(b, eps, k.start, func(int) *clientv3.Client { return shared })
				g := measureFootprint(b, eps, k.start, func(i int) *clientv3.Client { return own[i] })
				per := func(v float64) float64 { return v / idleInstances }
				b.ReportMetric(per(float64(f.goroutines["biregister"])), "lib-goroutines/inst")
				b.ReportMetric(per(float64(f.goroutines["total"])), "all-goroutines/inst")
				b.ReportMetric(per(float64(f.goroutines["etcd-client"])), "client-goroutines/inst")
				b.ReportMetric(per(float64(f.goroutines["etcd-server"])), "server-goroutines/inst")
				b.ReportMetric(per(f.watchers), "etcd-watchers/inst")
				b.ReportMetric(per(f.streams), "watch-streams/inst-shared-client")
				b.ReportMetric(per(g.streams), "watch-streams/inst-own-client")
			}
		})
	}
}

// BenchmarkIdleLoad counts the gRPC messages etcd receives over an idle
// window (grpc_server_msg_received_total, all methods) per idle instance,
// normalised to one instance and 5 s. That counter counts every receive on
// a stream, the end of the stream included, so a one-message stream counts 2. Opt-in: BIREGISTER_BENCH_IDLE=1; the
// window is BIREGISTER_BENCH_IDLE_WINDOW (default 20s); one op is one window.
func BenchmarkIdleLoad(b *testing.B) {
	if !benchutil.EnvOn("BIREGISTER_BENCH_IDLE") {
		b.Skip("idle windows take long: set BIREGISTER_BENCH_IDLE=1 (window: BIREGISTER_BENCH_IDLE_WINDOW, default 20s)")
	}
	window := benchutil.EnvDuration("BIREGISTER_BENCH_IDLE_WINDOW", 20*time.Second)
	eps := startBenchEtcd(b)
	shared := benchClient(b, eps)
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				closeAll := k.start(b, func(int) *clientv3.Client { return shared }, uniquePrefix("idle"))
				// Let the start-up traffic pass, a Watcher's one new watch
				// after its first progress request included (three probe
				// intervals: see watcher.go, run); from now on they only idle.
				time.Sleep(17 * time.Second)
				m0, err := benchutil.Scrape(eps[0])
				if err != nil {
					b.Fatal(err)
				}
				time.Sleep(window)
				m1, err := benchutil.Scrape(eps[0])
				if err != nil {
					b.Fatal(err)
				}
				closeAll()
				per5s := func(v float64) float64 { return v / idleInstances / (float64(window) / float64(5*time.Second)) }
				byMethod := m1.DeltaBy(m0, "grpc_server_msg_received_total", "grpc_method")
				var total float64
				methods := make([]string, 0, len(byMethod))
				for method, v := range byMethod {
					total += v
					methods = append(methods, method)
				}
				sort.Strings(methods)
				b.ReportMetric(per5s(total), "msgs/inst/5s")
				// RPCs and streams opened: a keepalive sent on a stream of its
				// own costs a stream besides its message (and the metric above
				// counts the end of that stream as one more receive).
				b.ReportMetric(per5s(m1.Sum("grpc_server_started_total")-m0.Sum("grpc_server_started_total")), "rpcs-started/inst/5s")
				for _, method := range methods {
					b.ReportMetric(per5s(byMethod[method]), method+"-msgs/inst/5s")
				}
			}
		})
	}
}

// BenchmarkIdleWatchersBehindGRPCProxy counts what idle Watchers cost etcd
// when they reach it through etcd's gRPC proxy, which answers no progress
// request, beside the same Watchers talking to etcd directly: Range requests
// etcd serves per Watcher per 10 minutes (grpc_server_started_total), and
// messages etcd receives per Watcher per second (grpc_server_msg_received_total,
// all methods). Each Watcher has a client of its own, as separate processes
// would. The servers are etcdtest's, so BIREGISTER_ETCD_BIN=/usr/bin/etcd
// measures an etcd 3.4 server and its own "etcd grpc-proxy start". Opt-in
// with BenchmarkIdleLoad's BIREGISTER_BENCH_IDLE=1; one op is one window of
// BIREGISTER_BENCH_IDLE_WINDOW (a window of more than 10 minutes includes a
// whole quiet interval), after BIREGISTER_BENCH_IDLE_SETTLE (default 40s).
func BenchmarkIdleWatchersBehindGRPCProxy(b *testing.B) {
	if !benchutil.EnvOn("BIREGISTER_BENCH_IDLE") {
		b.Skip("idle windows take long: set BIREGISTER_BENCH_IDLE=1 (window: BIREGISTER_BENCH_IDLE_WINDOW, default 20s)")
	}
	window := benchutil.EnvDuration("BIREGISTER_BENCH_IDLE_WINDOW", 20*time.Second)
	// Longer to leave out what etcd 3.4's proxy adds at first: it sends
	// clients that ping every 10 s away (GOAWAY "too_many_pings") until
	// gRPC's backoff of their pings reaches its 5-minute minimum.
	settle := benchutil.EnvDuration("BIREGISTER_BENCH_IDLE_SETTLE", 40*time.Second)
	etcd := etcdtest.Start(b, 1)
	proxy := etcd.StartGRPCProxy(b)
	for _, topology := range []struct {
		name     string
		endpoint string
	}{
		{"direct", etcd.Endpoint(0)},
		{"grpc-proxy", proxy.DirectEndpoint()},
	} {
		b.Run(topology.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				prefix := uniquePrefix("idle-proxy")
				closeAll := startAll(b, func(int) (biregister.Watcher, error) {
					return biregister.NewWatcher([]string{topology.endpoint}, prefix, benchTTL)
				})
				// A Watcher behind the proxy goes quiet after five probe
				// intervals (two unanswered progress requests, a new watch,
				// which costs a Range at the proxy, and a read: see
				// probe.go); the direct ones have settled by then too.
				time.Sleep(settle)
				m0, err := benchutil.Scrape(etcd.Endpoint(0))
				if err != nil {
					b.Fatal(err)
				}
				time.Sleep(window)
				m1, err := benchutil.Scrape(etcd.Endpoint(0))
				if err != nil {
					b.Fatal(err)
				}
				closeAll()
				perWatcher := func(v float64, per time.Duration) float64 {
					return v / idleInstances / (float64(window) / float64(per))
				}
				started := m1.DeltaBy(m0, "grpc_server_started_total", "grpc_method")
				received := m1.Sum("grpc_server_msg_received_total") - m0.Sum("grpc_server_msg_received_total")
				b.ReportMetric(perWatcher(started["Range"], 10*time.Minute), "ranges/watcher/10min")
				b.ReportMetric(perWatcher(received, time.Second), "msgs/watcher/s")
			}
		})
	}
}

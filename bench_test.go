package biregister_test

// The benchmarks of issue 5: biregister side by side with etcd's own recipes
// (a raw clientv3.Watch, concurrency.Session + Election, naming/endpoints), every
// peer on the same embedded etcd in the same run. See BENCHMARKS.md for how to
// run them and what they measured.
//
// Every top-level benchmark starts one quiet single-member etcd in this process
// (internal/devetcd, no proxy between client and server) and closes it at the
// end. Latencies are reported as p50/p99 custom metrics in microseconds.
//
// Environment:
//
//	BIREGISTER_BENCH_SIZES=1000,10000  BenchmarkScale at these sizes (default 1000,10000,100000)
//	BIREGISTER_BENCH_1M=1              BenchmarkScale also at 1,000,000 members (opt-in, slow)
//	BIREGISTER_BENCH_IDLE=1            BenchmarkIdleLoad, idle windows (opt-in, ~1.5 min)
//	BIREGISTER_BENCH_IDLE_WINDOW=20s   its window

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

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
	// listPage is the page size of the raw paginated Get; the library lists
	// with the same.
	listPage = 1000
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

// ---------------------------------------------------------------------------
// 1. Propagation: Put → change received.

// endpointAddr is the address of endpoint i.
func endpointAddr(i int) string {
	return fmt.Sprintf("10.%d.%d.%d:8080", (i>>16)&255, (i>>8)&255, i&255)
}

// endpointJSON is an endpoint as naming/endpoints stores it, so that all three
// peers can read the very same writes.
func endpointJSON(addr string) string {
	return `{"Op":0,"Addr":"` + addr + `","Metadata":null}`
}

// propKeys is how many members the propagation group has; the writes cycle
// over them.
const propKeys = 8

// propWrite is one write of a propagation benchmark.
type propWrite struct{ key, value, addr string }

// propPeer receives the writes under prefix; await returns once the write has
// come out of it.
type propPeer struct {
	prefix string
	await  func(w propWrite) error
	close  func()
}

func newRawWatchPeer(c *clientv3.Client, prefix string) (*propPeer, error) {
	ctx, cancel := context.WithCancel(context.Background())
	wch := c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		cancel()
		return nil, fmt.Errorf("raw watch not created: %v", resp.Err())
	}
	return &propPeer{
		prefix: prefix,
		close:  cancel,
		await: func(w propWrite) error {
			for resp := range wch {
				for _, ev := range resp.Events {
					if string(ev.Kv.Key) == w.key && string(ev.Kv.Value) == w.value {
						return nil
					}
				}
			}
			return errors.New("raw watch closed")
		},
	}, nil
}

func newBiregisterPeer(c *clientv3.Client, prefix string) (*propPeer, error) {
	w, err := biregister.NewWatcher(nil, prefix, benchTTL, biregister.WithClient(c))
	if err != nil {
		return nil, err
	}
	changes := w.Changes()
	return &propPeer{
		prefix: prefix,
		close:  w.Close,
		await: func(wr propWrite) error {
			name := strings.TrimPrefix(wr.key, prefix)
			for ch := range changes {
				if ch.Op == biregister.OpResync || (ch.Op == biregister.OpPut && ch.Name == name && ch.Value == wr.value) {
					// The change is out; the cache must show it too.
					for w.GetValueByName(name) != wr.value {
						runtime.Gosched()
					}
					return nil
				}
			}
			return errors.New("Changes closed")
		},
	}, nil
}

func newEndpointsPeer(c *clientv3.Client, prefix string) (*propPeer, error) {
	m, err := endpoints.NewManager(c, strings.TrimSuffix(prefix, "/"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	wch, err := m.NewWatchChannel(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	// The group is not empty: the initial list comes first.
	select {
	case <-wch:
	case <-time.After(benchWait):
		cancel()
		return nil, errors.New("no initial endpoint list")
	}
	return &propPeer{
		prefix: prefix,
		close:  cancel,
		await: func(w propWrite) error {
			for ups := range wch {
				for _, u := range ups {
					if u.Op == endpoints.Add && u.Key == w.key && u.Endpoint.Addr == w.addr {
						return nil
					}
				}
			}
			return errors.New("endpoints watch channel closed")
		},
	}, nil
}

type peerMaker func(c *clientv3.Client, prefix string) (*propPeer, error)

// setUpPropPeer fills a new group with propKeys members, starts a peer on it
// with a client of its own, and warms it up until its watch is synced.
func setUpPropPeer(b *testing.B, eps []string, writer *clientv3.Client, what string, mk peerMaker) (*propPeer, func(i int) propWrite) {
	b.Helper()
	prefix := uniquePrefix("propagation/" + what)
	ctx, cancel := ctxWait()
	defer cancel()
	write := func(i int) propWrite {
		addr := endpointAddr(i)
		return propWrite{key: fmt.Sprintf("%sm%d", prefix, i%propKeys), value: endpointJSON(addr), addr: addr}
	}
	for i := 0; i < propKeys; i++ {
		w := write(i)
		if _, err := writer.Put(ctx, w.key, w.value); err != nil {
			b.Fatal(err)
		}
	}
	peer, err := mk(benchClient(b, eps), prefix)
	if err != nil {
		b.Fatalf("%s: %v", what, err)
	}
	b.Cleanup(peer.close)
	// Warm up: the first writes may reach a watch that is still catching up.
	for i := propKeys; i < propKeys+30; i++ {
		w := write(i)
		if _, err := writer.Put(ctx, w.key, w.value); err != nil {
			b.Fatal(err)
		}
		if err := peer.await(w); err != nil {
			b.Fatal(err)
		}
	}
	settle(b, eps, nil)
	return peer, func(i int) propWrite { return write(i + propKeys + 30) }
}

// propagate times one write: from just before the Put to its receipt.
func propagate(b *testing.B, writer *clientv3.Client, peer *propPeer, w propWrite) time.Duration {
	ctx, cancel := ctxWait()
	defer cancel()
	start := time.Now()
	if _, err := writer.Put(ctx, w.key, w.value); err != nil {
		b.Fatal(err)
	}
	if err := peer.await(w); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func BenchmarkPropagation(b *testing.B) {
	eps := startBenchEtcd(b)
	writer := benchClient(b, eps)
	peers := []struct {
		name string
		mk   peerMaker
	}{
		{"raw-watch", newRawWatchPeer},
		{"biregister", newBiregisterPeer},
		{"endpoints", newEndpointsPeer},
	}
	for _, p := range peers {
		b.Run(p.name, func(b *testing.B) {
			peer, write := setUpPropPeer(b, eps, writer, p.name, p.mk)
			var lat benchutil.Latencies
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lat.Add(propagate(b, writer, peer, write(i)))
			}
			b.StopTimer()
			lat.Report(b, "")
		})
	}
	// The three peers live side by side and take turns, write by write, so
	// that whatever else the machine does falls on all of them alike; the
	// ratios to the raw watch come from the same seconds.
	b.Run("interleaved", func(b *testing.B) {
		var live [3]*propPeer
		var writes [3]func(int) propWrite
		for j, p := range peers {
			live[j], writes[j] = setUpPropPeer(b, eps, writer, p.name, p.mk)
		}
		var lat [3]benchutil.Latencies
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			j := i % 3
			lat[j].Add(propagate(b, writer, live[j], writes[j](i/3)))
		}
		b.StopTimer()
		raw := lat[0].Quantile(0.5)
		for j, p := range peers {
			lat[j].Report(b, p.name)
			if j > 0 && raw > 0 {
				b.ReportMetric(float64(lat[j].Quantile(0.5))/float64(raw), p.name+"/raw-p50-x")
			}
		}
	})
}

// ---------------------------------------------------------------------------
// 2. Graceful failover.

// failoverPeer is one way of handing leadership over, set up once and
// stepped through failovers: prepare readies the next failover (untimed) and
// returns it.
type failoverPeer struct {
	name    string
	prepare func(b *testing.B) *failoverStep
	close   func()
}

// failoverStep is one prepared failover: trigger is what is timed from (the
// leader leaving), done yields when the successor knows it leads.
type failoverStep struct {
	trigger func() error
	done    <-chan time.Time
	errs    <-chan error
	// deleted, if not nil, yields when a raw watch saw the old leader's key
	// deleted: it splits the failover into the leaving and the learning.
	deleted <-chan time.Time
	// after runs once the failover is complete (untimed).
	after func()
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

// newFloorPeer: a lease revoked → a raw watch sees its key's DELETE.
func newFloorPeer(b *testing.B, clients [2]*clientv3.Client, other *clientv3.Client) *failoverPeer {
	prefix := uniquePrefix("failover/raw")
	wch, cancelWatch := openWatch(b, other, prefix)
	serial := 0
	return &failoverPeer{
		name:  "raw-revoke-watch",
		close: cancelWatch,
		prepare: func(b *testing.B) *failoverStep {
			ctx, cancel := ctxWait()
			defer cancel()
			c := clients[serial%2]
			key := fmt.Sprintf("%sm%06d", prefix, serial)
			serial++
			lease, err := c.Grant(ctx, benchTTL)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Put(ctx, key, "v", clientv3.WithLease(lease.ID)); err != nil {
				b.Fatal(err)
			}
			done, errs := watchDelete(wch, key)
			return &failoverStep{
				trigger: func() error {
					ctx, cancel := ctxWait()
					defer cancel()
					_, err := c.Revoke(ctx, lease.ID)
					return err
				},
				done: done,
				errs: errs,
			}
		},
	}
}

// newBiregisterFailoverPeer: the leader's Close() → the next member leads. The next
// member learns it by polling AmILeader (poll) or from WaitLeader.
func newBiregisterFailoverPeer(b *testing.B, eps []string, clients [2]*clientv3.Client, other *clientv3.Client, poll bool) *failoverPeer {
	prefix := uniquePrefix("failover/biregister")
	serial := 0
	newMember := func() biregister.Register {
		r, err := biregister.NewRegister(nil, prefix, fmt.Sprintf("m%06d", serial), "v", benchTTL, biregister.WithClient(clients[serial%2]))
		if err != nil {
			b.Fatal(err)
		}
		serial++
		return r
	}
	ctx, cancel := context.WithCancel(context.Background())
	leader := newMember()
	wctx, waitCancel := ctxWait()
	defer waitCancel()
	if err := leader.WaitLeader(wctx); err != nil {
		b.Fatal(err)
	}
	// A raw watch on the group tells when etcd deleted the old leader's key.
	wch, cancelWatch := openWatch(b, other, prefix)
	name := "biregister-WaitLeader"
	if poll {
		name = "biregister-AmILeader-poll"
	}
	return &failoverPeer{
		name: name,
		close: func() {
			cancel()
			cancelWatch()
			leader.Close()
		},
		prepare: func(b *testing.B) *failoverStep {
			next := newMember()
			probeWatcher(b, other, next, prefix)
			settle(b, eps, nil)
			if next.AmILeader() || !leader.AmILeader() {
				b.Fatal("wrong leader before the failover")
			}
			done, errs := make(chan time.Time, 1), make(chan error, 1)
			started := make(chan struct{})
			if poll {
				go func() {
					close(started)
					for !next.AmILeader() {
						if ctx.Err() != nil {
							errs <- ctx.Err()
							return
						}
						// Not a bare spin: on 2 cores a spinning reader takes
						// a core from etcd and the library.
						time.Sleep(10 * time.Microsecond)
					}
					done <- time.Now()
				}()
			} else {
				go func() {
					close(started)
					if err := next.WaitLeader(ctx); err != nil {
						errs <- err
						return
					}
					done <- time.Now()
				}()
			}
			<-started
			deleted, _ := watchDelete(wch, leader.MyKey())
			old := leader
			return &failoverStep{
				trigger: func() error { old.Close(); return nil },
				done:    done,
				errs:    errs,
				deleted: deleted,
				after:   func() { leader = next },
			}
		},
	}
}

// newElectionPeer: the leader's Session.Close() → the next candidate's
// Campaign returns.
func newElectionPeer(b *testing.B, eps []string, clients [2]*clientv3.Client) *failoverPeer {
	prefix := uniquePrefix("failover/election")
	ctx, cancel := context.WithCancel(context.Background())
	serial := 0
	newSession := func() (*concurrency.Session, *concurrency.Election) {
		s, err := concurrency.NewSession(clients[serial%2], concurrency.WithTTL(benchTTL))
		if err != nil {
			b.Fatal(err)
		}
		serial++
		return s, concurrency.NewElection(s, prefix)
	}
	leader, election := newSession()
	if err := election.Campaign(ctx, "v"); err != nil {
		b.Fatal(err)
	}
	watchers := func() float64 {
		m, err := benchutil.Scrape(eps[0])
		if err != nil {
			b.Fatal(err)
		}
		return m.Sum("etcd_debugging_mvcc_watcher_total")
	}
	return &failoverPeer{
		name: "concurrency-Election",
		close: func() {
			cancel()
			leader.Close()
		},
		prepare: func(b *testing.B) *failoverStep {
			// The candidate's watch on the leader's key must be in place and
			// synced (it starts at a past revision) before the leader
			// leaves. It cannot be seen from here: wait until etcd holds
			// one watcher more than before and none is unsynced. (Should a
			// watcher of someone else's end meanwhile, give up counting
			// after 500 ms and rely on 250 ms — over two of etcd's 100 ms
			// catch-up rounds — and no unsynced watcher.)
			settle(b, eps, nil)
			before := watchers()
			next, nextElection := newSession()
			done, errs := make(chan time.Time, 1), make(chan error, 1)
			go func() {
				if err := nextElection.Campaign(ctx, "v"); err != nil {
					errs <- err
					return
				}
				done <- time.Now()
			}()
			started := time.Now()
			if err := benchutil.WaitWatchesSettled(eps[0], func(w float64) bool { return w >= before+1 }, 500*time.Millisecond); err != nil {
				time.Sleep(250*time.Millisecond - time.Since(started))
				settle(b, eps, nil)
			}
			old := leader
			return &failoverStep{
				trigger: old.Close,
				done:    done,
				errs:    errs,
				after:   func() { leader = next },
			}
		},
	}
}

// failoverStats are one peer's failover latencies.
type failoverStats struct{ lat, deleted benchutil.Latencies }

// timeFailover prepares one failover of p and times it; the timer runs only
// from the trigger to the successor knowing.
func timeFailover(b *testing.B, p *failoverPeer, st *failoverStats) {
	step := p.prepare(b)
	time.Sleep(quietGap)
	b.StartTimer()
	start := time.Now()
	if err := step.trigger(); err != nil {
		b.Fatal(err)
	}
	end := awaitTime(b, step.done, step.errs)
	b.StopTimer()
	st.lat.Add(end.Sub(start))
	if step.deleted != nil {
		st.deleted.Add(awaitTime(b, step.deleted, nil).Sub(start))
	}
	if step.after != nil {
		step.after()
	}
}

func BenchmarkFailover(b *testing.B) {
	eps := startBenchEtcd(b)
	// Members alternate between two clients, as two processes would; the
	// raw watches and the probes have their own.
	clients := [2]*clientv3.Client{benchClient(b, eps), benchClient(b, eps)}
	other := benchClient(b, eps)
	peers := []struct {
		name string
		mk   func(b *testing.B) *failoverPeer
	}{
		{"raw-revoke-watch", func(b *testing.B) *failoverPeer { return newFloorPeer(b, clients, other) }},
		{"biregister-WaitLeader", func(b *testing.B) *failoverPeer { return newBiregisterFailoverPeer(b, eps, clients, other, false) }},
		{"biregister-AmILeader-poll", func(b *testing.B) *failoverPeer { return newBiregisterFailoverPeer(b, eps, clients, other, true) }},
		{"concurrency-Election", func(b *testing.B) *failoverPeer { return newElectionPeer(b, eps, clients) }},
	}
	for _, peer := range peers {
		b.Run(peer.name, func(b *testing.B) {
			p := peer.mk(b)
			defer p.close()
			var st failoverStats
			b.ResetTimer()
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				timeFailover(b, p, &st)
			}
			st.lat.Report(b, "")
			st.deleted.Report(b, "raw-delete-seen")
		})
	}
	// The four take turns, failover by failover, so that whatever else the
	// machine does falls on all of them alike: separate runs of the floor
	// drift by ±40 % on this VM.
	b.Run("interleaved", func(b *testing.B) {
		var live []*failoverPeer
		for _, peer := range peers {
			p := peer.mk(b)
			defer p.close()
			live = append(live, p)
		}
		st := make([]failoverStats, len(live))
		b.ResetTimer()
		b.StopTimer()
		for i := 0; i < b.N; i++ {
			j := i % len(live)
			timeFailover(b, live[j], &st[j])
		}
		floor := st[0].lat.Quantile(0.5)
		for j, p := range live {
			st[j].lat.Report(b, p.name)
			st[j].deleted.Report(b, p.name+"-raw-delete-seen")
			if j > 0 && floor > 0 && st[j].lat.Len() > 0 {
				b.ReportMetric(float64(st[j].lat.Quantile(0.5))/float64(floor), p.name+"/floor-p50-x")
			}
		}
	})
}

// ---------------------------------------------------------------------------
// 3. Registration.

func BenchmarkRegistration(b *testing.B) {
	eps := startBenchEtcd(b)
	shared := benchClient(b, eps)
	writer := benchClient(b, eps)

	register := func(b *testing.B, prefix string, opts ...biregister.Option) {
		var lat benchutil.Latencies
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			r, err := biregister.NewRegister(eps, prefix, fmt.Sprintf("new%06d", i), "10.0.0.1:8080", benchTTL, opts...)
			if err != nil {
				b.Fatal(err)
			}
			lat.Add(time.Since(start))
			b.StopTimer()
			r.Close()
			b.StartTimer()
		}
		b.StopTimer()
		lat.Report(b, "")
	}
	b.Run("biregister-NewRegister-shared-client", func(b *testing.B) {
		register(b, uniquePrefix("registration/shared"), biregister.WithClient(shared))
	})
	b.Run("biregister-NewRegister-own-client", func(b *testing.B) {
		register(b, uniquePrefix("registration/own"))
	})
	// Joining a group that already has 1,000 members: NewRegister lists them.
	b.Run("biregister-NewRegister-shared-client-into-1000", func(b *testing.B) {
		prefix := uniquePrefix("registration/big")
		ctx, cancel := ctxWait()
		defer cancel()
		keys := make([]string, 1000)
		for i := range keys {
			keys[i] = fmt.Sprintf("%sm%06d", prefix, i)
		}
		if err := benchutil.Populate(ctx, writer, keys, func(i int) string { return endpointAddr(i) }, 128, 4); err != nil {
			b.Fatal(err)
		}
		register(b, prefix, biregister.WithClient(shared))
	})
	b.Run("concurrency-NewSession+Campaign", func(b *testing.B) {
		prefix := uniquePrefix("registration/election")
		ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
		defer cancel()
		var lat benchutil.Latencies
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			s, err := concurrency.NewSession(shared, concurrency.WithTTL(benchTTL))
			if err != nil {
				b.Fatal(err)
			}
			if err := concurrency.NewElection(s, prefix).Campaign(ctx, "10.0.0.1:8080"); err != nil {
				b.Fatal(err)
			}
			lat.Add(time.Since(start))
			b.StopTimer()
			s.Close()
			b.StartTimer()
		}
		b.StopTimer()
		lat.Report(b, "")
	})
}

// ---------------------------------------------------------------------------
// 4. Reads with 1,000 members.

var (
	sinkString  string
	sinkBool    bool
	sinkStrings []string
	sinkMap     map[string]string
	sinkMembers []biregister.Member
)

func BenchmarkReads(b *testing.B) {
	const members = 1000
	eps := startBenchEtcd(b)
	writer := benchClient(b, eps)
	prefix := uniquePrefix("reads")
	ctx, cancel := ctxWait()
	defer cancel()
	// The Register comes first: it is the oldest member, the leader.
	reg, err := biregister.NewRegister(nil, prefix, "leader", endpointAddr(0), benchTTL, biregister.WithClient(benchClient(b, eps)))
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	keys := make([]string, members-1)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sm%06d", prefix, i+1)
	}
	if err := benchutil.Populate(ctx, writer, keys, func(i int) string { return endpointAddr(i + 1) }, 128, 4); err != nil {
		b.Fatal(err)
	}
	w, err := biregister.NewWatcher(nil, prefix, benchTTL, biregister.WithClient(benchClient(b, eps)))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	for _, x := range []biregister.Watcher{w, reg} {
		if err := awaitCache(x, func() bool { return len(x.Members()) == members }); err != nil {
			b.Fatal(err)
		}
	}
	if err := reg.WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	names := w.GetNames()

	b.Run("GetValueByName", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkString = w.GetValueByName(names[i%members])
		}
	})
	b.Run("GetLeader", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkString, _ = w.GetLeader()
		}
	})
	b.Run("AmILeader", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkBool = reg.AmILeader()
		}
	})
	b.Run("GetNames", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkStrings = w.GetNames()
		}
	})
	b.Run("GetValues", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkStrings = w.GetValues()
		}
	})
	b.Run("GetAll", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkMap = w.GetAll()
		}
	})
	b.Run("Members", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkMembers = w.Members()
		}
	})
	// Parallel readers: with -cpu 1,2 the ns/op shows whether they scale.
	b.Run("GetValueByName-parallel", func(b *testing.B) {
		b.ReportAllocs()
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			var s string
			for pb.Next() {
				s = w.GetValueByName(names[i%members])
				i++
			}
			runtime.KeepAlive(s)
		})
	})
	b.Run("GetLeader-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var s string
			for pb.Next() {
				s, _ = w.GetLeader()
			}
			runtime.KeepAlive(s)
		})
	})
	b.Run("AmILeader-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var ok bool
			for pb.Next() {
				ok = reg.AmILeader()
			}
			runtime.KeepAlive(ok)
		})
	})
	if !reg.AmILeader() || len(w.Members()) != members {
		b.Fatal("the group changed during the reads")
	}
}

// ---------------------------------------------------------------------------
// 5. Scale.

// burstSize is how many updates one burst makes.
const burstSize = 20000

// burstWriters is how many goroutines send a burst.
const burstWriters = 4

// populateWorkers is how many goroutines fill a big group, one Put each at a
// time: enough to keep etcd's write batching busy.
const populateWorkers = 256

// scaleSizes returns the group sizes of BenchmarkScale: 1k, 10k and 100k, or
// the comma-separated list in BIREGISTER_BENCH_SIZES; BIREGISTER_BENCH_1M=1
// adds a million.
func scaleSizes() []int {
	sizes := []int{1000, 10000, 100000}
	if env := os.Getenv("BIREGISTER_BENCH_SIZES"); env != "" {
		sizes = sizes[:0]
		for _, f := range strings.Split(env, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n >= 2 {
				sizes = append(sizes, n)
			}
		}
	}
	if benchutil.EnvOn("BIREGISTER_BENCH_1M") && !slices.Contains(sizes, 1000000) {
		sizes = append(sizes, 1000000)
	}
	return sizes
}

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

// listRaw lists prefix as the library does: pages of listPage keys, every
// page at the first page's revision.
func listRaw(ctx context.Context, c *clientv3.Client, prefix string) ([]*mvccpb.KeyValue, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	var rev int64
	var kvs []*mvccpb.KeyValue
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := c.Get(ctx, key, opts...)
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		kvs = append(kvs, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return kvs, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// heapOf returns how much the live heap grows while what build makes is
// held; build returns the function that releases it.
func heapOf(b *testing.B, build func() (release func())) float64 {
	b.StopTimer()
	before := liveHeap()
	b.StartTimer()
	release := build()
	b.StopTimer()
	after := liveHeap()
	release()
	b.StartTimer()
	return float64(after) - float64(before)
}

func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// burst is one burst of burstSize updates of a group's members, made by
// burstWriters goroutines in transactions of 128 puts. Writer k owns the
// members whose index is k modulo burstWriters, so the last value of every
// member is known in advance.
type burst struct {
	perWriter [][]clientv3.Op // the puts of each writer, in order
	final     []burstFinal    // the last value of every member updated
}

type burstFinal struct{ name, value string }

var burstGen atomic.Int64

func newBurst(g *scaleGroup) *burst {
	n := len(g.keys)
	gen := int(burstGen.Add(1))
	bu := &burst{perWriter: make([][]clientv3.Op, burstWriters)}
	last := make(map[int]string, min(n, burstSize))
	for u := 0; u < burstSize; u++ {
		k := u % n
		v := scaleValue(k, gen*1000+u/n)
		bu.perWriter[k%burstWriters] = append(bu.perWriter[k%burstWriters], clientv3.OpPut(g.keys[k], v))
		last[k] = v
	}
	for k := 0; k < min(n, burstSize); k++ {
		bu.final = append(bu.final, burstFinal{name: g.names[k], value: last[k]})
	}
	return bu
}

// run sends the burst and returns when the last write was acknowledged.
func (bu *burst) run(c *clientv3.Client) (time.Time, error) {
	ctx, cancel := ctxWait()
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, burstWriters)
	for _, ops := range bu.perWriter {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(ops) > 0 {
				chunk := ops[:min(128, len(ops))]
				ops = ops[len(chunk):]
				if _, err := c.Txn(ctx).Then(chunk...).Commit(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return time.Now(), <-errs
}

// currentRevision returns etcd's current revision.
func currentRevision(b *testing.B, c *clientv3.Client) int64 {
	ctx, cancel := ctxWait()
	defer cancel()
	resp, err := c.Get(ctx, "/bench/revision")
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// syncInterleaved times a raw paginated Get and a Watcher's sync turn by
// turn, each first every other time, each after etcd has settled from the
// last: alone, a Watcher's sync shares the machine with etcd ending the
// previous Watcher's watch, and a raw Get with nothing.
func syncInterleaved(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup, ttl int64) {
	watchers := func() float64 {
		m, err := benchutil.Scrape(eps[0])
		if err != nil {
			b.Fatal(err)
		}
		return m.Sum("etcd_debugging_mvcc_watcher_total")
	}
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
		live := watchers()
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

// burstSide receives the bursts of one group: a biregister Watcher or a raw
// watch, set up and synced beforehand.
type burstSide struct {
	g *scaleGroup
	// arm starts waiting for the burst bu, whose writes all come after
	// revision after; the channel yields when all of it has been received.
	arm   func(bu *burst, after int64) <-chan burstDone
	close func()
}

type burstDone struct {
	at        time.Time // biregister: the burst's last change out of Changes, the cache updated; raw: every event received
	changesAt time.Time // biregister: the burst's last change out of Changes
	err       error
}

func newBiregisterBurstSide(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup) *burstSide {
	w, err := biregister.NewWatcher(nil, g.prefix, 600, biregister.WithClient(reader))
	if err != nil {
		b.Fatal(err)
	}
	// The consumer of Changes, which counts the burst's changes; armed per
	// burst with the revision the burst comes after.
	type arm struct {
		after int64
		done  chan time.Time
	}
	arms := make(chan arm)
	var resyncs atomic.Int64
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		var cur arm
		count := 0
		changes := w.Changes()
		for {
			select {
			case a := <-arms:
				cur, count = a, 0
			case c, ok := <-changes:
				if !ok {
					return
				}
				if c.Op == biregister.OpResync {
					resyncs.Add(1)
					continue
				}
				if cur.done != nil && c.Revision > cur.after {
					if count++; count == burstSize {
						cur.done <- time.Now()
					}
				}
			}
		}
	}()
	probeWatcher(b, writer, w, g.prefix)
	settle(b, eps, nil)
	return &burstSide{
		g: g,
		close: func() {
			w.Close()
			<-consumerDone
		},
		arm: func(bu *burst, after int64) <-chan burstDone {
			changesDone := make(chan time.Time, 1)
			arms <- arm{after: after, done: changesDone}
			done := make(chan burstDone, 1)
			go func() {
				// Done when the burst's last change comes out of Changes, the
				// consumer counting changes as the raw side counts events:
				// the cache is updated before a change is delivered. (Polling
				// the cache as well would charge this side a second reader.)
				var changesAt time.Time
				select {
				case changesAt = <-changesDone:
				case <-time.After(benchWait):
					done <- burstDone{err: fmt.Errorf("the burst's %d changes did not all come out of Changes (%d RESYNCs)", burstSize, resyncs.Load())}
					return
				}
				for _, m := range bu.final {
					if got := w.GetValueByName(m.name); got != m.value {
						done <- burstDone{err: fmt.Errorf("after the burst %s = %q, want %q", m.name, got, m.value)}
						return
					}
				}
				done <- burstDone{at: changesAt, changesAt: changesAt}
			}()
			return done
		},
	}
}

func newRawBurstSide(b *testing.B, reader *clientv3.Client, g *scaleGroup) *burstSide {
	ctx, cancel := context.WithCancel(context.Background())
	wch := reader.Watch(ctx, g.prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		cancel()
		b.Fatal("watch not created")
	}
	return &burstSide{
		g:     g,
		close: cancel,
		arm: func(_ *burst, after int64) <-chan burstDone {
			done := make(chan burstDone, 1)
			go func() {
				count := 0
				for resp := range wch {
					for _, ev := range resp.Events {
						if ev.Kv.ModRevision > after {
							count++
						}
					}
					if count == burstSize {
						done <- burstDone{at: time.Now()}
						return
					}
				}
				done <- burstDone{err: errors.New("watch closed")}
			}()
			return done
		},
	}
}

// burstStats are the timings of one side's bursts, each from just before
// the first put.
type burstStats struct {
	all, changes, tail benchutil.Latencies
}

// timeBurst sends one burst to side's group and records how long it took
// to come out of side. The timer runs only while the burst is under way.
func timeBurst(b *testing.B, writer *clientv3.Client, side *burstSide, st *burstStats) {
	bu := newBurst(side.g)
	done := side.arm(bu, currentRevision(b, writer))
	b.StartTimer()
	start := time.Now()
	acked, err := bu.run(writer)
	if err != nil {
		b.Fatal(err)
	}
	var d burstDone
	select {
	case d = <-done:
	case <-time.After(benchWait):
		b.Fatal("burst not received in time")
	}
	b.StopTimer()
	if d.err != nil {
		b.Fatal(d.err)
	}
	st.all.Add(d.at.Sub(start))
	st.tail.Add(d.at.Sub(acked))
	if !d.changesAt.IsZero() {
		st.changes.Add(d.changesAt.Sub(start))
	}
}

func ms(d time.Duration) float64 { return benchutil.Micros(d) / 1000 }

func burstBiregister(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup) {
	side := newBiregisterBurstSide(b, eps, writer, reader, g)
	defer side.close()
	var st burstStats
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		timeBurst(b, writer, side, &st)
	}
	b.ReportMetric(ms(st.all.Mean()), "cache-ms")
	b.ReportMetric(ms(st.changes.Mean()), "changes-ms")
	b.ReportMetric(ms(st.tail.Mean()), "tail-ms")
}

func burstRawWatch(b *testing.B, writer, reader *clientv3.Client, g *scaleGroup) {
	side := newRawBurstSide(b, reader, g)
	defer side.close()
	var st burstStats
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		timeBurst(b, writer, side, &st)
	}
	b.ReportMetric(ms(st.all.Mean()), "events-ms")
	b.ReportMetric(ms(st.tail.Mean()), "tail-ms")
}

// burstInterleaved takes turns, burst by burst, between a biregister Watcher
// of g and a raw watch of g's twin (a group of the same size), both set up
// for the whole run, so that whatever else the machine does falls on both
// alike.
func burstInterleaved(b *testing.B, eps []string, writer, reader *clientv3.Client, g, twin *scaleGroup) {
	sides := [2]*burstSide{newBiregisterBurstSide(b, eps, writer, reader, g), newRawBurstSide(b, reader, twin)}
	defer sides[0].close()
	defer sides[1].close()
	var st [2]burstStats
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		j := i % 2
		timeBurst(b, writer, sides[j], &st[j])
	}
	b.ReportMetric(ms(st[0].all.Mean()), "biregister-cache-ms")
	b.ReportMetric(ms(st[0].changes.Mean()), "biregister-changes-ms")
	b.ReportMetric(ms(st[1].all.Mean()), "raw-events-ms")
	if st[0].all.Len() > 0 && st[1].all.Len() > 0 {
		b.ReportMetric(float64(st[0].all.Mean())/float64(st[1].all.Mean()), "biregister/raw-x")
	}
}

// leaderChange times "the oldest member deleted → the cache shows the next
// one as leader"; between two such changes, the deleted member is written
// again, at the back of the queue.
func leaderChangeBiregister(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup) {
	w, err := biregister.NewWatcher(nil, g.prefix, 600, biregister.WithClient(reader))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	go func() {
		for range w.Changes() {
		}
	}()
	probeWatcher(b, writer, w, g.prefix)
	settle(b, eps, nil)
	ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
	defer cancel()
	var lat benchutil.Latencies
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		// The change is done once the cache names a leader other than the
		// deleted one; the check below makes sure it is the oldest left.
		old, _ := w.GetLeader()
		want := w.GetNames()[1]
		done, errs := make(chan time.Time, 1), make(chan error, 1)
		go func() {
			if err := awaitCache(w, func() bool { l, _ := w.GetLeader(); return l != old && l != "" }); err != nil {
				errs <- err
				return
			}
			done <- time.Now()
		}()
		time.Sleep(quietGap)
		b.StartTimer()
		start := time.Now()
		resp, err := writer.Delete(ctx, g.prefix+old)
		if err != nil {
			b.Fatal(err)
		}
		end := awaitTime(b, done, errs)
		b.StopTimer()
		if resp.Deleted != 1 {
			b.Fatalf("leader %q was not in etcd", old)
		}
		lat.Add(end.Sub(start))
		if l, _ := w.GetLeader(); l != want || len(w.GetNames()) != len(g.keys)-1 {
			b.Fatalf("after deleting %q: leader %q (want %q), %d members (want %d)", old, l, want, len(w.GetNames()), len(g.keys)-1)
		}
		// Back at the end of the queue.
		v := fmt.Sprintf("back %d", time.Now().UnixNano())
		if _, err := writer.Put(ctx, g.prefix+old, v); err != nil {
			b.Fatal(err)
		}
		if err := awaitCache(w, func() bool { return w.GetValueByName(old) == v }); err != nil {
			b.Fatal(err)
		}
	}
	lat.Report(b, "")
}

func leaderChangeRawWatch(b *testing.B, writer, reader *clientv3.Client, g *scaleGroup) {
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	wch := reader.Watch(wctx, g.prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		b.Fatal("watch not created")
	}
	ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
	defer cancel()
	// The raw watch does not know the order; any member will do as "the
	// oldest": the event etcd sends for its DELETE is the same.
	var lat benchutil.Latencies
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		key := g.keys[i%len(g.keys)]
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
		time.Sleep(quietGap)
		b.StartTimer()
		start := time.Now()
		resp, err := writer.Delete(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		end := awaitTime(b, done, errs)
		b.StopTimer()
		if resp.Deleted != 1 {
			b.Fatalf("%q was not in etcd", key)
		}
		lat.Add(end.Sub(start))
		if _, err := writer.Put(ctx, key, fmt.Sprintf("back %d", i)); err != nil {
			b.Fatal(err)
		}
	}
	lat.Report(b, "")
}

// ---------------------------------------------------------------------------
// 6. Footprint and load on etcd at steady state.

// idleInstances is how many instances each footprint or idle measurement
// runs at once, to average over.
const idleInstances = 10

// instances starts idleInstances of one kind and returns what closes them.
type instances func(b *testing.B, c func(i int) *clientv3.Client, prefix string) (closeAll func())

func startRegisters(b *testing.B, c func(i int) *clientv3.Client, prefix string) func() {
	var rs []biregister.Register
	for i := 0; i < idleInstances; i++ {
		r, err := biregister.NewRegister(nil, prefix, fmt.Sprintf("m%02d", i), endpointAddr(i), benchTTL, biregister.WithClient(c(i)))
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	return func() {
		for _, r := range rs {
			r.Close()
		}
	}
}

func startWatchers(b *testing.B, c func(i int) *clientv3.Client, prefix string) func() {
	var ws []biregister.Watcher
	for i := 0; i < idleInstances; i++ {
		w, err := biregister.NewWatcher(nil, prefix, benchTTL, biregister.WithClient(c(i)))
		if err != nil {
			b.Fatal(err)
		}
		ws = append(ws, w)
	}
	return func() {
		for _, w := range ws {
			w.Close()
		}
	}
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

package biregister

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/metertest"
	"github.com/biregister/biregister/internal/syncbuf"
)

// waitFor bounds the waits of these tests: it only turns a hang into a failure.
const waitFor = 15 * time.Second

// testProbeInterval is short enough for a test, and long enough for etcd to
// sync a new watch (it catches up every 100 ms) before the first probe.
const testProbeInterval = 500 * time.Millisecond

// testQuietInterval stands for the 10 minutes between the checks of a quiet
// Watcher.
const testQuietInterval = 2 * time.Second

func withProbeInterval(d time.Duration) Option {
	return func(cfg *config) { cfg.probe = probeTimes{interval: d, quiet: testQuietInterval} }
}

// An idle Watcher on an idle store checks its stream with progress requests
// that etcd answers: no reads.
func TestIdleWatcherProbesWithoutReads(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	if _, err := etcd.Client(t).Put(context.Background(), "/probe/a", "v"); err != nil {
		t.Fatal(err)
	}
	received := func() map[string]float64 {
		m, err := benchutil.Scrape(etcd.Endpoint(0))
		if err != nil {
			t.Fatal(err)
		}
		return m.DeltaBy(benchutil.Metrics{}, "grpc_server_msg_received_total", "grpc_method")
	}
	before := received()
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := NewWatcher(etcd.Endpoints(), "/probe", 5, withProbeInterval(testProbeInterval), WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The first watch starts after the store's revision, where etcd defers
	// progress answers: one request, then a new watch from the cache's
	// revision (a cancel, a creation), then the requests it answers.
	deadline := time.Now().Add(40 * testProbeInterval)
	for {
		after := received()
		if after["Watch"]-before["Watch"] >= 8 {
			if reads := after["Range"] - before["Range"]; reads != 1 {
				t.Fatalf("%v reads, want only the listing", reads)
			}
			// Once at most: etcd 3.4 answers even the first watch.
			if again := strings.Count(logs.String(), "watching again"); again > 1 {
				t.Fatalf("watched again %d times, want once at most; logs:\n%s", again, logs.String())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %v Watch messages", after["Watch"]-before["Watch"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := w.GetValueByName("a"); got != "v" {
		t.Fatalf("GetValueByName(a) = %q", got)
	}
}

// An idle Watcher whose stream stalls silently notices it, and catches up
// once the network heals.
func TestIdleWatcherStallNoticed(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := metertest.New(t)
	w, err := NewWatcher([]string{proxy.Endpoint()}, "/stall", 1, withProbeInterval(testProbeInterval), WithLogger(logger), WithMeterProvider(m.Provider))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cli := etcd.Client(t)
	put := func(name string) {
		t.Helper()
		if _, err := cli.Put(context.Background(), "/stall/"+name, "v"); err != nil {
			t.Fatal(err)
		}
	}
	put("a")
	waitUntil(t, waitFor, func() bool { return w.GetValueByName("a") == "v" })

	proxy.Stall()
	put("b")
	waitUntil(t, 20*testProbeInterval, func() bool { return strings.Contains(logs.String(), "watch stalled") })
	proxy.Heal()
	waitUntil(t, waitFor, func() bool { return w.GetValueByName("b") == "v" })
	if n := m.Value(t, "biregister.listings", attrCause.String(causeStalled.String())); n < 1 {
		t.Fatalf("%d listings for a stalled stream", n)
	}
}

// A watch whose stream stalls before etcd created it is given up after the
// Watcher's ttl, like any other request, instead of being waited on forever.
func TestWatchCreationStalled(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	var logs syncbuf.Buffer
	cfg, prefix, err := newConfig([]string{proxy.Endpoint()}, "/stall", 1, []Option{
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	})
	if err != nil {
		t.Fatal(err)
	}
	client, releaseClient, err := cfg.newClient([]string{proxy.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	defer releaseClient()
	resp, err := client.Get(context.Background(), prefix) // connected
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher(client, releaseClient, prefix, cfg)
	w.snap.Store(emptySnapshot(resp.Header.Revision))
	w.ctx, w.cancel = context.WithCancel(context.Background())
	defer w.cancel()

	proxy.Stall()
	defer proxy.Heal()
	resumed := make(chan cause, 1)
	go func() { resumed <- w.follow(resp.Header.Revision + 1) }()
	select {
	case why := <-resumed:
		if why != causeWatchNotCreated {
			t.Fatalf("follow returned %q for a watch that was never created", why)
		}
	case <-time.After(waitFor):
		w.cancel()
		<-resumed
		t.Fatal("follow still waits for the watch to be created")
	}
	if !strings.Contains(logs.String(), "watch not created in time") {
		t.Fatalf("logs: %s", logs.String())
	}
}

// waitUntil fails the test if ok does not hold within d.
func waitUntil(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rangesServed returns how many Range requests member 0 of etcd has served.
func rangesServed(t *testing.T, etcd *etcdtest.Cluster) float64 {
	t.Helper()
	m, err := benchutil.Scrape(etcd.Endpoint(0))
	if err != nil {
		t.Fatal(err)
	}
	return m.DeltaBy(benchutil.Metrics{}, "grpc_server_started_total", "grpc_method")["Range"]
}

// quietWatcher returns a Watcher of prefix that reaches etcd through etcd's
// gRPC proxy only, once it has gone quiet, and its debug log.
func quietWatcher(t *testing.T, etcd *etcdtest.Cluster, prefix string, opts ...Option) (Watcher, *syncbuf.Buffer, *etcdtest.GRPCProxy) {
	t.Helper()
	proxy := etcd.StartGRPCProxy(t)
	logs := new(syncbuf.Buffer)
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append(opts, withProbeInterval(testProbeInterval), WithLogger(logger))
	w, err := NewWatcher([]string{proxy.Endpoint()}, prefix, 5, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	waitUntil(t, waitFor, func() bool { return strings.Contains(logs.String(), "progress requests go unanswered") })
	return w, logs, proxy
}

// An idle Watcher behind etcd's gRPC proxy, which answers no progress
// request, goes quiet instead of reading every few seconds: at most one read
// per quiet interval, and it still follows the group.
func TestIdleWatcherBehindGRPCProxyGoesQuiet(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	cli := etcd.Client(t)
	if _, err := cli.Put(context.Background(), "/quiet/a", "v"); err != nil {
		t.Fatal(err)
	}
	w, logs, _ := quietWatcher(t, etcd, "/quiet")

	before := rangesServed(t, etcd)
	const intervals = 3
	window := time.Now().Add(intervals * testQuietInterval)
	for time.Now().Before(window) {
		if strings.Contains(logs.String(), "listing again") {
			t.Fatalf("listed again; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if reads := rangesServed(t, etcd) - before; reads > intervals {
		t.Fatalf("%v reads in %d quiet intervals, want one per interval at most; logs:\n%s", reads, intervals, logs.String())
	}
	if _, err := cli.Put(context.Background(), "/quiet/b", "v"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitFor, func() bool { return w.GetValueByName("b") == "v" })
}

// A quiet Watcher behind etcd's gRPC proxy still notices, within a quiet
// interval, that etcd behind the proxy was replaced by a new cluster, where
// the proxy resumes its watch silently, and lists the group again.
func TestWatcherBehindGRPCProxyNoticesReplacedEtcd(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	if _, err := etcd.Client(t).Put(context.Background(), "/replaced/old", "v"); err != nil {
		t.Fatal(err)
	}
	m := metertest.New(t)
	w, logs, _ := quietWatcher(t, etcd, "/replaced", WithMeterProvider(m.Provider))

	etcd.Wipe(t)
	replaced := time.Now()
	if _, err := etcd.Client(t).Put(context.Background(), "/replaced/new", "v"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*testQuietInterval+waitFor, func() bool {
		return w.GetValueByName("new") == "v" && w.GetValueByName("old") == ""
	})
	t.Logf("replaced etcd noticed %v after the wipe (quiet interval %v)", time.Since(replaced), testQuietInterval)
	if !strings.Contains(logs.String(), "etcd was replaced or rewound") {
		t.Fatalf("logs:\n%s", logs.String())
	}
	if n := m.Value(t, "biregister.listings", attrCause.String(causeEtcdReplaced.String())); n != 1 {
		t.Fatalf("%d listings for a replaced etcd, want 1", n)
	}
}

// A quiet Watcher behind etcd's gRPC proxy notices, at its next quiet
// check, that the link between the proxy and etcd stalled: its read gets
// no answer, it is not ready, and it lists again, which succeeds once the
// link heals, with what changed meanwhile.
func TestQuietWatcherNoticesStallBehindGRPCProxy(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	cli := etcd.Client(t)
	if _, err := cli.Put(context.Background(), "/pstall/a", "v"); err != nil {
		t.Fatal(err)
	}
	w, logs, proxy := quietWatcher(t, etcd, "/pstall")
	before := len(logs.String())

	proxy.Back(0).Stall()
	stalled := time.Now()
	if _, err := cli.Put(context.Background(), "/pstall/b", "v"); err != nil {
		t.Fatal(err)
	}
	// The next quiet check reads within a quiet interval, and the read
	// waits ttl (5 s) for an answer.
	bound := testQuietInterval + 2*testProbeInterval + 5*time.Second + 5*time.Second
	waitUntil(t, bound, func() bool { return strings.Contains(logs.String()[before:], "listing again") })
	t.Logf("stall between the proxy and etcd noticed %v after it began", time.Since(stalled))
	if err := w.Ready(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Ready() = %v while the listing cannot reach etcd", err)
	}
	proxy.Back(0).Heal()
	waitUntil(t, waitFor, func() bool { return w.GetValueByName("b") == "v" && w.Ready() == nil })
}

// A Watcher whose stream stalls is not ready once etcd could not confirm it
// within its staleness bound, and ready again after the heal.
func TestWatcherReadinessAcrossStall(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	w, err := NewWatcher([]string{proxy.Endpoint()}, "/ready", 1, withProbeInterval(testProbeInterval))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	waitUntil(t, waitFor, func() bool { return w.Ready() == nil })

	proxy.Stall()
	stalled := time.Now()
	waitUntil(t, waitFor, func() bool { return errors.Is(w.Ready(), ErrNotReady) })
	took := time.Since(stalled)
	t.Logf("not ready %v after the stall began: %v", took, w.Ready())
	// etcd last confirmed the stream before the stall; README's bound,
	// two probe intervals plus the ttl, counts from then. The slack is for
	// the polling and a loaded machine.
	if bound := 2*testProbeInterval + time.Second; took > bound+time.Second {
		t.Fatalf("not ready until %v after the stall began, past the bound of %v", took, bound)
	}
	proxy.Heal()
	waitUntil(t, waitFor, func() bool { return w.Ready() == nil })
}

// A watch whose stream goes silent — its member, one of three, frozen for
// its clients — on a client of the user's (no keepalive pings) whose other
// requests reach the other members, is noticed as stalled, not taken for
// etcd's gRPC proxy: a read another member answers proves nothing of the
// stream. The Watcher, and a Register's own watch, catch up with what
// changed meanwhile, though the stream never breaks, also while another
// Watcher on the client keeps that stream open; twice in a row, so that a
// Watcher once gone quiet would stay stale for its quiet interval.
// The group is busy when the stream goes silent, so the watch started
// below the cache's revision.
func TestSilentStreamNotTakenForProxyWatcher(t *testing.T) { testSilentStream(t, false) }

// See TestSilentStreamNotTakenForProxyWatcher.
func TestSilentStreamNotTakenForProxyRegister(t *testing.T) { testSilentStream(t, true) }

func testSilentStream(t *testing.T, register bool) {
	leakcheck.VerifyNoLeaks(t)
	const ttl = 1
	etcd := etcdtest.Start(t, 3)
	direct, err := devetcd.NewClient([]string{etcd.Endpoint(1), etcd.Endpoint(2)}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	silent := etcd.Front(0)
	cli, err := devetcd.NewClient([]string{etcd.Endpoint(0)}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var logs syncbuf.Buffer
	opts := []Option{WithClient(cli),
		func(cfg *config) { cfg.probe = probeTimes{interval: testProbeInterval, quiet: time.Minute} },
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}
	var w Watcher
	if register {
		w, err = NewRegister(nil, "/silent", "r", "v", ttl, opts...)
	} else {
		w, err = NewWatcher(nil, "/silent", ttl, opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Another Watcher on the client shares the silent stream, and
	// keeps it open: a new watch of the same kind would be created
	// on it again.
	other, err := NewWatcher(nil, "/silent", ttl, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	put := func(name string) {
		t.Helper()
		if _, err := direct.Put(context.Background(), "/silent/"+name, "v"); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 2 {
		for _, name := range []string{"a", "b", "c"} {
			put(fmt.Sprint(name, round))
		}
		waitUntil(t, waitFor, func() bool { return w.GetValueByName(fmt.Sprint("c", round)) == "v" })
		// From now on new requests and streams go to any member,
		// while the watch stays on the silent one.
		cli.SetEndpoints(etcd.Endpoints()...)
		silent.Stall()
		put(fmt.Sprint("late", round))
		stalled := time.Now()
		waitUntil(t, waitFor, func() bool {
			return w.GetValueByName(fmt.Sprint("late", round)) == "v" && other.GetValueByName(fmt.Sprint("late", round)) == "v"
		})
		t.Logf("caught up %v after the stream went silent", time.Since(stalled))
		// Soon on a stream that answers: ready, and no more listings
		// for two ttls. (A new stream may land on the silent member
		// again: its watch is not created, and it lists once more.)
		for _, x := range []Watcher{w, other} {
			waitUntil(t, waitFor, func() bool {
				listings := x.Status().Listings
				for end := time.Now().Add(2 * ttl * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
					if x.Ready() != nil || x.Status().Listings != listings {
						return false
					}
				}
				return true
			})
		}
		if strings.Contains(logs.String(), "progress requests go unanswered") {
			t.Fatalf("a silent stream was taken for etcd's gRPC proxy; logs:\n%s", logs.String())
		}
		// The next round starts on the silent member again.
		cli.SetEndpoints(etcd.Endpoint(0))
		silent.Heal()
	}
}

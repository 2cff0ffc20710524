package grpcresolver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/grpcresolver"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// The tests in this file run real gRPC servers on loopback, registered in a
// real etcd, and a client that finds them through the resolver. Every call
// a test makes must succeed.

const (
	group = "/services/api/"
	// ttl matters only to a member that is not closed; every wait below is
	// bounded by waitTimeout instead.
	ttl         = 5
	waitTimeout = 15 * time.Second
	roundRobin  = `{"loadBalancingConfig":[{"round_robin":{}}]}`
)

// server is a gRPC server serving the standard health service, which counts
// the calls it gets.
type server struct {
	addr  string
	srv   *grpc.Server
	calls atomic.Int64
	last  atomic.Int64 // time of the last call, in Unix nanoseconds
}

func startServer(t *testing.T) *server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &server{addr: lis.Addr().String()}
	s.srv = grpc.NewServer(grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			s.calls.Add(1)
			s.last.Store(time.Now().UnixNano())
			return handler(ctx, req)
		}))
	healthpb.RegisterHealthServer(s.srv, health.NewServer())
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		s.srv.Stop()
		<-served
	})
	return s
}

// register registers value in the group under name until the end of the
// test.
func register(t *testing.T, c *etcdtest.Cluster, name, value string) biregister.Register {
	t.Helper()
	r, err := biregister.NewRegister(c.Endpoints(), group, name, value, ttl)
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

// client is a gRPC client of the group, through the resolver.
type client struct {
	t  *testing.T
	hc healthpb.HealthClient
}

func dial(t *testing.T, c *etcdtest.Cluster, opts ...grpcresolver.Option) *client {
	t.Helper()
	w, err := biregister.NewWatcher(c.Endpoints(), group, ttl)
	require.NoError(t, err)
	t.Cleanup(w.Close)
	conn, err := grpc.NewClient("biregister:///services/api",
		grpc.WithResolvers(grpcresolver.NewBuilder(w, opts...)),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, hc: healthpb.NewHealthClient(conn)}
}

// call makes one call, which must succeed.
func (c *client) call() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := c.hc.Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(c.t, err)
}

// callUntil makes calls until cond holds, and fails the test if it does not
// within waitTimeout.
func (c *client) callUntil(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting until %s", what)
		}
		c.call()
	}
}

// allCalled returns a condition that holds once every server got a call
// since now.
func allCalled(servers ...*server) func() bool {
	base := counts(servers)
	return func() bool {
		for i, s := range servers {
			if s.calls.Load() == base[i] {
				return false
			}
		}
		return true
	}
}

func counts(servers []*server) []int64 {
	n := make([]int64, len(servers))
	for i, s := range servers {
		n[i] = s.calls.Load()
	}
	return n
}

// shares makes n calls and returns how many each server got.
func (c *client) shares(n int, servers ...*server) []int64 {
	c.t.Helper()
	base := counts(servers)
	for range n {
		c.call()
	}
	got := counts(servers)
	for i := range got {
		got[i] -= base[i]
	}
	return got
}

// caller calls in the background until stopped, and counts what fails.
type caller struct {
	c        *client
	calls    atomic.Int64
	failures atomic.Int64
	firstErr atomic.Value
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startCaller(c *client, goroutines int) *caller {
	bg := &caller{c: c, stop: make(chan struct{})}
	for range goroutines {
		bg.wg.Add(1)
		go func() {
			defer bg.wg.Done()
			for {
				select {
				case <-bg.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				_, err := c.hc.Check(ctx, &healthpb.HealthCheckRequest{})
				cancel()
				bg.calls.Add(1)
				if err != nil {
					bg.failures.Add(1)
					bg.firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	c.t.Cleanup(bg.halt)
	return bg
}

// halt stops the callers and waits for them; it is idempotent.
func (bg *caller) halt() {
	select {
	case <-bg.stop:
	default:
		close(bg.stop)
	}
	bg.wg.Wait()
}

// waitCalls waits until the callers have made n more calls.
func (bg *caller) waitCalls(n int64) {
	bg.c.t.Helper()
	target := bg.calls.Load() + n
	poll(bg.c.t, fmt.Sprintf("%d more background calls", n), func() bool { return bg.calls.Load() >= target })
}

// poll waits until cond holds, and fails t if it does not within
// waitTimeout.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		<-tick.C
	}
}

// TestRoundRobin checks that three registered servers share the calls.
func TestRoundRobin(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	servers := []*server{startServer(t), startServer(t), startServer(t)}
	for i, s := range servers {
		register(t, c, fmt.Sprintf("s%d", i), s.addr)
	}
	cl := dial(t, c)
	// round_robin uses a server once its connection is up.
	cl.callUntil("every server got a call", allCalled(servers...))

	const n = 300
	got := cl.shares(n, servers...)
	t.Logf("%d calls shared as %v", n, got)
	for i, share := range got {
		assert.GreaterOrEqual(t, share, int64(n/6), "server %d", i)
	}
}

// TestCloseDrains checks that a server whose Register closes stops getting
// calls at once, and that no call fails while it leaves and stops.
func TestCloseDrains(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	servers := []*server{startServer(t), startServer(t), startServer(t)}
	regs := make([]biregister.Register, len(servers))
	for i, s := range servers {
		regs[i] = register(t, c, fmt.Sprintf("s%d", i), s.addr)
	}
	cl := dial(t, c)
	cl.callUntil("every server got a call", allCalled(servers...))

	bg := startCaller(cl, 4)
	bg.waitCalls(100)
	leaving, staying := servers[1], []*server{servers[0], servers[2]}
	closed := time.Now()
	regs[1].Close()
	// It has left once the others alone got a good many calls in a row.
	last, othersAtLast := leaving.calls.Load(), sum(counts(staying))
	poll(t, "the closed server gets no more calls", func() bool {
		if n := leaving.calls.Load(); n != last {
			last, othersAtLast = n, sum(counts(staying))
			return false
		}
		return sum(counts(staying))-othersAtLast >= 100
	})
	drained := time.Duration(max(0, leaving.last.Load()-closed.UnixNano()))
	t.Logf("the closed server's last call came %v after Close", drained)
	assert.Less(t, drained, 2*time.Second, "the closed server kept getting calls")

	// Only now does the server stop: the order a graceful shutdown takes.
	leaving.srv.GracefulStop()
	bg.waitCalls(200)
	bg.halt()
	assert.Zero(t, bg.failures.Load(), "failed calls, the first: %v", bg.firstErr.Load())
	assert.Equal(t, last, leaving.calls.Load())
	t.Logf("%d calls in the background, none failed", bg.calls.Load())
	got := cl.shares(100, staying...)
	assert.Equal(t, int64(100), sum(got))
}

// TestJoin checks that a server that registers while the client runs starts
// getting calls.
func TestJoin(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	servers := []*server{startServer(t), startServer(t)}
	for i, s := range servers {
		register(t, c, fmt.Sprintf("s%d", i), s.addr)
	}
	cl := dial(t, c)
	cl.callUntil("every server got a call", allCalled(servers...))

	bg := startCaller(cl, 2)
	joining := startServer(t)
	register(t, c, "s2", joining.addr)
	cl.callUntil("the new server gets calls", allCalled(joining))
	cl.callUntil("all three get calls", allCalled(append(servers, joining)...))
	bg.halt()
	assert.Zero(t, bg.failures.Load(), "failed calls, the first: %v", bg.firstErr.Load())
}

// TestInvalidValue checks that a member whose value is not an address is
// skipped and logged, and that the others, and the changes after it, work.
func TestInvalidValue(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	var logs syncbuf.Buffer
	plain, withMeta := startServer(t), startServer(t)
	register(t, c, "plain", plain.addr)
	register(t, c, "bad", "garbage")
	register(t, c, "nojson", `{"address":"127.0.0.1:1"}`)
	register(t, c, "meta", grpcresolver.Endpoint{Addr: withMeta.addr, Metadata: map[string]string{"zone": "a"}}.String())
	cl := dial(t, c, grpcresolver.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	cl.callUntil("both good servers got a call", allCalled(plain, withMeta))
	assert.Contains(t, logs.String(), "name=bad value=garbage")
	assert.Contains(t, logs.String(), "name=nojson")

	joining := startServer(t)
	register(t, c, "late", joining.addr)
	register(t, c, "worse", "not an address either")
	cl.callUntil("the new server gets calls", allCalled(joining))
	got := cl.shares(90, plain, withMeta, joining)
	assert.Equal(t, int64(90), sum(got), "a call went elsewhere: %v", got)
	assert.Contains(t, logs.String(), "name=worse")
}

// TestEtcdOutage checks that calls keep succeeding while etcd is down, and
// that the resolver follows the group again once etcd is back.
func TestEtcdOutage(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	servers := []*server{startServer(t), startServer(t)}
	for i, s := range servers {
		register(t, c, fmt.Sprintf("s%d", i), s.addr)
	}
	cl := dial(t, c)
	cl.callUntil("every server got a call", allCalled(servers...))

	c.Stop(t, 0)
	// For a while longer than the client's watcher takes to notice and
	// start retrying, every call succeeds, on every known server.
	outage := time.Now().Add(2 * time.Second)
	cl.callUntil("the outage has lasted a while", func() bool { return time.Now().After(outage) })
	cl.callUntil("every server got a call during the outage", allCalled(servers...))

	c.Restart(t, 0)
	joining := startServer(t)
	register(t, c, "s2", joining.addr)
	cl.callUntil("the server that joined after the outage gets calls", allCalled(joining))
	cl.callUntil("all three get calls", allCalled(append(servers, joining)...))
}

// TestIdleChannelKeepsServers checks that a channel that went idle still
// reaches the servers it knew when it wakes while the group reads empty,
// or after the Watcher closed: gRPC closes the resolver of an idle channel
// and builds a new one when it wakes, which starts from the Builder's last
// list instead of an empty group.
func TestIdleChannelKeepsServers(t *testing.T) {
	for _, policy := range []string{"round_robin", "pick_first"} {
		for _, cause := range []string{"group-empties", "watcher-closes"} {
			t.Run(policy+"/"+cause, func(t *testing.T) {
				leakcheck.VerifyNoLeaks(t)
				c := etcdtest.Start(t, 1)
				s := startServer(t)
				reg := register(t, c, "s0", s.addr)
				w, err := biregister.NewWatcher(c.Endpoints(), group, ttl)
				require.NoError(t, err)
				t.Cleanup(w.Close)
				conn, err := grpc.NewClient("biregister:///services/api",
					grpc.WithResolvers(grpcresolver.NewBuilder(w)),
					grpc.WithIdleTimeout(200*time.Millisecond),
					grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, policy)),
					grpc.WithTransportCredentials(insecure.NewCredentials()))
				require.NoError(t, err)
				t.Cleanup(func() { conn.Close() })
				cl := &client{t: t, hc: healthpb.NewHealthClient(conn)}
				cl.call()

				if cause == "group-empties" {
					reg.Close()
					poll(t, "the group reads empty", func() bool { return w.View().Len() == 0 })
				} else {
					w.Close()
				}
				poll(t, "the channel is idle", func() bool { return conn.GetState() == connectivity.Idle })
				before := s.calls.Load()
				cl.call()
				assert.Equal(t, before+1, s.calls.Load())
			})
		}
	}
}

// TestOneServerTwoSpellings checks that a server registered twice, under
// two spellings of its address, gets no more calls than another.
func TestOneServerTwoSpellings(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	twice, once := startServer(t), startServer(t)
	host, port, err := net.SplitHostPort(twice.addr)
	require.NoError(t, err)
	register(t, c, "a", twice.addr)
	register(t, c, "a-again", net.JoinHostPort(host, "0"+port))
	register(t, c, "b", once.addr)
	cl := dial(t, c)
	cl.callUntil("every server got a call", allCalled(twice, once))
	const n = 300
	got := cl.shares(n, twice, once)
	t.Logf("%d calls shared as %v", n, got)
	assert.InDelta(t, n/2, got[0], n/10, "the server registered twice got %d of %d calls", got[0], n)
}

func sum(n []int64) int64 {
	var s int64
	for _, v := range n {
		s += v
	}
	return s
}

// Command grpc shows gRPC clients finding their servers through biregister.
// Three gRPC servers register themselves in a group, and a client dials the
// group through the grpcresolver package, balancing with round_robin: the
// calls are shared by all three; one server leaves while the client calls
// from several goroutines, and no call fails; a fourth joins and gets its
// share. Then the servers serve until SIGTERM or SIGINT (Ctrl-C), on which
// each leaves as the second did.
//
//	go run ./examples/grpc
//	go run ./examples/grpc -endpoints localhost:2379 -grace 30s
//
// A server leaves without failing a call, which is what a rolling restart
// needs, in two steps (server.stop). First it closes its Register, which
// revokes its lease: every client's resolver drops its address within
// milliseconds, and gRPC closes the connection to it gracefully, letting
// the calls on it finish. Then it stops with GracefulStop, which refuses
// new calls (gRPC clients retry a refused call on another server by
// themselves) and waits for those in flight. Stop instead would fail the
// calls in flight, in either order. GracefulStop waits for streams too,
// which may never end: after the -grace period, Stop cuts what is left,
// and a client of such a stream has to open it again, which the resolver
// sends to another server.
//
// It runs on an etcd of its own unless -endpoints names one, and exits
// non-zero if anything does not happen as it says, so it doubles as a
// smoke test.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/grpcresolver"
	"github.com/biregister/biregister/internal/devetcd"
)

const (
	// ttl only matters to a server that stops without closing its
	// Register: every server here closes it, which revokes its lease.
	ttl = 5
	// stepTimeout bounds every wait. Each step takes milliseconds; running
	// out of time means something is wrong.
	stepTimeout = 5 * time.Second
	// roundCalls is how many calls each round makes.
	roundCalls = 30
	// callers is how many goroutines call while a server leaves.
	callers = 4
	// servedBy is the response header in which a server names itself, so
	// that the client can tell who answered.
	servedBy = "served-by"
	// roundRobin makes the client spread calls over every server; gRPC's
	// default, pick_first, would send them all to one.
	roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "grpc:", err)
		os.Exit(1)
	}
}

// run is the whole program: it plays the story, then returns once ctx
// ends, having stopped every server.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("grpc", flag.ExitOnError)
	endpoints := flags.String("endpoints", "", "etcd endpoints, comma-separated (default: start an etcd in-process)")
	prefix := flags.String("prefix", "/services/grpc-demo/", "key prefix of the group; nobody else may use it")
	grace := flags.Duration("grace", 10*time.Second, "how long a stopping server waits for its calls and streams to end before it cuts them")
	flags.Parse(args)

	d := &demo{ctx: ctx, out: stdout, prefix: *prefix, grace: *grace, servers: map[string]*server{}}
	if *endpoints != "" {
		d.endpoints = strings.Split(*endpoints, ",")
	} else {
		srv, err := devetcd.Start("")
		if err != nil {
			return err
		}
		defer srv.Close()
		d.endpoints = srv.Endpoints()
		d.say("started an etcd in-process at %s", strings.Join(d.endpoints, ","))
	}

	// The client's view of the group. Closed last: the resolver reads it
	// for as long as the client lives.
	w, err := biregister.NewWatcher(d.endpoints, d.prefix, ttl)
	if err != nil {
		return err
	}
	defer w.Close()
	if others := w.GetNames(); len(others) > 0 {
		return fmt.Errorf("%s already has members %v: choose another -prefix", d.prefix, others)
	}
	defer d.stopAll()

	target := "biregister:///" + strings.Trim(d.prefix, "/")
	conn, err := grpc.NewClient(target,
		grpc.WithResolvers(grpcresolver.NewBuilder(w)),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	d.client = healthpb.NewHealthClient(conn)
	d.say("the client dials %s", target)

	d.play()
	if d.err == nil {
		d.say("\nthe servers serve until SIGTERM or SIGINT")
		<-ctx.Done()
	}
	if ctx.Err() != nil {
		// Stopped by a signal: a step it interrupted failed for that.
		return nil
	}
	return d.err
}

// play is the story the program tells. Every step checks what it expects;
// after the first that fails, the others do nothing (see demo.err).
func (d *demo) play() {
	d.say("\n1. servers s1, s2 and s3 start and register themselves")
	d.start("s1", "a")
	d.start("s2", "b")
	d.start("s3", "c")

	d.say("\n2. the client calls: round_robin shares the calls among them")
	d.waitCalled("s1", "s2", "s3")
	d.round("s1", "s2", "s3")

	d.say("\n3. s2 leaves while the client calls from %d goroutines: it closes its", callers)
	d.say("   Register first, so that clients stop calling it, then stops gracefully")
	d.leave("s2")
	d.round("s1", "s3")

	d.say("\n4. s4 starts and registers: it gets its share at once")
	d.start("s4", "a")
	d.waitCalled("s4")
	d.round("s1", "s3", "s4")

	d.say("\ndone: no call failed")
}

// demo holds the servers, by name, and the client that calls them. run
// sets ctx, out, endpoints, prefix, grace and client before the story, and
// the goroutines of leave read ctx and client; the rest is written and read
// by run's goroutine alone.
type demo struct {
	ctx       context.Context
	out       io.Writer
	endpoints []string
	prefix    string
	grace     time.Duration
	client    healthpb.HealthClient
	servers   map[string]*server // written by start and stop
	// err is the first step that failed. Once it is set, every step does
	// nothing, so that play reads as a script rather than as error checks.
	err error
}

// server is one gRPC server and its registration, all set by start.
type server struct {
	grpc *grpc.Server
	reg  biregister.Register
	done chan struct{} // closed when Serve has returned
}

// stop takes the server out of service without failing a call (see the
// package doc): it closes the Register, then stops gracefully, and cuts
// what is left with Stop once grace has passed. It reports whether
// GracefulStop finished within grace.
func (s *server) stop(grace time.Duration) (graceful bool) {
	s.reg.Close()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.grpc.GracefulStop()
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-stopped:
		graceful = true
	case <-timer.C:
		// Stop ends the GracefulStop under way too.
		s.grpc.Stop()
		<-stopped
	}
	<-s.done
	return graceful
}

func (d *demo) say(format string, args ...any) {
	if d.err == nil {
		fmt.Fprintf(d.out, format+"\n", args...)
	}
}

// start starts a gRPC server on a free port and registers its address, with
// the zone it runs in as metadata for the client's balancer.
func (d *demo) start(name, zone string) {
	if d.err != nil {
		return
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.err = err
		return
	}
	s := &server{done: make(chan struct{})}
	s.grpc = grpc.NewServer(grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			grpc.SetHeader(ctx, metadata.Pairs(servedBy, name))
			return handler(ctx, req)
		}))
	healthpb.RegisterHealthServer(s.grpc, health.NewServer())
	go func() {
		defer close(s.done)
		s.grpc.Serve(lis)
	}()

	value := grpcresolver.Endpoint{Addr: lis.Addr().String(), Metadata: map[string]string{"zone": zone}}.String()
	s.reg, err = biregister.NewRegister(d.endpoints, d.prefix, name, value, ttl)
	if err != nil {
		s.grpc.Stop()
		<-s.done
		d.err = err
		return
	}
	d.servers[name] = s
	d.say("   %s registered %s", name, value)
}

// leave stops the named server while callers goroutines call the group,
// and checks that none of their calls failed.
func (d *demo) leave(name string) {
	if d.err != nil {
		return
	}
	var started sync.WaitGroup
	started.Add(callers)
	gone := make(chan struct{})
	tallies := make(chan tally, callers)
	for range callers {
		go func() { tallies <- d.callWhileLeaving(gone, &started) }()
	}
	// Calls are in flight when the server begins to leave.
	started.Wait()
	d.stop(name)
	close(gone)
	var all tally
	for range callers {
		all.add(<-tallies)
	}
	switch {
	case d.ctx.Err() != nil:
		d.err = d.ctx.Err()
	case all.failed > 0:
		d.err = fmt.Errorf("%d of %d calls failed while %s left; the first: %w", all.failed, all.calls, name, all.first)
	default:
		d.say("   %d calls while %s left, none failed", all.calls, name)
	}
}

// tally counts calls, and keeps the error of the first that failed. Each
// goroutine of leave fills one of its own, and leave adds them up.
type tally struct {
	calls, failed int
	first         error
}

func (t *tally) add(u tally) {
	t.calls += u.calls
	t.failed += u.failed
	if t.first == nil {
		t.first = u.first
	}
}

// callWhileLeaving calls the group in a loop, as a busy client does: it
// marks started once its first call has returned, and goes on until it has
// made roundCalls more calls after gone is closed.
func (d *demo) callWhileLeaving(gone <-chan struct{}, started *sync.WaitGroup) (t tally) {
	for after := 0; after < roundCalls; t.calls++ {
		select {
		case <-gone:
			after++
		default:
		}
		if err := d.check(); err != nil {
			t.add(tally{failed: 1, first: err})
		}
		if t.calls == 0 {
			started.Done()
		}
	}
	return t
}

// stop stops the named server (server.stop) and says how.
func (d *demo) stop(name string) {
	s := d.servers[name]
	delete(d.servers, name)
	start := time.Now()
	how := "gracefully"
	if !s.stop(d.grace) {
		how = fmt.Sprintf("with Stop once the %v grace period was over", d.grace)
	}
	// Printed whatever went wrong before: the servers stop all the same.
	fmt.Fprintf(d.out, "   %s closed its Register, then stopped %s, in %v\n", name, how, time.Since(start).Round(time.Microsecond))
}

// call makes one call and returns the name of the server that answered.
func (d *demo) call() string {
	if d.err != nil {
		return ""
	}
	var header metadata.MD
	if err := d.check(grpc.Header(&header)); err != nil {
		d.err = fmt.Errorf("a call failed: %w", err)
		return ""
	}
	return strings.Join(header.Get(servedBy), ",")
}

// check makes one call, within stepTimeout. The goroutines of leave call
// it too: it reads only what run set before the story.
func (d *demo) check(opts ...grpc.CallOption) error {
	ctx, cancel := context.WithTimeout(d.ctx, stepTimeout)
	defer cancel()
	_, err := d.client.Check(ctx, &healthpb.HealthCheckRequest{}, opts...)
	return err
}

// waitCalled calls until each named server has answered once: round_robin
// uses a server once its connection is up.
func (d *demo) waitCalled(names ...string) {
	deadline := time.Now().Add(stepTimeout)
	missing := slices.Clone(names)
	for len(missing) > 0 && d.err == nil {
		who := d.call()
		missing = slices.DeleteFunc(missing, func(n string) bool { return n == who })
		if time.Now().After(deadline) {
			d.err = fmt.Errorf("no call reached %v within %v", missing, stepTimeout)
		}
	}
}

// round makes roundCalls calls, prints who answered them, and checks that
// they were shared by exactly the named servers.
func (d *demo) round(names ...string) {
	tally := map[string]int{}
	for range roundCalls {
		if who := d.call(); d.err == nil {
			tally[who]++
		}
	}
	if d.err != nil {
		return
	}
	var shares []string
	for _, who := range slices.Sorted(maps.Keys(tally)) {
		shares = append(shares, fmt.Sprintf("%s=%d", who, tally[who]))
	}
	d.say("   %d calls answered by %s", roundCalls, strings.Join(shares, " "))
	for _, n := range names {
		if tally[n] == 0 {
			d.err = fmt.Errorf("%s got no call", n)
		}
	}
	if len(tally) != len(names) {
		d.err = fmt.Errorf("calls went to %v, want only %v", tally, names)
	}
}

// stopAll stops every server that is still up, as SIGTERM or SIGINT does.
func (d *demo) stopAll() {
	if len(d.servers) == 0 {
		return
	}
	fmt.Fprintf(d.out, "\nstopping: each server closes its Register, then stops gracefully (within %v)\n", d.grace)
	for _, name := range slices.Sorted(maps.Keys(d.servers)) {
		d.stop(name)
	}
}

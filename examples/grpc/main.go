// Command grpc shows gRPC clients finding their servers through biregister.
// Three gRPC servers register themselves in a group, and a client dials the
// group through the grpcresolver package, balancing with round_robin: the
// calls are shared by all three; one server leaves and the calls move to
// the others without one failing; a fourth joins and gets its share.
//
//	go run ./examples/grpc
//	go run ./examples/grpc -endpoints localhost:2379
//
// It runs on an etcd of its own unless -endpoints names one, finishes by
// itself in a few seconds, and exits non-zero if anything does not happen
// as it says, so it doubles as a smoke test.
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

// run is the whole program.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("grpc", flag.ExitOnError)
	endpoints := flags.String("endpoints", "", "etcd endpoints, comma-separated (default: start an etcd in-process)")
	prefix := flags.String("prefix", "/services/grpc-demo/", "key prefix of the group; nobody else may use it")
	flags.Parse(args)

	d := &demo{ctx: ctx, out: stdout, prefix: *prefix, servers: map[string]*server{}}
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
	defer d.closeAll()

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

	d.say("\n3. s2 leaves: it closes its Register first, so that clients stop")
	d.say("   calling it at once, and stops serving only then")
	d.leave("s2")
	d.round("s1", "s3")

	d.say("\n4. s4 starts and registers: it gets its share at once")
	d.start("s4", "a")
	d.waitCalled("s4")
	d.round("s1", "s3", "s4")

	d.say("\ndone: no call failed")
}

// demo holds the servers, by name, and the client that calls them.
type demo struct {
	ctx       context.Context
	out       io.Writer
	endpoints []string
	prefix    string
	client    healthpb.HealthClient
	servers   map[string]*server
	// err is the first step that failed. Once it is set, every step does
	// nothing, so that play reads as a script rather than as error checks.
	err error
}

// server is one gRPC server and its registration.
type server struct {
	grpc *grpc.Server
	reg  biregister.Register
	done chan struct{} // closed when Serve has returned
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
	d.servers[name] = s

	value := grpcresolver.Endpoint{Addr: lis.Addr().String(), Metadata: map[string]string{"zone": zone}}.String()
	s.reg, err = biregister.NewRegister(d.endpoints, d.prefix, name, value, ttl)
	if err != nil {
		d.err = err
		return
	}
	d.say("   %s registered %s", name, value)
}

// leave closes a server's registration, waits until the client no longer
// calls it, and stops the server.
func (d *demo) leave(name string) {
	if d.err != nil {
		return
	}
	s := d.servers[name]
	start := time.Now()
	s.reg.Close()
	s.reg = nil
	// The client has let go of it once enough calls in a row went elsewhere.
	const inARow = 3 * roundCalls
	last := time.Duration(-1) // when name last answered, since start; -1: never
	for others := 0; others < inARow && d.err == nil; {
		if d.call() == name {
			others = 0
			last = time.Since(start)
		} else {
			others++
		}
		if time.Since(start) > stepTimeout {
			d.err = fmt.Errorf("%s still gets calls %v after it left", name, stepTimeout)
		}
	}
	if last < 0 {
		d.say("   no call reached %s after it left", name)
	} else {
		d.say("   the last call reached %s %v after it began to leave", name, last.Round(time.Microsecond))
	}
	d.say("   %d calls in a row went to the others; %s stops serving", inARow, name)
	s.grpc.GracefulStop()
	<-s.done
	delete(d.servers, name)
}

// call makes one call and returns the name of the server that answered.
func (d *demo) call() string {
	if d.err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(d.ctx, stepTimeout)
	defer cancel()
	var header metadata.MD
	if _, err := d.client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&header)); err != nil {
		d.err = fmt.Errorf("a call failed: %w", err)
		return ""
	}
	return strings.Join(header.Get(servedBy), ",")
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

// closeAll closes every registration, then stops every server.
func (d *demo) closeAll() {
	for _, s := range d.servers {
		if s.reg != nil {
			s.reg.Close()
		}
	}
	for _, s := range d.servers {
		s.grpc.Stop()
		<-s.done
	}
}

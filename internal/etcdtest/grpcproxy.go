// This file runs etcd's gRPC proxy ("etcd grpc-proxy start") in front of a
// Cluster: the usual way production deployments fan the watches of many
// clients out over a few etcd streams.

package etcdtest

import (
	"context"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/faultproxy"
)

// proxyMaxSendBytes is the largest request the proxy forwards to etcd: the
// default of the binary's --max-send-bytes, which is etcd's own request
// size limit.
const proxyMaxSendBytes = 3 << 19 // 1.5 MiB

// GRPCProxy is etcd's gRPC proxy serving in front of a Cluster, with
// faultproxies on both sides: clients reach the proxy through Front, and the
// proxy reaches each member through a Back link of its own and then the
// member's front. Faults of Front fall between clients and the proxy, faults
// of a Back link between the proxy and etcd, touching no other client, and
// Stop and the members' faults reach the proxy as they would in production.
type GRPCProxy struct {
	front *faultproxy.Proxy
	back  []*faultproxy.Proxy // by member
	// addr is where the proxy itself listens, behind front.
	addr url.URL
	srv  server
}

// StartGRPCProxy starts etcd's gRPC proxy for the members of c on a free
// 127.0.0.1 port, and returns once it serves requests, which a linearizable
// read through it proves. t.Cleanup stops it. The proxy serves plain gRPC
// and talks plain gRPC to the members: StartGRPCProxy fails the test for a
// cluster with TLS or auth.
//
// In process, the proxy is built from go.etcd.io/etcd/server/v3/proxy/grpcproxy
// with the services and server settings that "etcd grpc-proxy start" uses.
// With BIREGISTER_ETCD_BIN set, it is that command of the binary, run as a
// child process logging to grpc-proxy.log under t.TempDir().
func (c *Cluster) StartGRPCProxy(t testing.TB) *GRPCProxy {
	t.Helper()
	if c.certs != nil || c.opts.Auth != nil {
		t.Fatal("etcdtest: the gRPC proxy runs in front of plain-text clusters without auth only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	p := &GRPCProxy{}
	backs := make([]string, len(c.members))
	for i := range c.members {
		p.back = append(p.back, faultproxy.Start(t, c.Endpoint(i)))
		backs[i] = p.back[i].Endpoint()
	}
	var err error
	if c.bin != "" {
		dir := t.TempDir()
		p.srv, p.addr, err = startGRPCProxyProcess(ctx, c.bin, backs, dir)
	} else {
		p.srv, p.addr, err = startGRPCProxy(ctx, backs)
	}
	if err != nil {
		t.Fatalf("etcdtest: start gRPC proxy: %v", err)
	}
	// Registered before the front, so that it runs after the front has
	// closed the clients' connections: no request comes in while the proxy
	// stops.
	t.Cleanup(p.srv.Close)
	p.front = faultproxy.Start(t, p.addr.String())
	return p
}

// Endpoint returns the endpoint clients reach the proxy at, through Front.
func (p *GRPCProxy) Endpoint() string {
	return p.front.Endpoint()
}

// DirectEndpoint returns the proxy's own endpoint, which bypasses Front:
// for clients that Front's faults must not touch, or that need a
// faultproxy of their own in front of the proxy.
func (p *GRPCProxy) DirectEndpoint() string {
	return p.addr.String()
}

// Front returns the faultproxy between Endpoint and the proxy. Its faults
// cut, stall or slow every client that came in through Endpoint, and leave
// the proxy's own connections to the members alone.
func (p *GRPCProxy) Front() *faultproxy.Proxy {
	return p.front
}

// Back returns the faultproxy between the proxy and member i. Its faults
// fall between the proxy and that member only: clients that reach the
// member directly do not feel them.
func (p *GRPCProxy) Back(i int) *faultproxy.Proxy {
	return p.back[i]
}

// Client returns a new client that talks to the members through the proxy
// only, at Endpoint, with a DialTimeout of 5 s. It does not log, and
// t.Cleanup closes it.
func (p *GRPCProxy) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := newClient([]string{p.Endpoint()}, dialTimeout)
	if err != nil {
		t.Fatalf("etcdtest: client of the gRPC proxy: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// inProcessGRPCProxy is the gRPC proxy served from this process.
type inProcessGRPCProxy struct {
	client *clientv3.Client // the proxy's own client of the members
	srv    *grpc.Server
	served chan struct{} // closed once Serve has returned
	// done are the channels the grpcproxy constructors return: each is
	// closed once the goroutines of its service have ended, which happens
	// after the client is closed.
	done []<-chan struct{}
}

// startGRPCProxy starts the proxy in process for the members at endpoints.
func startGRPCProxy(ctx context.Context, endpoints []string) (*inProcessGRPCProxy, url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, url.URL{}, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		// No Context: the services below end with the client's context,
		// which derives from it, and must outlive the start's deadline.
		Logger:             zap.NewNop(),
		MaxCallSendMsgSize: proxyMaxSendBytes,
		MaxCallRecvMsgSize: math.MaxInt32,
		// The binary passes each client's auth token on to etcd, instead of
		// acting with its own client's rights; so does this proxy.
		DialOptions: []grpc.DialOption{
			grpc.WithUnaryInterceptor(grpcproxy.AuthUnaryClientInterceptor),
			grpc.WithStreamInterceptor(grpcproxy.AuthStreamClientInterceptor),
		},
	})
	if err != nil {
		ln.Close()
		return nil, url.URL{}, err
	}
	// As in the binary, the services end when the client closes.
	lg := zap.NewNop()
	kv, kvDone := grpcproxy.NewKvProxy(cli)
	watch, watchDone := grpcproxy.NewWatchProxy(cli.Ctx(), lg, cli)
	// Without a resolver prefix the cluster proxy forwards member calls to
	// etcd, and the advertised address goes unused.
	cluster, clusterDone := grpcproxy.NewClusterProxy(lg, cli, "", "")
	lease, leaseDone := grpcproxy.NewLeaseProxy(cli.Ctx(), cli)
	p := &inProcessGRPCProxy{
		client: cli,
		// The binary's server settings, with its flags' defaults. They
		// matter to clients: one that pings more often than MinTime is
		// told to go away, as etcd itself would tell it.
		srv: grpc.NewServer(
			grpc.MaxConcurrentStreams(math.MaxUint32),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: embed.DefaultGRPCKeepAliveMinTime}),
			grpc.KeepaliveParams(keepalive.ServerParameters{
				Time:    embed.DefaultGRPCKeepAliveInterval,
				Timeout: embed.DefaultGRPCKeepAliveTimeout,
			}),
			// Stop then returns only once no handler runs any more, so
			// that none outlives the test.
			grpc.WaitForHandlers(true),
		),
		served: make(chan struct{}),
		done:   []<-chan struct{}{kvDone, watchDone, clusterDone, leaseDone},
	}
	pb.RegisterKVServer(p.srv, kv)
	pb.RegisterWatchServer(p.srv, watch)
	pb.RegisterClusterServer(p.srv, cluster)
	pb.RegisterLeaseServer(p.srv, lease)
	pb.RegisterMaintenanceServer(p.srv, grpcproxy.NewMaintenanceProxy(cli))
	pb.RegisterAuthServer(p.srv, grpcproxy.NewAuthProxy(cli))
	v3electionpb.RegisterElectionServer(p.srv, grpcproxy.NewElectionProxy(cli))
	v3lockpb.RegisterLockServer(p.srv, grpcproxy.NewLockProxy(cli))
	go func() {
		defer close(p.served)
		p.srv.Serve(ln)
	}()

	addr := url.URL{Scheme: "http", Host: ln.Addr().String()}
	if err := devetcd.WaitServingWith(ctx, clientv3.Config{Endpoints: []string{addr.String()}}); err != nil {
		p.Close()
		return nil, url.URL{}, err
	}
	return p, addr, nil
}

// Close stops serving, closes the proxy's client and waits, for up to
// stopTimeout, until every goroutine of the proxy has ended.
func (p *inProcessGRPCProxy) Close() {
	p.srv.Stop()
	<-p.served
	p.client.Close()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	for _, done := range p.done {
		select {
		case <-done:
		case <-timer.C:
			// The leak check of the test reports what is left.
			return
		}
	}
}

// startGRPCProxyProcess runs "bin grpc-proxy start" for the members at
// endpoints as a child process, with its log and data directory in dir.
func startGRPCProxyProcess(ctx context.Context, bin string, endpoints []string, dir string) (*process, url.URL, error) {
	urls, err := devetcd.FreeURLs(1)
	if err != nil {
		return nil, url.URL{}, err
	}
	addr := urls[0]
	// Flags that etcd 3.4 knows as well as later versions. The advertised
	// URL is the proxy's own address: later versions dial it to check their
	// own health, and the default, 127.0.0.1:23790, would reach whatever
	// listens there.
	args := []string{
		"grpc-proxy", "start",
		"--endpoints=" + strings.Join(endpoints, ","),
		"--listen-addr=" + addr.Host,
		"--advertise-client-url=" + addr.Host,
		// Only used for auto-TLS certificates, but better not left to the
		// default, which is relative to the working directory.
		"--data-dir=" + filepath.Join(dir, "data"),
	}
	log := filepath.Join(dir, "grpc-proxy.log")
	// startProcess waits for a linearizable read through the proxy, which
	// needs the proxy serving and connected to a member with a leader.
	p, err := startProcess(ctx, bin, args, log, addr, clientv3.Config{})
	if err != nil {
		return nil, url.URL{}, err
	}
	return p, addr, nil
}

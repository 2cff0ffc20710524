// Package devetcd starts real etcd servers inside the current process, for
// the examples and, through internal/etcdtest, for the tests.
//
// The servers are go.etcd.io/etcd/server/v3/embed instances on free loopback
// ports. They log nothing, so the output of the program that starts them
// stays its own.
package devetcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

const (
	// tickMs and electionMs trade failover speed against stability: a new
	// leader is elected within about a second after a stop, yet a slow,
	// race-instrumented 2-core machine does not miss heartbeats often enough
	// to flap leaders.
	tickMs     = 50
	electionMs = 500

	// bcryptCost is the cost at which a member hashes the passwords of its
	// users: bcrypt's minimum, so that a login under -race takes
	// milliseconds rather than most of a second (etcd's default is 10).
	// These members guard no real secret.
	bcryptCost = 4

	// startTimeout bounds how long Start waits for its member to serve. A
	// single member on loopback serves within a second; the rest is for a
	// machine busy with other work.
	startTimeout = 30 * time.Second
)

// Member is the identity of one etcd member: its name, its data directory
// and the URLs it listens on for clients and for its peers.
type Member struct {
	Name string
	// Dir is best left to etcd to create: it insists on mode 0700 and warns
	// about a directory that was made with another.
	Dir       string
	ClientURL url.URL
	PeerURL   url.URL
	// ClientTLS, if not nil, makes the member serve its client URL, which
	// must then be an https URL, over TLS. The peer URL stays plain.
	ClientTLS *ClientTLS
	// AuthToken is etcd's --auth-token: the kind of token the member
	// issues once auth is enabled. Empty keeps etcd's default, "simple".
	AuthToken string
	// AuthTokenTTL is etcd's --auth-token-ttl: how many seconds a simple
	// token lives after its last use. 0 keeps etcd's default, 300.
	AuthTokenTTL uint
}

// ClientTLS is how a member secures its client port.
type ClientTLS struct {
	// CertFile and KeyFile are the member's certificate and key.
	CertFile string
	KeyFile  string
	// TrustedCAFile, if not empty, makes the member require a client
	// certificate signed by this CA: etcd does so as soon as it is given
	// the file, whether or not ClientCertAuth is set.
	TrustedCAFile string
	// ClientCertAuth makes etcd, once auth is enabled, take the common
	// name of a client's certificate as the user of a request that carries
	// no token.
	ClientCertAuth bool
}

// Config returns the configuration of m as one member of the cluster made
// of peers (m among them). Members that share a token form one cluster, so
// a new token gives a cluster with a new ID on the same URLs. state is
// embed.ClusterStateFlagNew to bootstrap the cluster, or
// embed.ClusterStateFlagExisting; a member whose data directory already
// holds a log takes the membership from it and ignores peers and state.
//
// The member logs nothing and serves neither the HTTP/JSON gateway, nor
// pprof, nor metrics: nothing talks to them, and every extra listener is
// one more thing to start and tear down.
func Config(m Member, peers []Member, token, state string) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	cfg.ListenClientUrls = []url.URL{m.ClientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.ClientURL}
	cfg.ListenPeerUrls = []url.URL{m.PeerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.PeerURL}
	cfg.InitialCluster = initialCluster(peers)
	cfg.InitialClusterToken = token
	cfg.ClusterState = state
	cfg.TickMs = tickMs
	cfg.ElectionMs = electionMs
	cfg.BcryptCost = bcryptCost
	if t := m.ClientTLS; t != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       t.CertFile,
			KeyFile:        t.KeyFile,
			TrustedCAFile:  t.TrustedCAFile,
			ClientCertAuth: t.ClientCertAuth,
		}
	}

	if m.AuthToken != "" {
		cfg.AuthToken = m.AuthToken
	}
	if m.AuthTokenTTL != 0 {
		cfg.AuthTokenTTL = m.AuthTokenTTL
	}

	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.EnableGRPCGateway = false
	cfg.EnablePprof = false
	cfg.ListenMetricsUrls = nil
	return cfg
}

// Args returns the command-line flags that make an etcd binary run m as
// Config makes embed run it. They are only flags that etcd 3.4 and every
// later version know, so that the tests can run against the servers users
// deploy; for everything else the binary keeps its own defaults. Logging is
// among those: its flags changed between versions, and the caller can
// redirect the output instead.
func Args(m Member, peers []Member, token, state string) []string {
	args := []string{
		"--name=" + m.Name,
		"--data-dir=" + m.Dir,
		"--listen-client-urls=" + m.ClientURL.String(),
		"--advertise-client-urls=" + m.ClientURL.String(),
		"--listen-peer-urls=" + m.PeerURL.String(),
		"--initial-advertise-peer-urls=" + m.PeerURL.String(),
		"--initial-cluster=" + initialCluster(peers),
		"--initial-cluster-token=" + token,
		"--initial-cluster-state=" + state,
		"--heartbeat-interval=" + strconv.Itoa(tickMs),
		"--election-timeout=" + strconv.Itoa(electionMs),
		"--bcrypt-cost=" + strconv.Itoa(bcryptCost),
	}
	if t := m.ClientTLS; t != nil {
		args = append(args, "--cert-file="+t.CertFile, "--key-file="+t.KeyFile)
		if t.TrustedCAFile != "" {
			args = append(args, "--trusted-ca-file="+t.TrustedCAFile)
		}
		if t.ClientCertAuth {
			args = append(args, "--client-cert-auth")
		}
	}
	if m.AuthToken != "" {
		args = append(args, "--auth-token="+m.AuthToken)
	}
	if m.AuthTokenTTL != 0 {
		args = append(args, "--auth-token-ttl="+strconv.FormatUint(uint64(m.AuthTokenTTL), 10))
	}
	return args
}

// initialCluster returns the name=peerURL list that bootstraps peers.
func initialCluster(peers []Member) string {
	cluster := make([]string, len(peers))
	for i, p := range peers {
		cluster[i] = p.Name + "=" + p.PeerURL.String()
	}
	return strings.Join(cluster, ",")
}

// StartMember starts the member cfg describes and returns once it serves
// requests, or stops it again and returns an error if it fails or ctx ends
// first.
//
// A member of a multi-member cluster serves only once a quorum of its peers
// is up, so the members of a new cluster must be started concurrently.
func StartMember(ctx context.Context, cfg *embed.Config) (*embed.Etcd, error) {
	return StartMemberWith(ctx, cfg, clientv3.Config{})
}

// StartMemberWith is StartMember for a member that does not answer a
// plain, anonymous client: ready is the configuration of the client that
// checks that the member serves (see WaitServingWith), with the TLS
// settings and credentials the member asks for. Its Endpoints default to
// the member's first advertised client URL.
func StartMemberWith(ctx context.Context, cfg *embed.Config, ready clientv3.Config) (*embed.Etcd, error) {
	if len(ready.Endpoints) == 0 {
		ready.Endpoints = []string{cfg.AdvertiseClientUrls[0].String()}
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, e); err != nil {
		e.Close()
		return nil, err
	}
	if err := WaitServingWith(ctx, ready); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// waitReady waits until e has joined its cluster.
func waitReady(ctx context.Context, e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("failed before ready: %v", err)
	case <-e.Server.StopNotify():
		return errors.New("stopped before ready")
	case <-ctx.Done():
		return fmt.Errorf("not ready in time: %w", ctx.Err())
	}
}

// WaitServing polls the member at client URL ep until a linearizable Get
// through it succeeds, or returns an error once ctx ends. Such a Get needs
// the member to know the current leader and to have applied the log up to
// the leader's commit index, which is a stronger promise than ReadyNotify
// after a restart, and one that any etcd version, in process or not, can
// be asked for.
func WaitServing(ctx context.Context, ep string) error {
	return WaitServingWith(ctx, clientv3.Config{Endpoints: []string{ep}})
}

// WaitServingWith is WaitServing through a client made from cfg, for a
// member that wants TLS or credentials. The credentials may be given
// before auth is enabled: etcd then accepts requests without a token. The
// client logs nothing, whatever cfg says.
func WaitServingWith(ctx context.Context, cfg clientv3.Config) error {
	cfg.Logger = zap.NewNop()
	// No call made while creating the client may outlive ctx. Creating it
	// authenticates, which needs a member that serves: one attempt must not
	// use up the whole wait (see below).
	cfg.Context = ctx
	cfg.DialTimeout = time.Second
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			cli.Close()
		}
	}()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		var err error
		if cli == nil {
			cli, err = clientv3.New(cfg)
		}
		if err == nil {
			// One attempt must not use up the whole wait: a Get sent while
			// the member has no leader yet can hang until its context ends.
			attempt, cancel := context.WithTimeout(ctx, time.Second)
			_, err = cli.Get(attempt, "devetcd/ready")
			cancel()
			if err == nil {
				return nil
			}
		}
		retry.Reset(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			return fmt.Errorf("not serving in time: %v", err)
		case <-retry.C:
		}
	}
}

// NewClient returns a client for endpoints that logs nothing. The default
// client logs every failed retry on stderr, which is noise while a member
// starts or stops on purpose. A dialTimeout of 0 does not wait for a
// connection at all.
func NewClient(endpoints []string, dialTimeout time.Duration) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
	})
}

// FreeURLs returns n distinct http URLs on 127.0.0.1 whose ports were free.
// All listeners stay open until every port is chosen, so that no port is
// handed out twice. The ports are chosen below the range the kernel takes
// the local ports of outgoing connections from: a port of that range, free
// when chosen, was seen taken by another test's connection before etcd
// could listen on it ("bind: address already in use"). PortsEnv narrows
// the choice, so that processes given ranges of their own do not choose
// alike.
func FreeURLs(n int) ([]url.URL, error) {
	low, high, err := quietPorts()
	if err != nil {
		return nil, err
	}
	urls := make([]url.URL, 0, n)
	for tries := 0; len(urls) < n; tries++ {
		addr := "127.0.0.1:0" // the kernel's choice, if no quiet port is found
		if tries < 100*n && high > low {
			addr = "127.0.0.1:" + strconv.Itoa(low+rand.IntN(high-low))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "127.0.0.1:0" {
				return nil, fmt.Errorf("free port: %w", err)
			}
			continue // taken: try another
		}
		defer l.Close()
		urls = append(urls, url.URL{Scheme: "http", Host: l.Addr().String()})
	}
	return urls, nil
}

// PortsEnv names the environment variable that sets the ports FreeURLs
// chooses from, "low-high" (high excluded), as scripts/gotest gives each of
// the test processes it runs side by side a range of its own.
const PortsEnv = "BIREGISTER_TEST_PORTS"

// minQuietPort is the lowest port FreeURLs picks: above the well-known and
// most registered ports.
const minQuietPort = 10000

// quietPorts returns the range FreeURLs chooses from: PortsEnv's, or from
// minQuietPort to the lowest local port of outgoing connections.
func quietPorts() (low, high int, err error) {
	if v := os.Getenv(PortsEnv); v != "" {
		l, h, ok := strings.Cut(v, "-")
		low, errLow := strconv.Atoi(l)
		high, errHigh := strconv.Atoi(h)
		if !ok || errLow != nil || errHigh != nil || low < 1024 || high <= low || high > 65536 {
			return 0, 0, fmt.Errorf("%s=%q: want low-high, 1024 <= low < high <= 65536", PortsEnv, v)
		}
		return low, high, nil
	}
	return minQuietPort, ephemeralLow(), nil
}

// ephemeralLow returns the lowest local port of outgoing connections, from
// Linux's setting, or 32768, its default and a common one elsewhere.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if fields := strings.Fields(string(b)); len(fields) == 2 {
			if low, err := strconv.Atoi(fields[0]); err == nil {
				return low
			}
		}
	}
	return 32768
}

// Server is a single-member etcd cluster running in this process.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	tempDir   string // removed by Close; "" if the caller chose the directory
}

// Start starts a single-member etcd on free 127.0.0.1 ports and returns
// once it serves requests. Its data goes to dir, which is best left to
// Start to create (see Member.Dir); if dir is "", it goes to a new
// temporary directory that Close removes.
func Start(dir string) (*Server, error) {
	if dir != "" {
		return start(dir)
	}
	tmp, err := os.MkdirTemp("", "devetcd-")
	if err != nil {
		return nil, fmt.Errorf("devetcd: %w", err)
	}
	s, err := start(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	s.tempDir = tmp
	return s, nil
}

func start(dir string) (*Server, error) {
	urls, err := FreeURLs(2)
	if err != nil {
		return nil, fmt.Errorf("devetcd: %w", err)
	}
	m := Member{Name: "default", Dir: dir, ClientURL: urls[0], PeerURL: urls[1]}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	e, err := StartMember(ctx, Config(m, []Member{m}, "devetcd", embed.ClusterStateFlagNew))
	if err != nil {
		return nil, fmt.Errorf("devetcd: start: %w", err)
	}
	return &Server{etcd: e, endpoints: []string{m.ClientURL.String()}}, nil
}

// Endpoints returns the URLs clients reach the server at.
func (s *Server) Endpoints() []string {
	return append([]string(nil), s.endpoints...)
}

// Close stops the server and waits until it has released its ports and
// its files. The data stays on disk unless Start chose the directory.
func (s *Server) Close() {
	s.etcd.Close()
	if s.tempDir != "" {
		os.RemoveAll(s.tempDir)
	}
}

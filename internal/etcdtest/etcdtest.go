// Package etcdtest starts real etcd servers for tests.
//
// By default the servers are go.etcd.io/etcd/server/v3/embed instances
// inside the test process, listening on free loopback ports, so tests
// exercise the same gRPC protocol, leases, watches and failure modes as a
// production deployment without depending on an etcd binary being
// installed.
//
// If the environment variable BIREGISTER_ETCD_BIN names an etcd server
// binary, the members run as child processes of that binary instead, with
// the same API and semantics. That runs the tests against another etcd
// version than the one the module embeds, such as the 3.4 that many
// clusters still run:
//
//	BIREGISTER_ETCD_BIN=/usr/bin/etcd go test ./...
//
// Each member's output then goes to etcd.log in its directory under
// t.TempDir(), and a failure to start quotes the end of it.
//
// StartWith starts a secured cluster: TLS on the client port, with or
// without client certificates, and etcd's authentication with users whose
// roles may use one key prefix each. Both backends support it.
//
// Cluster.StartGRPCProxy puts etcd's gRPC proxy in front of a plain-text
// cluster, built from etcd's grpcproxy package in process, or run as the
// binary's "grpc-proxy start" command with the process backend.
//
// Cluster.Pause freezes a member running as a process, as SIGSTOP does, and
// Cluster.Resume thaws it: to clients and peers it then looks connected and
// answers nothing. A test that pauses calls RequireProcesses first.
//
// StartIsolated runs each member as a process in a network namespace of its
// own, so that a test can cut a member off from its peers while it still
// serves clients (IsolateFromPeers), or cut the test off from a member
// (CutClient). It needs Linux, root, iproute2 and BIREGISTER_ETCD_BIN.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/testcerts"
)

const (
	// readyTimeout bounds every wait for a member to start or to serve.
	// It is generous because -race on a busy CI machine is slow, and a
	// timeout only ever turns a hang into a clear failure.
	readyTimeout = 30 * time.Second

	// dialTimeout is the DialTimeout of clients handed out by Client.
	dialTimeout = 5 * time.Second
)

// Cluster is a set of etcd members started for one test.
type Cluster struct {
	// bin is the etcd binary the members run as, or "" to run them in
	// process. It is read once, so that all members of a cluster run the
	// same version.
	bin string
	// mu serialises the lifecycle methods, so that a fault-injection
	// goroutine stopping a member cannot race the test's cleanup.
	mu      sync.Mutex
	members []*member
	// token is the initial cluster token. Member and cluster IDs are hashes
	// of the peer URLs and this token, so Wipe changes it to obtain a
	// cluster with a different ID on the same URLs.
	token string
	wipes int

	opts  Options
	certs *testcerts.Set // nil without TLS
	net   *network       // nil unless StartIsolated made the cluster
}

type member struct {
	devetcd.Member
	log string // the process backend's log, kept apart from Dir so Wipe keeps it
	srv server // nil while the member is stopped
	// front is the loopback proxy that clients reach the member through: Stop
	// resets every client connection at once, as the death of the process
	// would. Without it, embed's Close serves nothing for up to 6 s while it
	// waits for open watch streams to end, which no real crash does. It is
	// nil for a member in a network namespace of its own (StartIsolated),
	// which is a process that closes its connections itself.
	front *faultproxy.Proxy
	// netns is the network namespace the member runs in, or "".
	netns string
	// paused is set by Pause and cleared by Resume and stop, under the
	// cluster's lock.
	paused bool
}

// server is a running member: an *embed.Etcd or a *process. Close stops it
// and returns once its ports and files are released.
type server interface {
	Close()
}

// Start starts an etcd cluster of n members on free 127.0.0.1 ports, each
// member with its own data directory under t.TempDir(). It waits until the
// cluster has a leader and every member serves requests, and registers a
// t.Cleanup that stops every member. Start fails the test on error.
//
// The members serve plain gRPC without authentication; StartWith starts
// secured ones.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: cluster size %d, need at least 1", n)
	}
	return StartWith(t, Options{Members: n})
}

// StartWith starts a cluster as Start does, set up as opts say. With
// authentication, the users and roles exist and auth is enabled by the
// time it returns.
func StartWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if err := opts.check(); err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	n := max(opts.Members, 1)
	urls, err := devetcd.FreeURLs(2 * n)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	c := &Cluster{bin: os.Getenv(binEnv), token: "etcdtest", opts: opts}
	var clientTLS *devetcd.ClientTLS
	if opts.TLS != PlainText {
		c.certs = testcerts.New(t)
		clientTLS = &devetcd.ClientTLS{CertFile: c.certs.ServerCertFile, KeyFile: c.certs.ServerKeyFile}
		if opts.TLS == MutualTLS {
			clientTLS.TrustedCAFile = c.certs.CAFile
			clientTLS.ClientCertAuth = true
		}
	}
	root := t.TempDir()
	var authToken string
	var authTokenTTL uint
	if a := opts.Auth; a != nil && a.JWT {
		if authToken, err = jwtAuthToken(root, a.TokenTTL); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
	} else if a != nil {
		authTokenTTL = uint(a.TokenTTL / time.Second)
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("m%d", i)
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		clientURL := urls[2*i]
		if clientTLS != nil {
			clientURL.Scheme = "https"
		}
		c.members = append(c.members, &member{
			Member: devetcd.Member{
				Name: name,
				// A directory that does not exist yet lets etcd create it
				// with the 0700 mode it insists on, instead of warning
				// about the mode of one made here.
				Dir:          filepath.Join(dir, "data"),
				ClientURL:    clientURL,
				PeerURL:      urls[2*i+1],
				ClientTLS:    clientTLS,
				AuthToken:    authToken,
				AuthTokenTTL: authTokenTTL,
			},
			log: filepath.Join(dir, "etcd.log"),
		})
	}
	// Registered before anything runs so that members started before a
	// failure below are stopped as well.
	t.Cleanup(c.stopAll)
	for _, m := range c.members {
		m.front = faultproxy.Start(t, m.ClientURL.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.startMembers(ctx); err != nil {
		t.Fatalf("etcdtest: start: %v", err)
	}
	if err := c.setUpAuth(ctx); err != nil {
		t.Fatalf("etcdtest: set up auth: %v", err)
	}
	for _, m := range c.members {
		m.healFront()
	}
	return c
}

// startMembers starts every member of a new cluster and waits until each
// serves requests.
//
// A member of a multi-member cluster does not become ready until a quorum
// of its peers is up, so all members must start at once. Even so, a new
// member first asks each peer whether it is bootstrapped already, and a
// peer whose port is open but not yet served lets that ask run into a 1 s
// timeout: a 3-member cluster takes up to 2 s to start.
func (c *Cluster) startMembers(ctx context.Context) error {
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = c.start(ctx, m, embed.ClusterStateFlagNew); errs[i] != nil {
				errs[i] = fmt.Errorf("member %s: %w", m.Name, errs[i])
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Endpoints returns the client URLs of all members, running or not, in
// member order. They are https URLs if the members serve TLS.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i := range c.members {
		eps[i] = c.Endpoint(i)
	}
	return eps
}

// Endpoint returns the client URL of member i.
func (c *Cluster) Endpoint(i int) string {
	m := c.members[i]
	if m.front == nil {
		// A member in a network namespace of its own is reached at its own
		// address: the route to it is what CutClient cuts.
		return m.ClientURL.String()
	}
	return c.frontEndpoint(m.front.Endpoint())
}

// Front returns the proxy that clients reach member i through, to inject
// faults between them and that member alone (a member frozen, or cut off
// from its clients while its peers still reach it); nil for a member in a
// network namespace of its own.
func (c *Cluster) Front(i int) *faultproxy.Proxy { return c.members[i].front }

// DirectEndpoint returns the client URL of member i itself, not that of its
// front: for benchmarks, where the front's copying would be timed too.
// Stop does not reset connections made to it.
func (c *Cluster) DirectEndpoint(i int) string {
	return c.members[i].ClientURL.String()
}

// Client returns a new client for all endpoints of the cluster, with a
// DialTimeout of 5 s. It connects with TLS and presents the client
// certificate if the members serve TLS, and authenticates as root if they
// have auth enabled. The client does not log, and t.Cleanup closes it.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cfg := c.clientConfig(c.Endpoints())
	cfg.DialTimeout = dialTimeout
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop stops member i and keeps its data on disk for Restart. Stopping a
// member that is already stopped does nothing.
//
// Clients see what a killed process shows them: every connection is reset at
// once, and new ones are refused until Restart. Towards its peers the member
// shuts down the way etcd does on SIGTERM (the process backend sends it
// SIGTERM): a leader hands its leadership to a peer first. In process,
// closing a member of a multi-member cluster takes about a second, as embed
// waits that long for its peer connections to drain. A paused member is
// killed instead (SIGKILL), and never runs again: it hands nothing over.
func (c *Cluster) Stop(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.member(t, i).stop()
}

// Restart starts the stopped member i again with the same ports and data
// directory. It waits until the member serves requests, which in a
// multi-member cluster means it has rejoined the others.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(t, i)
	if m.srv != nil {
		t.Fatalf("etcdtest: restart of member %s, which is running", m.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	// The data directory holds a WAL, so etcd takes the membership from
	// disk and ignores the initial cluster; "existing" only documents that.
	if err := c.start(ctx, m, embed.ClusterStateFlagExisting); err != nil {
		t.Fatalf("etcdtest: restart member %s: %v", m.Name, err)
	}
	m.healFront()
}

// Wipe replaces a single-member cluster by a new, empty one on the same
// URLs: it stops the member, deletes its data and starts a fresh cluster
// with a new cluster ID and the revision back at 1, as if etcd had been
// replaced behind the same address. Wipe fails the test for clusters of
// more than one member.
//
// A cluster started with Auth gets its users and roles again, and enables
// auth, before any client can reach it. Beware that etcd's default "simple"
// tokens carry the raft index they were issued at, and that etcd holds a
// request with a token until it has applied that index: a client that
// logged in to the old cluster at a higher index than the new one has
// reached waits, request after request, until its context ends, as it
// would against a real etcd replaced by a fresh one.
func (c *Cluster) Wipe(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.members) != 1 {
		t.Fatalf("etcdtest: wipe of a %d-member cluster, need 1", len(c.members))
	}
	m := c.members[0]
	m.stop()
	if err := os.RemoveAll(m.Dir); err != nil {
		t.Fatalf("etcdtest: wipe member %s: %v", m.Name, err)
	}
	c.wipes++
	c.token = fmt.Sprintf("etcdtest-wipe-%d", c.wipes)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.start(ctx, m, embed.ClusterStateFlagNew); err != nil {
		t.Fatalf("etcdtest: wipe member %s: %v", m.Name, err)
	}
	// The users, roles and the auth switch were data like any other.
	if err := c.setUpAuth(ctx); err != nil {
		t.Fatalf("etcdtest: wipe member %s: set up auth: %v", m.Name, err)
	}
	m.healFront()
}

// RequireProcesses skips t unless the members run as processes
// (BIREGISTER_ETCD_BIN names an etcd binary), as Pause needs, or fails it
// if BIREGISTER_REQUIRE_NETNS is 1: make test-etcd34 sets it, so that a
// machine that cannot run such tests does not pass them silently.
func RequireProcesses(t testing.TB) {
	t.Helper()
	if os.Getenv(binEnv) == "" {
		netnsUnavailable(t, "pausing a member needs members that run as processes: set "+binEnv+" to an etcd binary")
	}
}

// Pause freezes member i with SIGSTOP until Resume: none of its threads
// run, so it answers neither its clients nor its peers, and its timers fire
// only once it resumes; yet the kernel keeps its connections open and takes
// in what is sent to it, so that it looks connected and silent, as a process
// stalled by its machine does. A raft leader paused loses its leadership to
// the others after an election timeout, and learns of it only once resumed.
// Pause needs the process backend (see RequireProcesses); pausing a paused
// member does nothing. Stop and the cleanup kill a paused member without
// letting it run again.
func (c *Cluster) Pause(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(t, i)
	p, ok := m.srv.(*process)
	if !ok {
		t.Fatalf("etcdtest: pause of member %s, which is not a running process (see RequireProcesses)", m.Name)
	}
	if err := p.signalPause(); err != nil {
		t.Fatalf("etcdtest: pause member %s: %v", m.Name, err)
	}
	m.paused = true
}

// Resume lets member i, paused by Pause, run again from where it stopped.
// Resuming a member that is not paused does nothing.
func (c *Cluster) Resume(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(t, i)
	if !m.paused {
		return
	}
	if err := m.srv.(*process).signalResume(); err != nil {
		t.Fatalf("etcdtest: resume member %s: %v", m.Name, err)
	}
	m.paused = false
}

func (c *Cluster) member(t testing.TB, i int) *member {
	t.Helper()
	if i < 0 || i >= len(c.members) {
		t.Fatalf("etcdtest: no member %d in a %d-member cluster", i, len(c.members))
	}
	return c.members[i]
}

// start starts member m and waits until it serves requests. Both backends
// take their settings from the same devetcd.Member, and wait for the same
// linearizable read, so they differ only in where etcd runs. The member's
// front stays as it was: the caller heals it once the member is set up.
func (c *Cluster) start(ctx context.Context, m *member, state string) error {
	peers := make([]devetcd.Member, len(c.members))
	for i, p := range c.members {
		peers[i] = p.Member
	}
	// The readiness check talks to the member directly, not through its
	// front, which lets nothing through while the member is down.
	ready := c.clientConfig([]string{m.ClientURL.String()})
	var srv server
	var err error
	if c.bin != "" {
		bin, args := c.bin, devetcd.Args(m.Member, peers, c.token, state)
		if m.netns != "" {
			// ip enters the namespace and then execs etcd in its own place,
			// so the child is etcd itself: Close's SIGTERM and the kill on
			// the test's death reach it.
			bin, args = ipCmd, append([]string{"netns", "exec", m.netns, bin}, args...)
		}
		srv, err = startProcess(ctx, bin, args, m.log, m.ClientURL, ready)
	} else {
		srv, err = devetcd.StartMemberWith(ctx, devetcd.Config(m.Member, peers, c.token, state), ready)
	}
	if err != nil {
		return err
	}
	m.srv = srv
	return nil
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Members are closed one by one, not concurrently: Close of a leader
	// hands leadership to a peer, which needs the peers to still be up.
	for _, m := range c.members {
		m.stop()
	}
}

func (m *member) stop() {
	if m.srv == nil {
		return
	}
	if m.front != nil {
		m.front.Cut()
	}
	if m.paused {
		// Resumed, it would act on what it believed before its pause for
		// a moment, as etcd-io/etcd#15247 shows: a frozen machine that is
		// rebooted never runs again.
		m.srv.(*process).Kill()
	} else {
		m.srv.Close()
	}
	m.srv = nil
	m.paused = false
}

// healFront lets clients through the member's front again, if it has one.
func (m *member) healFront() {
	if m.front != nil {
		m.front.Heal()
	}
}

func newClient(eps []string, dialTimeout time.Duration) (*clientv3.Client, error) {
	return devetcd.NewClient(eps, dialTimeout)
}

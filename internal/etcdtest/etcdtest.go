// Package etcdtest starts real etcd servers inside the test process.
//
// The servers are go.etcd.io/etcd/server/v3/embed instances listening on
// free loopback ports, so tests exercise the same gRPC protocol, leases,
// watches and failure modes as a production deployment without depending
// on an etcd binary being installed.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

	// readyTimeout bounds every wait for a member to start or to serve.
	// It is generous because -race on a busy CI machine is slow, and a
	// timeout only ever turns a hang into a clear failure.
	readyTimeout = 30 * time.Second

	// dialTimeout is the DialTimeout of clients handed out by Client.
	dialTimeout = 5 * time.Second
)

// Cluster is a set of embedded etcd members started for one test.
type Cluster struct {
	// mu serialises the lifecycle methods, so that a fault-injection
	// goroutine stopping a member cannot race the test's cleanup.
	mu      sync.Mutex
	members []*member
	// token is the initial cluster token. Member and cluster IDs are hashes
	// of the peer URLs and this token, so Wipe changes it to obtain a
	// cluster with a different ID on the same URLs.
	token string
	wipes int
}

type member struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL
	etcd      *embed.Etcd // nil while the member is stopped
}

// Start starts an etcd cluster of n members on free 127.0.0.1 ports, each
// member with its own data directory under t.TempDir(). It waits until the
// cluster has a leader and every member serves requests, and registers a
// t.Cleanup that stops every member. Start fails the test on error.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: cluster size %d, need at least 1", n)
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	c := &Cluster{token: "etcdtest"}
	root := t.TempDir()
	for i := 0; i < n; i++ {
		c.members = append(c.members, &member{
			name: fmt.Sprintf("m%d", i),
			// A directory that does not exist yet lets etcd create it with
			// the 0700 mode it insists on, instead of warning about the
			// mode of t.TempDir().
			dir:       filepath.Join(root, fmt.Sprintf("m%d", i)),
			clientURL: loopbackURL(ports[2*i]),
			peerURL:   loopbackURL(ports[2*i+1]),
		})
	}
	// Registered before anything runs so that members started before a
	// failure below are stopped as well.
	t.Cleanup(c.stopAll)

	// A member of a multi-member cluster does not become ready until a
	// quorum of its peers is up, so all members must start at once. Even
	// so, StartEtcd of a new member first asks each peer whether it is
	// bootstrapped already, and a peer whose port is open but not yet
	// served lets that ask run into a 1 s timeout: a 3-member cluster
	// takes about 2 s to start.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.etcd, errs[i] = embed.StartEtcd(c.config(m, embed.ClusterStateFlagNew))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("etcdtest: start: %v", err)
	}
	deadline := time.Now().Add(readyTimeout)
	for _, m := range c.members {
		if err := waitReady(m.etcd, deadline); err != nil {
			t.Fatalf("etcdtest: member %s: %v", m.name, err)
		}
	}
	for _, m := range c.members {
		if err := waitServing(m.clientURL.String(), deadline); err != nil {
			t.Fatalf("etcdtest: member %s: %v", m.name, err)
		}
	}
	return c
}

// Endpoints returns the client URLs of all members, running or not, in
// member order.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL.String()
	}
	return eps
}

// Endpoint returns the client URL of member i.
func (c *Cluster) Endpoint(i int) string {
	return c.members[i].clientURL.String()
}

// Client returns a new client for all endpoints of the cluster, with a
// DialTimeout of 5 s. The client does not log, and t.Cleanup closes it.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := newClient(c.Endpoints(), dialTimeout)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop stops member i and keeps its data on disk for Restart. Stopping a
// member that is already stopped does nothing.
//
// Stop closes the member the way etcd shuts down on SIGTERM: a leader hands
// its leadership to a peer first, so the cluster does not sit out an
// election timeout. Closing a member of a multi-member cluster takes about
// a second, as etcd waits that long for its peer connections to drain.
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
	if m.etcd != nil {
		t.Fatalf("etcdtest: restart of member %s, which is running", m.name)
	}
	// The data directory holds a WAL, so etcd takes the membership from
	// disk and ignores the initial cluster; "existing" only documents that.
	if err := c.start(m, embed.ClusterStateFlagExisting); err != nil {
		t.Fatalf("etcdtest: restart member %s: %v", m.name, err)
	}
}

// Wipe replaces a single-member cluster by a new, empty one on the same
// URLs: it stops the member, deletes its data and starts a fresh cluster
// with a new cluster ID and the revision back at 1, as if etcd had been
// replaced behind the same address. Wipe fails the test for clusters of
// more than one member.
func (c *Cluster) Wipe(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.members) != 1 {
		t.Fatalf("etcdtest: wipe of a %d-member cluster, need 1", len(c.members))
	}
	m := c.members[0]
	m.stop()
	if err := os.RemoveAll(m.dir); err != nil {
		t.Fatalf("etcdtest: wipe member %s: %v", m.name, err)
	}
	c.wipes++
	c.token = fmt.Sprintf("etcdtest-wipe-%d", c.wipes)
	if err := c.start(m, embed.ClusterStateFlagNew); err != nil {
		t.Fatalf("etcdtest: wipe member %s: %v", m.name, err)
	}
}

func (c *Cluster) member(t testing.TB, i int) *member {
	t.Helper()
	if i < 0 || i >= len(c.members) {
		t.Fatalf("etcdtest: no member %d in a %d-member cluster", i, len(c.members))
	}
	return c.members[i]
}

// start starts a single member and waits until it serves requests.
func (c *Cluster) start(m *member, state string) error {
	e, err := embed.StartEtcd(c.config(m, state))
	if err != nil {
		return err
	}
	m.etcd = e
	deadline := time.Now().Add(readyTimeout)
	if err := waitReady(e, deadline); err != nil {
		return err
	}
	return waitServing(m.clientURL.String(), deadline)
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
	if m.etcd == nil {
		return
	}
	m.etcd.Close()
	m.etcd = nil
}

func (c *Cluster) config(m *member, state string) *embed.Config {
	peers := make([]string, len(c.members))
	for i, p := range c.members {
		peers[i] = p.name + "=" + p.peerURL.String()
	}

	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = strings.Join(peers, ",")
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = state
	cfg.TickMs = tickMs
	cfg.ElectionMs = electionMs

	// Test output belongs to the test; a member's log is only noise there.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Nothing talks HTTP/JSON or scrapes metrics, and every extra listener
	// or loopback connection is one more thing to start and tear down.
	cfg.EnableGRPCGateway = false
	cfg.EnablePprof = false
	cfg.ListenMetricsUrls = nil
	return cfg
}

// waitReady waits until e has joined its cluster, or until it fails or the
// deadline passes.
func waitReady(e *embed.Etcd, deadline time.Time) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("failed before ready: %v", err)
	case <-e.Server.StopNotify():
		return errors.New("stopped before ready")
	case <-timer.C:
		return errors.New("not ready in time")
	}
}

// waitServing polls ep until a linearizable Get through it succeeds. Such a
// Get needs the member to know the current leader and to have applied the
// log up to the leader's commit index, which is a stronger promise than
// ReadyNotify after a restart.
func waitServing(ep string, deadline time.Time) error {
	cli, err := newClient([]string{ep}, 0)
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithDeadline(context.Background(), minTime(deadline, time.Now().Add(time.Second)))
		_, err := cli.Get(ctx, "etcdtest/ready")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving in time: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func newClient(eps []string, dialTimeout time.Duration) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
	})
}

func loopbackURL(port int) url.URL {
	return url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
}

// freePorts returns n distinct ports that were free on 127.0.0.1. All
// listeners stay open until every port is chosen, so the kernel cannot hand
// out the same port twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

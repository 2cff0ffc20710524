// This file runs the members of a cluster in network namespaces of their
// own, so that a test can cut the network between two members, or between
// itself and one member, while every other link keeps working.

package etcdtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/biregister/biregister/internal/devetcd"
)

const (
	// requireNetnsEnv names the environment variable that turns a skip of
	// StartIsolated, or of RequireProcesses, into a failure: CI sets it, so that a machine that
	// cannot run these tests does not pass them silently.
	requireNetnsEnv = "BIREGISTER_REQUIRE_NETNS"

	// ipCmd is iproute2's command, which sets the network up and runs each
	// member inside its namespace.
	ipCmd = "ip"

	// subnetPrefix and maxSlot delimit the addresses StartIsolated uses:
	// slot N is 10.213.N.0/24, a private range that exists only on a
	// bridge of this machine. The test's own address is .1, member i's is
	// .(i+2).
	subnetPrefix = "10.213."
	maxSlot      = 254

	// namePrefix begins the name of every namespace, link and lock file a
	// slot uses, so that leftovers of a run that died can be found by
	// name.
	namePrefix = "bireg"

	// clientPort and peerPort are the ports members listen on. Each member
	// has an address of its own, so they need not be free ports.
	clientPort = 2379
	peerPort   = 2380
)

// network is the bridge, the namespaces and the cuts of a cluster made by
// StartIsolated. Cluster.mu guards it.
type network struct {
	slot int
	// peerCuts holds the pairs of members {i, j}, i < j, cut from each
	// other; clientCuts the members cut from the test.
	peerCuts   map[[2]int]bool
	clientCuts map[int]bool
}

// StartIsolated starts an etcd cluster of n members as Start does, but each
// member is an etcd process (the binary that BIREGISTER_ETCD_BIN names) in
// a network namespace of its own. The namespaces hang off a bridge in the
// test's namespace, on a private /24 that no packet leaves the machine
// from, and the members listen on their bridge addresses only. That is what
// lets IsolateFromPeers cut a member off from its peers while clients still
// reach it, which no proxy in front of the peer URLs can do: each member
// dials its peers' advertised URLs itself.
//
// It needs Linux, root, iproute2's ip and BIREGISTER_ETCD_BIN; without them
// it skips the test, or fails it if BIREGISTER_REQUIRE_NETNS is 1. The
// cluster serves plain gRPC; Endpoint returns the members' own addresses,
// with no front proxy, so Stop is seen by clients as the process closing
// its connections. t.Cleanup removes every namespace, link, route and
// process it made, also after a failure half-way, and StartIsolated
// removes those that a test process which died left behind.
func StartIsolated(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: cluster size %d, need at least 1", n)
	}
	bin := netnsSupport(t)
	nw := newNetwork(t, n)
	c := &Cluster{bin: bin, token: "etcdtest", opts: Options{Members: n}, net: nw}
	root := t.TempDir()
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		addr := nw.memberAddr(i)
		c.members = append(c.members, &member{
			Member: devetcd.Member{
				Name:      name,
				Dir:       filepath.Join(dir, "data"), // see StartWith
				ClientURL: url.URL{Scheme: "http", Host: addr + ":" + strconv.Itoa(clientPort)},
				PeerURL:   url.URL{Scheme: "http", Host: addr + ":" + strconv.Itoa(peerPort)},
			},
			log:   filepath.Join(dir, "etcd.log"),
			netns: nw.namespace(i),
		})
	}
	t.Cleanup(c.stopAll)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.startMembers(ctx); err != nil {
		t.Fatalf("etcdtest: start: %v", err)
	}
	// Runs before stopAll: a leader stopped while cut off from its peers
	// could not hand over its leadership, and clients cut off from a member
	// would not see it close their connections.
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := nw.healAll(); err != nil {
			t.Errorf("etcdtest: %v", err)
		}
	})
	return c
}

// IsolateFromPeers cuts member i off from every other member, both ways,
// until HealPeers: packets between them are dropped, nothing is reset, as
// in a partition. Clients still reach member i, and it still answers them
// with what it knows. The cluster must come from StartIsolated.
func (c *Cluster) IsolateFromPeers(t testing.TB, i int) {
	t.Helper()
	c.changeNetwork(t, i, "isolate member", func(nw *network) error { return eachPeer(len(c.members), i, nw.cutPeers) })
}

// HealPeers undoes IsolateFromPeers: member i reaches every other member
// again, and they reach it.
func (c *Cluster) HealPeers(t testing.TB, i int) {
	t.Helper()
	c.changeNetwork(t, i, "heal member", func(nw *network) error { return eachPeer(len(c.members), i, nw.healPeers) })
}

// CutClient cuts the test off from member i until HealClient: packets
// between the test's namespace and the member are dropped, so connections
// already open hang, and new ones fail at once (connect sees the route is
// a blackhole). The member keeps its peers. The cluster must come from
// StartIsolated.
func (c *Cluster) CutClient(t testing.TB, i int) {
	t.Helper()
	c.changeNetwork(t, i, "cut client from member", func(nw *network) error { return nw.cutClient(i) })
}

// HealClient undoes CutClient.
func (c *Cluster) HealClient(t testing.TB, i int) {
	t.Helper()
	c.changeNetwork(t, i, "heal client of member", func(nw *network) error { return nw.healClient(i) })
}

// changeNetwork makes change to the network of member i, which must exist,
// under the cluster's lock, and fails t with what if it cannot.
func (c *Cluster) changeNetwork(t testing.TB, i int, what string, change func(nw *network) error) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	nw := c.network(t)
	c.member(t, i)
	if err := change(nw); err != nil {
		t.Fatalf("etcdtest: %s %d: %v", what, i, err)
	}
}

func (c *Cluster) network(t testing.TB) *network {
	t.Helper()
	if c.net == nil {
		t.Fatalf("etcdtest: the cluster was not started by StartIsolated")
	}
	return c.net
}

// netnsSupport returns the etcd binary to run members with, or skips or
// fails t if this machine cannot run them in namespaces.
func netnsSupport(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(binEnv)
	var missing string
	switch {
	case runtime.GOOS != "linux":
		missing = "network namespaces need Linux"
	case bin == "":
		missing = "members in network namespaces run as processes: set " + binEnv + " to an etcd binary"
	case os.Geteuid() != 0:
		missing = "setting up network namespaces needs root"
	default:
		if _, err := exec.LookPath(ipCmd); err != nil {
			missing = "setting up network namespaces needs iproute2's ip: " + err.Error()
		}
	}
	if missing != "" {
		netnsUnavailable(t, missing)
	}
	return bin
}

// netnsUnavailable skips t for reason, unless requireNetnsEnv forbids it.
func netnsUnavailable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(requireNetnsEnv) == "1" {
		t.Fatalf("etcdtest: %s (%s=1: this test must run here)", reason, requireNetnsEnv)
	}
	t.Skipf("etcdtest: %s (%s=1 makes this a failure)", reason, requireNetnsEnv)
}

// newNetwork claims a free slot and sets up its bridge and n namespaces,
// each with a veth into the bridge. Every step's undoing is registered
// before the step runs.
func newNetwork(t testing.TB, n int) *network {
	t.Helper()
	nw := &network{peerCuts: map[[2]int]bool{}, clientCuts: map[int]bool{}}
	var release func()
	nw.slot, release = claimSlot(t)
	t.Cleanup(release)
	// tearDown removes whatever exists under the slot's names, so it
	// undoes a set-up that stopped anywhere.
	t.Cleanup(func() {
		if err := tearDown(nw.slot); err != nil {
			t.Errorf("etcdtest: %v", err)
		}
	})
	// The bridge does not hand its frames to the host's iptables: a
	// firewall that drops forwarded packets would otherwise keep the
	// members apart.
	br := nw.bridge()
	steps := [][]string{
		{"link", "add", br, "type", "bridge", "nf_call_iptables", "0"},
		{"addr", "add", nw.hostAddr() + "/24", "dev", br},
		{"link", "set", br, "up"},
	}
	for i := range n {
		ns, veth, inside := nw.namespace(i), nw.veth(i), nw.veth(i)+"p"
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"link", "add", veth, "type", "veth", "peer", "name", inside, "netns", ns},
			[]string{"link", "set", veth, "master", br, "up"},
			[]string{"-n", ns, "addr", "add", nw.memberAddr(i) + "/24", "dev", inside},
			[]string{"-n", ns, "link", "set", inside, "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
		)
	}
	for i, step := range steps {
		if err := ip(step...); err != nil {
			if i == 0 {
				// The first step tells whether this machine lets us set up
				// networks at all (a container may not).
				netnsUnavailable(t, "cannot set up a network: "+err.Error())
			}
			t.Fatalf("etcdtest: set up network: %v", err)
		}
	}
	return nw
}

// claimSlot returns the first slot that no live test process holds, with
// the function that releases it. A slot is held by an exclusive lock on a
// file: the kernel releases it when its holder dies, so whatever is left
// under a slot's names once the lock is taken is a dead run's, and is
// removed. A slot whose addresses something else on the machine uses is
// passed over.
func claimSlot(t testing.TB) (int, func()) {
	t.Helper()
	for slot := 1; slot <= maxSlot; slot++ {
		lock := filepath.Join(os.TempDir(), fmt.Sprintf("%s-netns-%d.lock", namePrefix, slot))
		release, ok, err := tryLock(lock)
		if err != nil {
			t.Fatalf("etcdtest: lock %s: %v", lock, err)
		}
		if !ok {
			continue
		}
		if err := tearDown(slot); err != nil {
			release()
			t.Fatalf("etcdtest: remove what an earlier run left in slot %d: %v", slot, err)
		}
		if used, err := subnetUsed(slot); err != nil || used {
			release()
			if err != nil {
				t.Fatalf("etcdtest: %v", err)
			}
			continue
		}
		return slot, release
	}
	t.Fatalf("etcdtest: no free subnet in %s1..%d.0/24", subnetPrefix, maxSlot)
	return 0, nil
}

// subnetUsed reports whether the test's namespace has an address or a
// route in the slot's subnet: then a network we did not make uses it.
func subnetUsed(slot int) (bool, error) {
	subnet := fmt.Sprintf("%s%d.0/24", subnetPrefix, slot)
	for _, args := range [][]string{
		{"-4", "-o", "addr", "show", "to", subnet},
		{"-4", "route", "show", "table", "all", "root", subnet},
	} {
		out, err := ipOutput(args...)
		if err != nil {
			return false, err
		}
		if strings.TrimSpace(out) != "" {
			return true, nil
		}
	}
	return false, nil
}

// tearDown removes every process, namespace, link and route under the
// names and in the subnet of slot, whoever made them, and reports what it
// could not remove.
func tearDown(slot int) error {
	prefix := fmt.Sprintf("%s%d-", namePrefix, slot)
	var failed []string
	out, err := ipOutput("netns", "list")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		// Lines read "name" or "name (id: 3)".
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], prefix) {
			continue
		}
		ns := fields[0]
		// Members normally die with the process that started them; one
		// that survived a kill -9 of its test would keep the namespace's
		// addresses in use.
		pids, _ := ipOutput("netns", "pids", ns)
		for _, pid := range strings.Fields(pids) {
			if p, err := strconv.Atoi(pid); err == nil {
				if proc, err := os.FindProcess(p); err == nil {
					proc.Kill()
				}
			}
		}
		// Deleting a namespace deletes the veth ends in it, and so their
		// peers in the bridge.
		if err := ip("netns", "delete", ns); err != nil {
			failed = append(failed, err.Error())
		}
	}
	out, err = ipOutput("-o", "link", "show")
	if err != nil {
		return err
	}
	bridge := fmt.Sprintf("%s%d", namePrefix, slot)
	for _, line := range strings.Split(out, "\n") {
		// Lines read "7: name@peer: <...> ..." or "7: name: <...> ...".
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(fields[1], ":"), "@")
		if name == bridge || strings.HasPrefix(name, prefix) {
			// A veth goes away by itself, a moment after its peer's
			// namespace was deleted.
			if err := ip("link", "delete", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				failed = append(failed, err.Error())
			}
		}
	}
	// Blackhole routes belong to no link, so they outlive the bridge.
	out, err = ipOutput("-4", "route", "show", "type", "blackhole", "root", fmt.Sprintf("%s%d.0/24", subnetPrefix, slot))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		// Lines read "blackhole 10.213.1.3".
		if fields := strings.Fields(line); len(fields) >= 2 {
			if err := ip("route", "delete", "blackhole", fields[1]); err != nil {
				failed = append(failed, err.Error())
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("tear down network slot %d: %s", slot, strings.Join(failed, "; "))
	}
	return nil
}

func (nw *network) bridge() string         { return fmt.Sprintf("%s%d", namePrefix, nw.slot) }
func (nw *network) namespace(i int) string { return fmt.Sprintf("%s%d-m%d", namePrefix, nw.slot, i) }
func (nw *network) veth(i int) string      { return fmt.Sprintf("%s%d-%d", namePrefix, nw.slot, i) }
func (nw *network) hostAddr() string       { return fmt.Sprintf("%s%d.1", subnetPrefix, nw.slot) }
func (nw *network) memberAddr(i int) string {
	return fmt.Sprintf("%s%d.%d", subnetPrefix, nw.slot, i+2)
}

// eachPeer calls link for member i and every other of n members, and
// stops at the first error.
func eachPeer(n, i int, link func(i, j int) error) error {
	for j := range n {
		if j != i {
			if err := link(i, j); err != nil {
				return err
			}
		}
	}
	return nil
}

// cutPeers drops the packets between members i and j: each one's route to
// the other is a blackhole, so neither side's packets leave.
func (nw *network) cutPeers(i, j int) error {
	pair := [2]int{min(i, j), max(i, j)}
	if nw.peerCuts[pair] {
		return nil
	}
	if err := ip("-n", nw.namespace(i), "route", "add", "blackhole", nw.memberAddr(j)+"/32"); err != nil {
		return err
	}
	// Recorded once half done, so that healing undoes that half too.
	nw.peerCuts[pair] = true
	return ip("-n", nw.namespace(j), "route", "add", "blackhole", nw.memberAddr(i)+"/32")
}

func (nw *network) healPeers(i, j int) error {
	pair := [2]int{min(i, j), max(i, j)}
	if !nw.peerCuts[pair] {
		return nil
	}
	err1 := deleteBlackhole(nw.namespace(i), nw.memberAddr(j))
	err2 := deleteBlackhole(nw.namespace(j), nw.memberAddr(i))
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%v; %v", err1, err2)
	}
	delete(nw.peerCuts, pair)
	return nil
}

// cutClient drops the packets between the test's namespace and member i.
// The route in the test's namespace is enough: the member's packets still
// arrive, but nothing the test sends, answers included, leaves.
func (nw *network) cutClient(i int) error {
	if nw.clientCuts[i] {
		return nil
	}
	if err := ip("route", "add", "blackhole", nw.memberAddr(i)+"/32"); err != nil {
		return err
	}
	nw.clientCuts[i] = true
	return nil
}

func (nw *network) healClient(i int) error {
	if !nw.clientCuts[i] {
		return nil
	}
	if err := deleteBlackhole("", nw.memberAddr(i)); err != nil {
		return err
	}
	delete(nw.clientCuts, i)
	return nil
}

// healAll removes every cut.
func (nw *network) healAll() error {
	var failed []string
	for pair := range nw.peerCuts {
		if err := nw.healPeers(pair[0], pair[1]); err != nil {
			failed = append(failed, err.Error())
		}
	}
	for i := range nw.clientCuts {
		if err := nw.healClient(i); err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("heal network: %s", strings.Join(failed, "; "))
	}
	return nil
}

// deleteBlackhole deletes the blackhole route to addr in namespace ns, or
// in the test's own if ns is "". A route that is not there is no error:
// a cut may have stopped half-way.
func deleteBlackhole(ns, addr string) error {
	var args []string
	if ns != "" {
		args = []string{"-n", ns}
	}
	err := ip(append(args, "route", "delete", "blackhole", addr+"/32")...)
	if err != nil && strings.Contains(err.Error(), "No such process") {
		return nil
	}
	return err
}

// ip runs iproute2's ip with args.
func ip(args ...string) error {
	_, err := ipOutput(args...)
	return err
}

// ipOutput runs iproute2's ip with args and returns its output; an error
// quotes the command and what it printed.
func ipOutput(args ...string) (string, error) {
	out, err := exec.Command(ipCmd, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

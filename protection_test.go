package biregister_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/metertest"
)

// outsideGroup is a group of members put from outside, each on a lease of
// its own (ttl 60, kept by nothing: the test revokes them).
type outsideGroup struct {
	cli    *clientv3.Client
	prefix string
	leases map[string]clientv3.LeaseID // by name: m000, m001, …
}

// newOutsideGroup puts n members under prefix through cli.
func newOutsideGroup(t *testing.T, cli *clientv3.Client, prefix string, n int) *outsideGroup {
	t.Helper()
	g := &outsideGroup{cli: cli, prefix: prefix, leases: make(map[string]clientv3.LeaseID, n)}
	for i := range n {
		name := fmt.Sprintf("m%03d", i)
		lease, err := cli.Grant(context.Background(), 60)
		require.NoError(t, err)
		_, err = cli.Put(context.Background(), prefix+name, "127.0.0.1:"+fmt.Sprint(10000+i), clientv3.WithLease(lease.ID))
		require.NoError(t, err)
		g.leases[name] = lease.ID
	}
	return g
}

// watch starts a Watcher of g with opts, through endpoints, and takes the
// PUTs it starts with.
func (g *outsideGroup) watch(t *testing.T, endpoints []string, opts ...biregister.Option) biregister.Watcher {
	t.Helper()
	w := startWatcher(t, endpoints, g.prefix, opts...)
	drain(t, w, len(g.leases))
	return w
}

// revoke revokes the leases of names, one after the other, and returns
// the last answer.
func (g *outsideGroup) revoke(t *testing.T, names ...string) *clientv3.LeaseRevokeResponse {
	t.Helper()
	var last *clientv3.LeaseRevokeResponse
	for _, name := range names {
		var err error
		last, err = g.cli.Revoke(context.Background(), g.leases[name])
		require.NoError(t, err)
	}
	return last
}

// suspectNames returns the names of the suspects w's view holds, sorted.
func suspectNames(w biregister.Watcher) []string {
	var names []string
	for m := range w.View().Suspects() {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	return names
}

// deletesOf receives changes until it has a DELETE of each of names, and
// returns those DELETEs by name.
func deletesOf(t *testing.T, w biregister.Watcher, names ...string) map[string]biregister.Change {
	t.Helper()
	got := map[string]biregister.Change{}
	for len(got) < len(names) {
		c := recv(t, w.Changes())
		if c.Op == biregister.OpDelete && slices.Contains(names, c.Name) {
			got[c.Name] = c
		}
	}
	return got
}

// drain receives the n PUTs a watcher starts with.
func drain(t *testing.T, w biregister.Watcher, n int) {
	t.Helper()
	for range n {
		require.Equal(t, biregister.OpPut, recv(t, w.Changes()).Op)
	}
}

// TestGracefulLeaveTold: a Close and a Resign are graceful leaves, told
// apart from a lease revoked or a key deleted from outside, and leave no
// marker behind.
func TestGracefulLeaveTold(t *testing.T) {
	c := startEtcd(t)
	const prefix = "/graceful/"
	cli := c.Client(t)
	regs := map[string]biregister.Register{}
	for _, name := range []string{"closed", "resigned", "revoked", "deleted"} {
		r, err := biregister.NewRegister(c.Endpoints(), prefix, name, "v", 5)
		require.NoError(t, err)
		t.Cleanup(r.Close)
		regs[name] = r
	}
	// A member whose key and marker go in one revoke: etcd deletes the
	// marker first (it deletes a lease's keys in key order).
	lease, err := cli.Grant(context.Background(), 60)
	require.NoError(t, err)
	marked, err := cli.Put(context.Background(), prefix+"marked", "v", clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	_, err = cli.Put(context.Background(), prefix+".leaving/marked", fmt.Sprint(marked.Header.Revision), clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	w := startWatcher(t, c.Endpoints(), prefix, biregister.WithoutProtection())
	drain(t, w, 5)

	regs["closed"].Close()
	require.NoError(t, regs["resigned"].Resign(context.Background()))
	_, err = cli.Revoke(context.Background(), lease.ID)
	require.NoError(t, err)
	got, err := cli.Get(context.Background(), regs["revoked"].MyKey())
	require.NoError(t, err)
	_, err = cli.Revoke(context.Background(), clientv3.LeaseID(got.Kvs[0].Lease))
	require.NoError(t, err)
	_, err = cli.Delete(context.Background(), regs["deleted"].MyKey())
	require.NoError(t, err)

	deletes := deletesOf(t, w, "closed", "resigned", "revoked", "deleted", "marked")
	require.True(t, deletes["closed"].Left, "Close")
	require.True(t, deletes["marked"].Left, "marker deleted first")
	require.True(t, deletes["resigned"].Left, "Resign")
	require.False(t, deletes["revoked"].Left, "lease revoked from outside")
	require.False(t, deletes["deleted"].Left, "key deleted from outside")

	// The markers go: Close's with its lease, Resign's once it is back.
	require.Eventually(t, func() bool {
		left, err := cli.Get(context.Background(), prefix+".leaving/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && left.Count == 0
	}, waitFor, 10*time.Millisecond)
	// The lost register again; the markers were never members.
	require.Eventually(t, func() bool {
		return slices.Equal([]string{"deleted", "resigned", "revoked"}, slices.Sorted(maps.Keys(w.GetAll())))
	}, waitFor, 10*time.Millisecond)
}

// TestProtectionHoldsMassLoss: most of a group lost within the window turns
// protection on; the members lost stay suspects until their names register
// again, or until the hold ends, and the cache applies every DELETE at once.
func TestProtectionHoldsMassLoss(t *testing.T) {
	c := startEtcd(t)
	const prefix = "/massloss/"
	cli := c.Client(t)
	g := newOutsideGroup(t, cli, prefix, 10)
	m := metertest.New(t)
	w := g.watch(t, c.Endpoints(), biregister.WithMeterProvider(m.Provider), biregister.WithProtection(biregister.Protection{
		Window: time.Minute, Settle: time.Minute, Hold: time.Minute,
	}))

	lost := []string{"m000", "m001", "m002", "m003", "m004", "m005"}
	g.revoke(t, lost...)
	deletes := deletesOf(t, w, lost...)
	for _, name := range lost {
		require.True(t, deletes[name].Suspect, name)
		require.False(t, deletes[name].Left, name)
	}
	require.Len(t, w.GetAll(), 4, "the cache applies every DELETE")
	require.Equal(t, lost, suspectNames(w))
	st := w.Status()
	require.False(t, st.Protected.IsZero(), "protection on")
	require.Equal(t, 6, st.Suspects)
	require.EqualValues(t, 1, st.Protections)
	require.EqualValues(t, 6, m.Value(t, "biregister.suspects", inGroup(prefix)))
	require.EqualValues(t, 1, m.Value(t, "biregister.protections", inGroup(prefix)))
	leader, _ := w.GetLeader()
	require.Equal(t, "m006", leader, "a suspect never leads")

	// Back under its name, a suspect is released.
	_, err := cli.Put(context.Background(), prefix+"m000", "127.0.0.1:20000")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(suspectNames(w)) == 5 }, waitFor, 5*time.Millisecond)
	require.NotContains(t, suspectNames(w), "m000")
}

// TestProtectionHoldIsBounded: a suspect is released when its hold ends,
// though its name never registers again, and protection turns off once
// the window has passed.
func TestProtectionHoldIsBounded(t *testing.T) {
	c := startEtcd(t)
	const prefix = "/bounded/"
	cli := c.Client(t)
	g := newOutsideGroup(t, cli, prefix, 4)
	w := g.watch(t, c.Endpoints(), biregister.WithProtection(biregister.Protection{
		Window: 300 * time.Millisecond, Settle: 100 * time.Millisecond, Hold: 500 * time.Millisecond,
	}))
	g.revoke(t, "m000", "m001", "m002")
	for name, d := range deletesOf(t, w, "m000", "m001", "m002") {
		require.True(t, d.Suspect, name)
	}
	require.Eventually(t, func() bool { return w.Status().Suspects == 0 }, waitFor, 5*time.Millisecond)
	require.Eventually(t, func() bool { return w.Status().Protected.IsZero() }, waitFor, 5*time.Millisecond)
	require.EqualValues(t, 1, w.Status().Protections)
}

// TestProtectionBelowThreshold: one loss of ten settles, and goes; a group
// of two is never protected; WithoutProtection holds nothing.
func TestProtectionBelowThreshold(t *testing.T) {
	c := startEtcd(t)
	cli := c.Client(t)
	settle := biregister.WithProtection(biregister.Protection{Settle: 200 * time.Millisecond})
	for _, tc := range []struct {
		name        string
		members     int
		lose        int
		opt         biregister.Option
		wantSuspect bool
	}{
		{name: "one of ten", members: 10, lose: 1, opt: settle, wantSuspect: true},
		{name: "one of two", members: 2, lose: 1, opt: settle},
		{name: "off", members: 10, lose: 9, opt: biregister.WithoutProtection()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "/below/" + tc.name + "/"
			g := newOutsideGroup(t, cli, prefix, tc.members)
			w := g.watch(t, c.Endpoints(), tc.opt)
			var lost []string
			for i := range tc.lose {
				lost = append(lost, fmt.Sprintf("m%03d", i))
			}
			g.revoke(t, lost...)
			for name, d := range deletesOf(t, w, lost...) {
				require.Equal(t, tc.wantSuspect, d.Suspect, name)
			}
			require.Eventually(t, func() bool { return w.Status().Suspects == 0 }, waitFor, 5*time.Millisecond)
			require.Zero(t, w.Status().Protections)
		})
	}
}

// TestProtectionIgnoresGracefulLeaves: a scale-down from ten to two by
// Close never turns protection on, nor holds anyone.
func TestProtectionIgnoresGracefulLeaves(t *testing.T) {
	c := startEtcd(t)
	const prefix = "/scaledown/"
	var regs []biregister.Register
	for i := range 10 {
		regs = append(regs, startRegister(t, c.Endpoints(), prefix, fmt.Sprintf("m%d", i), fmt.Sprintf("127.0.0.1:%d", 10000+i), 5))
	}
	w := startWatcher(t, c.Endpoints(), prefix)
	drain(t, w, 10)
	for _, r := range regs[2:] {
		r.Close()
	}
	for range 8 {
		c := recv(t, w.Changes())
		require.Equal(t, biregister.OpDelete, c.Op)
		require.True(t, c.Left, c.Name)
		require.False(t, c.Suspect, c.Name)
	}
	st := w.Status()
	require.Zero(t, st.Suspects)
	require.Zero(t, st.Protections)
	require.Equal(t, 2, st.Members)
}

// TestProtectionInvalid: out-of-range settings are refused.
func TestProtectionInvalid(t *testing.T) {
	for _, p := range []biregister.Protection{
		{Threshold: -0.1}, {Threshold: 1.5}, {MinMembers: -1},
		{Window: -time.Second}, {Settle: -time.Second}, {Hold: -time.Second},
		{Settle: 2 * time.Second, Hold: time.Second},
	} {
		_, err := biregister.NewWatcher([]string{"127.0.0.1:1"}, "/invalid/", 1, biregister.WithProtection(p))
		require.ErrorIs(t, err, biregister.ErrInvalidArgument, "%+v", p)
	}
}

// TestProtectionAcrossListing: losses a Watcher learns of by listing the
// group again (its watch cut while they happened, the history compacted)
// are weighed like those it watches, even when nobody reads its Changes
// and its buffer is full.
func TestProtectionAcrossListing(t *testing.T) {
	etcd := startEtcd(t)
	const prefix = "/relisted/"
	cli := etcd.Client(t)
	g := newOutsideGroup(t, cli, prefix, 10)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	w := startWatcher(t, []string{proxy.Endpoint()}, prefix, biregister.WithBufferSize(1),
		biregister.WithProtection(biregister.Protection{Hold: time.Minute}))
	listings := w.Status().Listings

	proxy.Cut()
	lost := []string{"m000", "m001", "m002", "m003", "m004", "m005"}
	last := g.revoke(t, lost...)
	_, err := cli.Compact(context.Background(), last.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	proxy.Heal()

	require.Eventually(t, func() bool { return w.Status().Members == 4 }, waitFor, 5*time.Millisecond)
	st := w.Status()
	require.Greater(t, st.Listings, listings, "listed again")
	require.Equal(t, 6, st.Suspects)
	require.False(t, st.Protected.IsZero())
	require.Equal(t, lost, suspectNames(w))
}

// quickSettling starts etcd, a group of ten under prefix and a Watcher of
// it whose losses settle in 50 ms, and are held for a minute under
// protection.
func quickSettling(t *testing.T, prefix string) (*outsideGroup, biregister.Watcher) {
	t.Helper()
	c := startEtcd(t)
	g := newOutsideGroup(t, c.Client(t), prefix, 10)
	return g, g.watch(t, c.Endpoints(), biregister.WithProtection(biregister.Protection{
		Window: time.Minute, Settle: 50 * time.Millisecond, Hold: time.Minute,
	}))
}

// TestProtectionHoldsWhatSettledBefore: a loss that settled out before the
// threshold was crossed is held again when protection turns on: it was
// lost with the others.
func TestProtectionHoldsWhatSettledBefore(t *testing.T) {
	g, w := quickSettling(t, "/settledbefore/")
	g.revoke(t, "m000")
	require.True(t, deletesOf(t, w, "m000")["m000"].Suspect)
	require.Eventually(t, func() bool { return w.Status().Suspects == 0 }, waitFor, 5*time.Millisecond, "settled out")

	lost := []string{"m000", "m001", "m002", "m003", "m004", "m005"}
	g.revoke(t, lost[1:]...)
	deletesOf(t, w, lost[1:]...)
	require.False(t, w.Status().Protected.IsZero())
	require.Equal(t, lost, suspectNames(w))
}

// TestProtectionLastsItsWindow: protection stays on until a whole window
// passed without a loss, though the group grew back meanwhile, and holds
// the losses that come meanwhile.
func TestProtectionLastsItsWindow(t *testing.T) {
	g, w := quickSettling(t, "/lasts/")
	lost := []string{"m000", "m001", "m002", "m003", "m004", "m005"}
	g.revoke(t, lost...)
	deletesOf(t, w, lost...)
	require.False(t, w.Status().Protected.IsZero())

	// Back, and four more: six losses are no longer half of the group.
	for _, name := range append(lost, "n1", "n2", "n3", "n4") {
		_, err := g.cli.Put(context.Background(), g.prefix+name, "127.0.0.1:1")
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return w.Status().Members == 14 }, waitFor, 5*time.Millisecond)
	require.Zero(t, w.Status().Suspects, "released by their return")
	require.False(t, w.Status().Protected.IsZero(), "on until a window without a loss")

	g.revoke(t, "m006")
	require.True(t, deletesOf(t, w, "m006")["m006"].Suspect)
	require.EqualValues(t, 1, w.Status().Protections)
}

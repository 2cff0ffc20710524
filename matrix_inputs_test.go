package biregister_test

// The matrix's inputs: every constructor and request with its arguments at
// their extremes.

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
)

// Values etcd refuses: over its request limit (1.5 MiB), and over the
// client's own limit on what it sends (2 MiB).
var (
	overEtcdLimit   = strings.Repeat("e", 1600<<10)
	overClientLimit = strings.Repeat("c", 3<<20)
)

// Arguments the library cannot use are refused with ErrInvalidArgument, by
// every constructor, at once (before any request to etcd), and leave
// nothing behind in etcd or in the process.
func TestMatrixInvalidArguments(t *testing.T) {
	etcd := startEtcd(t)
	eps := etcd.Endpoints()
	cli := etcd.Client(t)
	register := func(name string, ttl int64, endpoints []string, prefix, member string, opts []biregister.Option) func() error {
		return func() error {
			var r biregister.Register
			var err error
			if name == "NewRegister" {
				r, err = biregister.NewRegister(endpoints, prefix, member, "v", ttl, opts...)
			} else {
				r, err = biregister.NewRegisterNoName(endpoints, prefix, "v", ttl, opts...)
			}
			if err == nil {
				r.Close()
			}
			return err
		}
	}
	for _, tc := range []struct {
		name      string
		endpoints []string
		prefix    string
		member    string // NewRegister's name
		ttl       int64
		opts      []biregister.Option
		nameOnly  bool // only NewRegister takes a name
	}{
		{name: "no endpoints", prefix: "/p", member: "a", ttl: matrixTTL},
		{name: "empty endpoint list", endpoints: []string{}, prefix: "/p", member: "a", ttl: matrixTTL},
		{name: "empty endpoint", endpoints: []string{""}, prefix: "/p", member: "a", ttl: matrixTTL},
		{name: "blank endpoint among good ones", endpoints: []string{eps[0], " \t"}, prefix: "/p", member: "a", ttl: matrixTTL},
		{name: "empty prefix", endpoints: eps, member: "a", ttl: matrixTTL},
		{name: "empty name", endpoints: eps, prefix: "/p", ttl: matrixTTL, nameOnly: true},
		{name: "name with a slash", endpoints: eps, prefix: "/p", member: "a/b", ttl: matrixTTL, nameOnly: true},
		{name: "name a slash", endpoints: eps, prefix: "/p", member: "/", ttl: matrixTTL, nameOnly: true},
		{name: "name ending in a slash", endpoints: eps, prefix: "/p", member: "a/", ttl: matrixTTL, nameOnly: true},
		{name: "ttl 0", endpoints: eps, prefix: "/p", member: "a", ttl: 0},
		{name: "ttl -1", endpoints: eps, prefix: "/p", member: "a", ttl: -1},
		{name: "ttl MinInt64", endpoints: eps, prefix: "/p", member: "a", ttl: math.MinInt64},
		{name: "ttl beyond etcd's longest lease", endpoints: eps, prefix: "/p", member: "a", ttl: 9_000_000_001},
		{name: "ttl MaxInt64", endpoints: eps, prefix: "/p", member: "a", ttl: math.MaxInt64},
		{name: "buffer 0", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithBufferSize(0)}},
		{name: "buffer MinInt", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithBufferSize(math.MinInt)}},
		{name: "name wait -1ns", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithNameWait(-1)}},
		{name: "name wait MinInt64", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithNameWait(math.MinInt64)}},
		{name: "dial timeout 0", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithDialTimeout(0)}},
		{name: "dial timeout MinInt64", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithDialTimeout(math.MinInt64)}},
		{name: "auth without user", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithAuth("", "pw")}},
		{name: "auth without password", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithAuth("user", "")}},
		{name: "client with TLS", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithClient(cli), biregister.WithTLS(&tls.Config{})}},
		{name: "client with dial timeout", endpoints: eps, prefix: "/p", member: "a", ttl: matrixTTL, opts: []biregister.Option{biregister.WithClient(cli), biregister.WithDialTimeout(time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			constructors := map[string]func() error{
				"NewRegister": register("NewRegister", tc.ttl, tc.endpoints, tc.prefix, tc.member, tc.opts),
			}
			if !tc.nameOnly {
				constructors["NewRegisterNoName"] = register("NewRegisterNoName", tc.ttl, tc.endpoints, tc.prefix, "", tc.opts)
				constructors["NewWatcher"] = func() error {
					w, err := biregister.NewWatcher(tc.endpoints, tc.prefix, tc.ttl, tc.opts...)
					if err == nil {
						w.Close()
					}
					return err
				}
			}
			for what, construct := range constructors {
				require.ErrorIs(t, returnsWithin(t, what, readBound, construct), biregister.ErrInvalidArgument, what)
			}
		})
	}
	leases, err := cli.Leases(context.Background())
	require.NoError(t, err)
	require.Empty(t, leases.Leases, "a refused constructor left a lease behind")
	keys, err := cli.Get(context.Background(), "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, keys.Count, "a refused constructor left a key behind")
}

// Every input at its extreme that the library takes — names and values of
// control bytes or invalid UTF-8, an empty value, one just under etcd's
// request limit, prefixes of such bytes, the root prefix, the shortest and
// the longest ttl, the largest name wait and dial timeout, the smallest and
// largest buffer — registers, reads back byte for byte in the Register and
// in a Watcher, goes through SetValue (there and back), Resign and a term,
// and leaves at once on Close.
func TestMatrixInputs(t *testing.T) {
	etcd := startEtcd(t)
	eps := etcd.Endpoints()
	cli := etcd.Client(t)
	// A ttl of 1 s is kept alive for the whole test, which lasts several
	// of its ttls; a lapse would show as a new create revision.
	shortest := startRegister(t, eps, "/in-ttl1", "a", "v", 1)
	shortestRevision := shortest.MyRevision()
	for i, tc := range []struct {
		name   string
		member string
		value  string
		prefix string // "" for a prefix of the case's own
		ttl    int64
		opts   []biregister.Option
	}{
		{name: "name of control bytes", member: "\x00\x01\t\n\r\x1b[2J\x7f", value: "v", ttl: matrixTTL},
		{name: "name of invalid UTF-8", member: "\xff\xfe\xc3(\x80", value: "v", ttl: matrixTTL},
		{name: "name of dots", member: "..", value: "v", ttl: matrixTTL},
		{name: "name of the graceful-leave markers' directory", member: ".leaving", value: "v", ttl: matrixTTL},
		// Four times in SetValue's transaction and in the graceful
		// delete's (the marker's key holds it too).
		{name: "name of 300 KiB", member: strings.Repeat("n", 300<<10), value: "v", ttl: matrixTTL},
		{name: "empty value", member: "a", value: "", ttl: matrixTTL},
		{name: "value of control bytes", member: "a", value: "\x00\r\n\x1b[31m\x7f\u0085", ttl: matrixTTL},
		{name: "value of invalid UTF-8", member: "a", value: "\xc3\x28\xa0\xa1\xff", ttl: matrixTTL},
		{name: "value of 1.4 MiB", member: "a", value: strings.Repeat("b", 1400<<10), ttl: matrixTTL},
		{name: "prefix of control bytes", member: "a", value: "v", prefix: "/in\x00\x1b\n\x7f/", ttl: matrixTTL},
		{name: "prefix of invalid UTF-8", member: "a", value: "v", prefix: "/in\xff\xfe", ttl: matrixTTL},
		{name: "prefix without slashes", member: "a", value: "v", prefix: "in-plain", ttl: matrixTTL},
		{name: "ttl of etcd's longest lease", member: "a", value: "v", ttl: 9_000_000_000},
		{name: "name wait MaxInt64", member: "a", value: "v", ttl: matrixTTL, opts: []biregister.Option{biregister.WithNameWait(math.MaxInt64)}},
		{name: "dial timeout MaxInt64", member: "a", value: "v", ttl: matrixTTL, opts: []biregister.Option{biregister.WithDialTimeout(math.MaxInt64)}},
		{name: "buffer 1", member: "a", value: "v", ttl: matrixTTL, opts: []biregister.Option{biregister.WithBufferSize(1)}},
		{name: "buffer MaxInt", member: "a", value: "v", ttl: matrixTTL, opts: []biregister.Option{biregister.WithBufferSize(math.MaxInt)}},
		{name: "protection at its extremes", member: "a", value: "v", ttl: matrixTTL, opts: []biregister.Option{biregister.WithProtection(biregister.Protection{
			Threshold: 1, MinMembers: math.MaxInt, Window: math.MaxInt64, Settle: math.MaxInt64, Hold: math.MaxInt64})}},
		{name: "protection off", member: "a", value: "v", ttl: matrixTTL, opts: []biregister.Option{biregister.WithoutProtection()}},
		{name: "nil options", member: "a", value: "v", ttl: matrixTTL, opts: []biregister.Option{nil, biregister.WithLogger(nil), biregister.WithMeterProvider(nil), biregister.WithClient(nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := tc.prefix
			if prefix == "" {
				prefix = fmt.Sprintf("/in%d", i)
			}
			roundTrip(t, eps, cli, prefix, tc.member, tc.value, tc.ttl, tc.opts...)
		})
	}
	// The shortest ttl lasted. (etcd rounds what is left of a lease down
	// to whole seconds: 0 for a live lease of 1 s.)
	require.Equal(t, shortestRevision, shortest.MyRevision(), "the lease of ttl 1 lapsed")
	resp, err := cli.Get(context.Background(), shortest.MyKey())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, shortestRevision, resp.Kvs[0].CreateRevision)
	lease, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease), clientv3.WithAttachedKeys())
	require.NoError(t, err)
	require.GreaterOrEqual(t, lease.TTL, int64(0), "the lease of ttl 1 expired")
	require.Equal(t, [][]byte{[]byte(shortest.MyKey())}, lease.Keys)

	t.Run("name wait 0 on a taken name", func(t *testing.T) {
		err := returnsWithin(t, "NewRegister", readBound, func() error {
			_, err := biregister.NewRegister(eps, "/in-ttl1", "a", "v", matrixTTL, biregister.WithNameWait(0))
			return err
		})
		require.ErrorIs(t, err, biregister.ErrNameTaken)
	})

	// The root prefix makes every key of one level a member: it needs an
	// etcd of its own, holding nothing deeper.
	t.Run("prefix the root", func(t *testing.T) {
		root := etcdtest.Start(t, 1)
		roundTrip(t, root.Endpoints(), root.Client(t), "/", "a", "v", matrixTTL)
	})

	// Status.LastAnswer counts a Register's keepalives (README, Status):
	// in an idle group, before the first probe of the watch (5 s), only a
	// keepalive can move it.
	// LastAnswer is the watch's: it moves with a change of the group, and
	// not with a Register's keepalives, which another member may answer.
	t.Run("Status.LastAnswer counts the watch's answers", func(t *testing.T) {
		r := startRegister(t, eps, "/in-idle", "a", "v", 1)
		before := time.Now()
		if _, err := cli.Put(context.Background(), "/in-idle/b", "v"); err != nil {
			t.Fatal(err)
		}
		eventuallyWithin(t, readBound, "LastAnswer stayed before a watch response", func() string {
			if last := r.Status().LastAnswer; !last.After(before) {
				return fmt.Sprintf("LastAnswer %v before %v", last, before)
			}
			return ""
		})
	})
}

// roundTrip registers member with value under prefix, with ttl and opts,
// beside a Watcher, and checks every step: the name, key and value read
// back byte for byte, SetValue there and back, Resign, a term, a member
// without a name beside it, and Close, which takes the key away at once.
func roundTrip(t *testing.T, eps []string, cli *clientv3.Client, prefix, member, value string, ttl int64, opts ...biregister.Option) {
	t.Helper()
	// Bounds for a healthy etcd: a ttl of centuries bounds nothing.
	bound := time.Duration(min(ttl, 10)) * time.Second
	w := construct(t, "NewWatcher", bound+slack, func() (biregister.Watcher, error) {
		return biregister.NewWatcher(eps, prefix, ttl, opts...)
	})
	r := construct(t, "NewRegister", bound+slack, func() (biregister.Register, error) {
		return biregister.NewRegister(eps, prefix, member, value, ttl, opts...)
	})
	require.Equal(t, member, r.MyName())
	require.Equal(t, strings.TrimSuffix(prefix, "/")+"/"+member, r.MyKey())
	c := recv(t, w.Changes())
	require.Equal(t, biregister.Change{Op: biregister.OpPut, Name: member, Value: value, Revision: c.Revision}, c)
	checkRegistered(t, cli, r, []string{value}, w)
	checkReads(t, r)
	checkReads(t, w)

	ctx := context.Background()
	for _, v := range []string{"v2", value} {
		require.NoError(t, returnsWithin(t, "SetValue", requestBound(bound), func() error { return r.SetValue(ctx, v) }))
		checkRegistered(t, cli, r, []string{v}, w)
	}
	before := r.MyRevision()
	require.NoError(t, returnsWithin(t, "Resign", requestBound(bound), func() error { return r.Resign(ctx) }))
	require.Greater(t, r.MyRevision(), before)
	checkRegistered(t, cli, r, []string{value}, w)
	require.Equal(t, r.MyRevision(), waitTerm(t, r).Revision())

	noName := construct(t, "NewRegisterNoName", bound+slack, func() (biregister.Register, error) {
		return biregister.NewRegisterNoName(eps, prefix, value, ttl, opts...)
	})
	checkRegistered(t, cli, noName, []string{value}, w)
	for _, x := range []biregister.Register{r, noName} {
		returnsWithin(t, "Close", closeBound(bound), func() struct{} { x.Close(); return struct{}{} })
		resp, err := cli.Get(ctx, x.MyKey())
		require.NoError(t, err)
		require.Empty(t, resp.Kvs, "Close left the key in etcd")
	}
	eventually(t, "the Watcher still holds a closed member", func() string {
		if w.Status().Members != 0 || !sameAsEtcd(t, cli, w, w.Prefix()) {
			return fmt.Sprint(w.GetNames())
		}
		return ""
	})
}

// Contexts at their extremes — cancelled, a deadline passed, the largest
// deadline — given to every method that takes one. With an ended context
// each returns at once, with its result or ctx.Err(); with the largest
// deadline each returns when its work is done, or ErrClosed on Close; the
// Registers stay in their contract state throughout.
func TestMatrixContexts(t *testing.T) {
	etcd := startEtcd(t)
	eps := etcd.Endpoints()
	cli := etcd.Client(t)
	a := startRegister(t, eps, "/ctx", "a", "v", matrixTTL)
	b := startRegister(t, eps, "/ctx", "b", "v", matrixTTL)
	w := startWatcher(t, eps, "/ctx")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	passed, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		ended error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline passed", passed, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []biregister.Register{a, b} {
				endedOrNil := func(what string, err error) {
					t.Helper()
					if err != nil {
						require.ErrorIs(t, err, tc.ended, what)
					}
				}
				old := heldBy(t, cli, r).value
				endedOrNil("SetValue", returnsWithin(t, "SetValue", readBound, func() error { return r.SetValue(tc.ctx, tc.name) }))
				checkRegistered(t, cli, r, []string{old, tc.name}, w)
				endedOrNil("Resign", returnsWithin(t, "Resign", readBound, func() error { return r.Resign(tc.ctx) }))
				checkRegistered(t, cli, r, []string{old, tc.name}, w)

				err := returnsWithin(t, "WaitLeader", readBound, func() error { return r.WaitLeader(tc.ctx) })
				endedOrNil("WaitLeader", err)
				if err == nil {
					require.True(t, r.AmILeader(), "WaitLeader returned nil to a member that does not lead")
				}
				type waited struct {
					term *biregister.Term
					err  error
				}
				got := returnsWithin(t, "WaitTerm", readBound, func() waited {
					term, err := r.WaitTerm(tc.ctx)
					return waited{term, err}
				})
				endedOrNil("WaitTerm", got.err)
				if got.err == nil {
					require.Equal(t, r.MyRevision(), got.term.Revision())
				}
				err = returnsWithin(t, "Lead", readBound, func() error {
					return r.Lead(tc.ctx, func(term *biregister.Term) { <-term.Done() })
				})
				require.ErrorIs(t, err, tc.ended, "Lead")
			}
		})
	}

	t.Run("largest deadline", func(t *testing.T) {
		longest, cancel := context.WithTimeout(context.Background(), math.MaxInt64)
		defer cancel()
		leader, follower := a, b
		if b.AmILeader() {
			leader, follower = b, a
		}
		for _, r := range []biregister.Register{a, b} {
			require.NoError(t, returnsWithin(t, "SetValue", requestBound(matrixLease), func() error { return r.SetValue(longest, "longest") }))
			checkRegistered(t, cli, r, []string{"longest"}, w)
		}
		require.NoError(t, returnsWithin(t, "WaitLeader", readBound, func() error { return leader.WaitLeader(longest) }))
		term := returnsWithin(t, "WaitTerm", readBound, func() *biregister.Term {
			term, _ := leader.WaitTerm(longest)
			return term
		})
		require.NotNil(t, term)
		require.NoError(t, returnsWithin(t, "Resign", requestBound(matrixLease), func() error { return leader.Resign(longest) }))
		requireEnded(t, term, biregister.ErrResigned)
		checkRegistered(t, cli, leader, []string{"longest"}, w)
		// Now the leader is the other one: the one that resigned waits to
		// lead until Close.
		checkCloseEnds(t, longest, leader, matrixLease, "WaitLeader", "WaitTerm", "Lead")
		require.NoError(t, follower.WaitLeader(longest))
		checkRegistered(t, cli, follower, []string{"longest"}, w)
	})

	// A Lead without work is bad input: ErrInvalidArgument, not a panic.
	t.Run("Lead with nil work", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		require.ErrorIs(t, returnsWithin(t, "Lead", readBound, func() error { return b.Lead(ctx, nil) }), biregister.ErrInvalidArgument)
	})
}

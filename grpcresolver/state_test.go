package grpcresolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// The tests in this file drive resolvers from a Watcher of a real etcd and
// record what they tell gRPC, which makes every decision visible exactly.

// eventTimeout bounds every wait for the resolver or the Watcher.
const eventTimeout = 10 * time.Second

// testGroup is the group "/g/" in a real etcd, which the test writes, and a
// Watcher of it.
type testGroup struct {
	t   *testing.T
	cli *clientv3.Client
	w   biregister.Watcher
}

// newTestGroup starts etcd and a Watcher of "/g/". Call leakcheck first.
func newTestGroup(t *testing.T) *testGroup {
	t.Helper()
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	w, err := biregister.NewWatcher(nil, "/g/", 5, biregister.WithClient(cli))
	require.NoError(t, err)
	t.Cleanup(w.Close)
	return &testGroup{t: t, cli: cli, w: w}
}

// put writes key (a member's name, or any key under the prefix) and
// returns the revision.
func (g *testGroup) put(key, value string) int64 {
	g.t.Helper()
	resp, err := g.cli.Put(context.Background(), "/g/"+key, value)
	require.NoError(g.t, err)
	return resp.Header.Revision
}

func (g *testGroup) del(key string) int64 {
	g.t.Helper()
	resp, err := g.cli.Delete(context.Background(), "/g/"+key)
	require.NoError(g.t, err)
	return resp.Header.Revision
}

// seen waits until the Watcher's view reflects revision rev.
func (g *testGroup) seen(rev int64) {
	g.t.Helper()
	deadline := time.After(eventTimeout)
	for v := g.w.View(); v.Revision() < rev; v = g.w.View() {
		select {
		case <-v.Updated():
		case <-deadline:
			g.t.Fatalf("the Watcher never saw revision %d", rev)
		}
	}
}

// recorder is a resolver.ClientConn that records every state and error.
type recorder struct {
	resolver.ClientConn
	events chan any // resolver.State or error
}

func newRecorder() *recorder { return &recorder{events: make(chan any, 100)} }

func (r *recorder) UpdateState(s resolver.State) error {
	r.events <- s
	return nil
}

func (r *recorder) ReportError(err error) { r.events <- err }

// next returns the next event, failing t if none comes in time.
func (r *recorder) next(t *testing.T) any {
	t.Helper()
	select {
	case e := <-r.events:
		return e
	case <-time.After(eventTimeout):
		t.Fatal("the resolver told gRPC nothing")
		return nil
	}
}

// nextState returns the next event, which must be a state.
func (r *recorder) nextState(t *testing.T) resolver.State {
	t.Helper()
	e := r.next(t)
	s, ok := e.(resolver.State)
	require.True(t, ok, "want a state, got %v", e)
	return s
}

// nextEndpoints returns the next event, which must be a state, as a list
// of endpoints.
func (r *recorder) nextEndpoints(t *testing.T) []Endpoint {
	t.Helper()
	return stateEndpoints(t, r.nextState(t))
}

// nextError returns the next event, which must be an error.
func (r *recorder) nextError(t *testing.T) error {
	t.Helper()
	e := r.next(t)
	err, ok := e.(error)
	require.True(t, ok, "want an error, got %v", e)
	return err
}

// debugLogger logs everything, Debug included, to b.
func debugLogger(b *syncbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func target(t *testing.T, s string) resolver.Target {
	t.Helper()
	u, err := url.Parse(s)
	require.NoError(t, err)
	return resolver.Target{URL: *u}
}

// build builds a resolver of b for "biregister:///g" that reports to a new
// recorder, and closes it at the end of the test.
func build(t *testing.T, b resolver.Builder) *recorder {
	t.Helper()
	require.Equal(t, Scheme, b.Scheme())
	rec := newRecorder()
	r, err := b.Build(target(t, "biregister:///g"), rec, resolver.BuildOptions{})
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return rec
}

func TestResolverState(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	g := newTestGroup(t)
	var logs syncbuf.Buffer
	g.put("m0", "10.0.0.1:1")
	g.put("m1", "garbage")
	g.put("m2", Endpoint{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "a"}}.String())
	g.seen(g.put("m3", "10.0.0.1:1")) // a second registration of the first address
	rec := build(t, NewBuilder(g.w, WithLogger(debugLogger(&logs))))

	assert.Equal(t, []Endpoint{
		{Addr: "10.0.0.1:1"},
		{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "a"}},
	}, rec.nextEndpoints(t))
	assert.Contains(t, logs.String(), "name=m1 value=garbage")

	// A view that changes nothing the resolver uses (a key that is not a
	// member, a progress notification) is not passed on, nor is the bad
	// value logged again: the next event is the next real change.
	g.seen(g.put("sub/x", "not a member"))
	g.put("m2", Endpoint{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "b"}}.String())
	assert.Equal(t, []Endpoint{
		{Addr: "10.0.0.1:1"},
		{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "b"}},
	}, rec.nextEndpoints(t))

	// A member that changes to another bad value is logged again, and
	// changes nothing gRPC holds.
	g.put("m1", "rubbish")
	// When the older of two members with one address leaves, the younger
	// one's endpoint takes its place, in its own place in the order.
	g.del("m0")
	assert.Equal(t, []Endpoint{
		{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "b"}},
		{Addr: "10.0.0.1:1"},
	}, rec.nextEndpoints(t))
	assert.Contains(t, logs.String(), "name=m1 value=rubbish")
	assert.Equal(t, 1, strings.Count(logs.String(), "value=garbage"), logs.String())

	// A member whose value becomes usable takes its own place, before
	// younger ones.
	g.put("m1", "10.0.0.3:3")
	assert.Equal(t, []Endpoint{
		{Addr: "10.0.0.3:3"},
		{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "b"}},
		{Addr: "10.0.0.1:1"},
	}, rec.nextEndpoints(t))
}

// TestResolverRebuildsOnlyWhatChanged checks that the resolvers of one
// Builder share one list, worked out once for each view, and that a change
// builds the endpoints of the members it changes and no others.
func TestResolverRebuildsOnlyWhatChanged(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	g := newTestGroup(t)
	var logs syncbuf.Buffer
	const n = 100
	for i := range n {
		g.put(fmt.Sprintf("m%03d", i), fmt.Sprintf("10.0.0.%d:80", i))
	}
	g.seen(g.put("bad", "garbage"))
	b := NewBuilder(g.w, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	recs := []*recorder{build(t, b), build(t, b)}
	var states [2]resolver.State
	for i, rec := range recs {
		states[i] = rec.nextState(t)
		require.Len(t, states[i].Endpoints, n)
	}
	assert.Same(t, &states[0].Endpoints[0], &states[1].Endpoints[0], "the resolvers worked out a list each")
	assert.Same(t, &states[0].Addresses[0], &states[1].Addresses[0], "the resolvers worked out a list each")

	// A key that is not a member, then one member's new address, then one
	// member more: every other endpoint is the one built before.
	g.seen(g.put("sub/x", "not a member"))
	rev := g.put("m050", "10.0.1.50:80")
	for i, rec := range recs {
		s := rec.nextState(t)
		require.Len(t, s.Endpoints, n)
		assert.Equal(t, "10.0.1.50:80", s.Endpoints[50].Addresses[0].Addr)
		for j := range s.Endpoints {
			if j != 50 {
				assert.Same(t, &states[i].Endpoints[j].Addresses[0], &s.Endpoints[j].Addresses[0], "endpoint %d built again", j)
			}
		}
		states[i] = s
	}
	g.seen(rev)
	// Joins, appended; a load-balancing policy may append to what it is
	// given, and the next join must not write there.
	own := Endpoint{Addr: "10.9.9.9:9"}.resolverEndpoint()
	var kept []resolver.Endpoint
	for k := range 2 {
		g.seen(g.put(fmt.Sprintf("m%03d", n+k), fmt.Sprintf("10.0.1.%d:80", k)))
		for i, rec := range recs {
			s := rec.nextState(t)
			require.Len(t, s.Endpoints, n+k+1)
			assert.Equal(t, fmt.Sprintf("10.0.1.%d:80", k), s.Endpoints[n+k].Addresses[0].Addr)
			for j := range n + k {
				assert.Same(t, &states[i].Endpoints[j].Addresses[0], &s.Endpoints[j].Addresses[0], "endpoint %d built again", j)
			}
			states[i] = s
		}
		if k == 0 {
			kept = append(states[0].Endpoints, own)
		}
	}
	assert.Same(t, &own.Addresses[0], &kept[n+1].Addresses[0], "a join overwrote what a policy appended")
	assert.Equal(t, 1, strings.Count(logs.String(), "value=garbage"), logs.String())
}

// TestResolverEmptyGroup checks that an empty group is reported as an error
// and never pushed as an empty list, and that the group is followed again
// when a member comes back.
func TestResolverEmptyGroup(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	g := newTestGroup(t)
	rec := build(t, NewBuilder(g.w))
	// A group empty from the start: gRPC has nothing to keep, and fails
	// calls with this error.
	assert.ErrorIs(t, rec.nextError(t), errNoMembers)

	g.put("m0", "10.0.0.1:1")
	assert.Equal(t, []Endpoint{{Addr: "10.0.0.1:1"}}, rec.nextEndpoints(t))

	g.del("m0")
	assert.ErrorIs(t, rec.nextError(t), errNoMembers)
	// Only bad values: as good as empty, and reported once.
	g.seen(g.put("m1", "garbage"))
	// The same address back: gRPC hears the list again after the error.
	g.put("m0", "10.0.0.1:1")
	assert.Equal(t, []Endpoint{{Addr: "10.0.0.1:1"}}, rec.nextEndpoints(t))
}

// TestResolverWatcherClosed checks that a closed Watcher is reported as an
// error, not as an empty group pushed to gRPC, and that the resolver stops.
func TestResolverWatcherClosed(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	g := newTestGroup(t)
	g.seen(g.put("m0", "10.0.0.1:1"))
	b := NewBuilder(g.w)
	rec := newRecorder()
	r, err := b.Build(target(t, "biregister:///g"), rec, resolver.BuildOptions{})
	require.NoError(t, err)
	assert.Equal(t, []Endpoint{{Addr: "10.0.0.1:1"}}, rec.nextEndpoints(t))

	g.w.Close()
	// The empty group the Watcher publishes just before Closed may be seen
	// first; it is reported, never pushed.
	err = rec.nextError(t)
	if errors.Is(err, errNoMembers) {
		err = rec.nextError(t)
	}
	assert.ErrorIs(t, err, biregister.ErrClosed)
	r.Close() // returns only once the goroutine is gone
	assert.Empty(t, rec.events, "nothing after the Watcher closed")
}

// TestResolverStartsFromLastList checks that a resolver built while the
// group reads empty, or after the Watcher closed, gives gRPC the last list
// an earlier resolver of its Builder gave, then the error: gRPC builds a
// new resolver when an idle channel wakes.
func TestResolverStartsFromLastList(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	g := newTestGroup(t)
	g.put("m0", "10.0.0.1:1")
	g.seen(g.put("m1", "10.0.0.2:2"))
	b := NewBuilder(g.w)
	want := []Endpoint{{Addr: "10.0.0.1:1"}, {Addr: "10.0.0.2:2"}}
	rec := newRecorder()
	r, err := b.Build(target(t, "biregister:///g"), rec, resolver.BuildOptions{})
	require.NoError(t, err)
	assert.Equal(t, want, rec.nextEndpoints(t))
	r.Close()

	g.del("m0")
	g.seen(g.del("m1"))
	rec = build(t, b)
	assert.Equal(t, want, rec.nextEndpoints(t))
	assert.ErrorIs(t, rec.nextError(t), errNoMembers)

	g.w.Close()
	rec = build(t, b)
	assert.Equal(t, want, rec.nextEndpoints(t))
	assert.ErrorIs(t, rec.nextError(t), biregister.ErrClosed)
}

// TestResolverOneServerTwoSpellings checks that two spellings of one
// address count once: ParseEndpoint gives both the same normal form.
func TestResolverOneServerTwoSpellings(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	g := newTestGroup(t)
	for i, v := range []string{
		"127.0.0.1:8080", "127.0.0.1:08080", "[::ffff:127.0.0.1]:8080",
		"Server.Example:443", "server.example:0443", `{"addr":"SERVER.example:443"}`,
		"[::1]:80", "[0:0::1]:080",
	} {
		g.seen(g.put(fmt.Sprintf("m%d", i), v))
	}
	rec := build(t, NewBuilder(g.w))
	assert.Equal(t, []Endpoint{{Addr: "127.0.0.1:8080"}, {Addr: "server.example:443"}, {Addr: "[::1]:80"}},
		rec.nextEndpoints(t))
}

func TestBuildTarget(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	w, err := biregister.NewWatcher(c.Endpoints(), "/services/api/", 5)
	require.NoError(t, err)
	t.Cleanup(w.Close)
	b := NewBuilder(w)
	for _, ok := range []string{
		"biregister:///services/api",
		"biregister:///services/api/",
		"biregister:services/api",
		"biregister:///",
		"biregister:",
	} {
		r, err := b.Build(target(t, ok), newRecorder(), resolver.BuildOptions{})
		if assert.NoError(t, err, ok) {
			r.Close()
		}
	}
	for _, bad := range []string{
		"biregister:///services/api2",
		"biregister:///services",
		"biregister:///services/api/v1",
	} {
		_, err := b.Build(target(t, bad), newRecorder(), resolver.BuildOptions{})
		assert.Error(t, err, bad)
	}

	_, err = NewBuilder(nil).Build(target(t, "biregister:///services/api"), newRecorder(), resolver.BuildOptions{})
	assert.Error(t, err)
}

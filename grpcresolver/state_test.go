package grpcresolver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// The tests in this file drive a resolver from an in-memory Watcher and
// record what it tells gRPC, which makes every decision visible exactly.

// fakeWatcher is a Watcher whose group the test sets. Only the methods the
// resolver may use are implemented; any other call panics through the nil
// embedded interface.
type fakeWatcher struct {
	biregister.Watcher

	prefix  string
	mu      sync.Mutex
	members []biregister.Member
	updated chan struct{}
	closed  chan struct{}
}

func newFakeWatcher(values ...string) *fakeWatcher {
	f := &fakeWatcher{prefix: "/g/", updated: make(chan struct{}), closed: make(chan struct{})}
	f.set(values...)
	return f
}

// set makes the group one member m<i> per value and wakes the readers, as
// publishing a snapshot does.
func (f *fakeWatcher) set(values ...string) {
	members := make([]biregister.Member, len(values))
	for i, v := range values {
		members[i] = biregister.Member{Name: fmt.Sprintf("m%d", i), Value: v, CreateRevision: int64(i + 1)}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = members
	close(f.updated)
	f.updated = make(chan struct{})
}

// close closes the fake as a Watcher closes: it publishes an empty group
// first and closes Closed after.
func (f *fakeWatcher) close() {
	f.set()
	close(f.closed)
}

func (f *fakeWatcher) Members() []biregister.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]biregister.Member(nil), f.members...)
}

func (f *fakeWatcher) Updated() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.updated
}

func (f *fakeWatcher) Closed() <-chan struct{} { return f.closed }

func (f *fakeWatcher) Prefix() string { return f.prefix }

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
	case <-time.After(5 * time.Second):
		t.Fatal("the resolver told gRPC nothing")
		return nil
	}
}

// nextState returns the next event, which must be a state, as a list of
// endpoints.
func (r *recorder) nextState(t *testing.T) []Endpoint {
	t.Helper()
	e := r.next(t)
	s, ok := e.(resolver.State)
	require.True(t, ok, "want a state, got %v", e)
	require.Len(t, s.Addresses, len(s.Endpoints))
	var got []Endpoint
	for i, re := range s.Endpoints {
		require.Len(t, re.Addresses, 1)
		assert.Equal(t, re.Addresses[0].Addr, s.Addresses[i].Addr)
		got = append(got, Endpoint{Addr: re.Addresses[0].Addr, Metadata: Metadata(re)})
	}
	return got
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

// build builds a resolver on w for "biregister:///g" that reports to a new
// recorder, and closes it at the end of the test.
func build(t *testing.T, w biregister.Watcher, opts ...Option) *recorder {
	t.Helper()
	b := NewBuilder(w, opts...)
	require.Equal(t, Scheme, b.Scheme())
	rec := newRecorder()
	r, err := b.Build(target(t, "biregister:///g"), rec, resolver.BuildOptions{})
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return rec
}

func TestResolverState(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	var logs syncbuf.Buffer
	w := newFakeWatcher(
		"10.0.0.1:1",
		"garbage",
		Endpoint{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "a"}}.String(),
		"10.0.0.1:1", // a second registration of the first address
	)
	rec := build(t, w, WithLogger(debugLogger(&logs)))

	assert.Equal(t, []Endpoint{
		{Addr: "10.0.0.1:1"},
		{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "a"}},
	}, rec.nextState(t))
	assert.Contains(t, logs.String(), "name=m1 value=garbage")

	// A snapshot that changes nothing the resolver uses (a progress
	// notification) is not passed on, nor is the bad value logged again:
	// the next event is the next real change.
	w.set("10.0.0.1:1", "garbage", Endpoint{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "a"}}.String(), "10.0.0.1:1")
	w.set("10.0.0.1:1", "garbage", Endpoint{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "b"}}.String())
	assert.Equal(t, []Endpoint{
		{Addr: "10.0.0.1:1"},
		{Addr: "10.0.0.2:2", Metadata: map[string]string{"zone": "b"}},
	}, rec.nextState(t))
	assert.Equal(t, 1, strings.Count(logs.String(), "value=garbage"), logs.String())

	// A member that changes to another bad value is logged again.
	w.set("10.0.0.1:1", "rubbish")
	assert.Equal(t, []Endpoint{{Addr: "10.0.0.1:1"}}, rec.nextState(t))
	assert.Contains(t, logs.String(), "name=m1 value=rubbish")
}

// TestResolverEmptyGroup checks that an empty group is reported as an error
// and never pushed as an empty list, and that the group is followed again
// when a member comes back.
func TestResolverEmptyGroup(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	w := newFakeWatcher()
	rec := build(t, w)
	// A group empty from the start: gRPC has nothing to keep, and fails
	// calls with this error.
	assert.ErrorIs(t, rec.nextError(t), errNoMembers)

	w.set("10.0.0.1:1")
	assert.Equal(t, []Endpoint{{Addr: "10.0.0.1:1"}}, rec.nextState(t))

	w.set()
	assert.ErrorIs(t, rec.nextError(t), errNoMembers)
	// Only bad values: as good as empty, and reported once.
	w.set("garbage")
	// The same member back: gRPC hears the list again after the error.
	w.set("10.0.0.1:1")
	assert.Equal(t, []Endpoint{{Addr: "10.0.0.1:1"}}, rec.nextState(t))
}

// TestResolverWatcherClosed checks that a closed Watcher is reported as an
// error, not as an empty group pushed to gRPC, and that the resolver stops.
func TestResolverWatcherClosed(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	w := newFakeWatcher("10.0.0.1:1")
	b := NewBuilder(w)
	rec := newRecorder()
	r, err := b.Build(target(t, "biregister:///g"), rec, resolver.BuildOptions{})
	require.NoError(t, err)
	assert.Equal(t, []Endpoint{{Addr: "10.0.0.1:1"}}, rec.nextState(t))

	w.close()
	// The empty group the Watcher publishes just before Closed may be seen
	// first; it is reported, never pushed.
	err = rec.nextError(t)
	if errors.Is(err, errNoMembers) {
		err = rec.nextError(t)
	}
	assert.ErrorIs(t, err, biregister.ErrClosed)
	r.Close() // returns only once the goroutine is gone
	assert.Empty(t, rec.events, "nothing after the Watcher closed")

	// A resolver built on a closed Watcher reports at once.
	rec = build(t, w)
	assert.ErrorIs(t, rec.nextError(t), biregister.ErrClosed)
}

func TestBuildTarget(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	w := newFakeWatcher("10.0.0.1:1")
	w.prefix = "/services/api/"
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

	_, err := NewBuilder(nil).Build(target(t, "biregister:///services/api"), newRecorder(), resolver.BuildOptions{})
	assert.Error(t, err)
}

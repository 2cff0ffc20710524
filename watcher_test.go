package biregister_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

func TestInvalidArguments(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	eps := []string{"http://127.0.0.1:2379"}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer cli.Close()
	cases := []struct {
		name string
		new  func() (any, error)
	}{
		{"watcher nil endpoints", func() (any, error) { return biregister.NewWatcher(nil, "/p", 5) }},
		{"watcher empty endpoints", func() (any, error) { return biregister.NewWatcher([]string{}, "/p", 5) }},
		{"watcher blank endpoint", func() (any, error) { return biregister.NewWatcher([]string{" "}, "/p", 5) }},
		{"watcher empty prefix", func() (any, error) { return biregister.NewWatcher(eps, "", 5) }},
		{"watcher ttl 0", func() (any, error) { return biregister.NewWatcher(eps, "/p", 0) }},
		{"watcher ttl -1", func() (any, error) { return biregister.NewWatcher(eps, "/p", -1) }},
		{"watcher buffer 0", func() (any, error) { return biregister.NewWatcher(eps, "/p", 5, biregister.WithBufferSize(0)) }},
		{"watcher dial timeout", func() (any, error) {
			return biregister.NewWatcher(eps, "/p", 5, biregister.WithDialTimeout(-time.Second))
		}},
		{"watcher dial timeout 0", func() (any, error) { return biregister.NewWatcher(eps, "/p", 5, biregister.WithDialTimeout(0)) }},
		{"register nil endpoints", func() (any, error) { return biregister.NewRegister(nil, "/p", "a", "v", 5) }},
		{"register empty prefix", func() (any, error) { return biregister.NewRegister(eps, "", "a", "v", 5) }},
		{"register empty name", func() (any, error) { return biregister.NewRegister(eps, "/p", "", "v", 5) }},
		{"register name with slash", func() (any, error) { return biregister.NewRegister(eps, "/p", "a/b", "v", 5) }},
		{"register ttl 0", func() (any, error) { return biregister.NewRegister(eps, "/p", "a", "v", 0) }},
		{"register blank endpoint", func() (any, error) { return biregister.NewRegister([]string{""}, "/p", "a", "v", 5) }},
		{"register name wait", func() (any, error) {
			return biregister.NewRegister(eps, "/p", "a", "v", 5, biregister.WithNameWait(-time.Second))
		}},
		{"noname empty endpoints", func() (any, error) { return biregister.NewRegisterNoName([]string{}, "/p", "v", 5) }},
		{"noname empty prefix", func() (any, error) { return biregister.NewRegisterNoName(eps, "", "v", 5) }},
		{"noname ttl 0", func() (any, error) { return biregister.NewRegisterNoName(eps, "/p", "v", 0) }},
		// Beyond etcd's longest lease, 9,000,000,000 s; a Duration of it
		// would overflow too.
		{"watcher ttl beyond etcd's", func() (any, error) { return biregister.NewWatcher(eps, "/p", 9_000_000_001) }},
		{"register ttl max", func() (any, error) { return biregister.NewRegister(eps, "/p", "a", "v", math.MaxInt64) }},
		// Options that shape a client the library makes, with a client of
		// the user's: refused, not dropped.
		{"client with auth", func() (any, error) {
			return biregister.NewWatcher(nil, "/p", 5, biregister.WithClient(cli), biregister.WithAuth("", "pw"))
		}},
		{"client with tls", func() (any, error) {
			return biregister.NewRegister(nil, "/p", "a", "v", 5, biregister.WithClient(cli), biregister.WithTLS(&tls.Config{}))
		}},
		{"client with dial timeout", func() (any, error) {
			return biregister.NewWatcher(nil, "/p", 5, biregister.WithClient(cli), biregister.WithDialTimeout(time.Second))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.new()
			require.ErrorIs(t, err, biregister.ErrInvalidArgument)
			assert.True(t, got == nil, "a failed constructor returns a nil interface, got %#v", got)
		})
	}
}

func TestWatcherCacheOrderAndPrefix(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	// Create order b, a, c differs from key order: the cache must follow
	// create revisions.
	for _, kv := range [][2]string{{"/svc/api/b", "vb"}, {"/svc/api/a", "va"}, {"/svc/api/c", "vc"},
		{"/svc/api2/x", "neighbour"}, {"/svc/api/sub/x", "deeper"}, {"/svc/api/", "prefix itself"}} {
		_, err := cli.Put(ctx, kv[0], kv[1])
		require.NoError(t, err)
	}

	w := startWatcher(t, etcd.Endpoints(), "/svc/api") // no trailing slash: added
	assert.Equal(t, "/svc/api/", w.Prefix())

	assert.Equal(t, []string{"b", "a", "c"}, w.GetNames())
	assert.Equal(t, []string{"vb", "va", "vc"}, w.GetValues())
	assert.Equal(t, map[string]string{"a": "va", "b": "vb", "c": "vc"}, w.GetAll())
	assert.Equal(t, "va", w.GetValueByName("a"))
	assert.Equal(t, "", w.GetValueByName("x"))
	assert.Equal(t, "", w.GetValueByName("sub/x"))
	name, val := w.GetLeader()
	assert.Equal(t, "b", name)
	assert.Equal(t, "vb", val)

	members := w.Members()
	require.Len(t, members, 3)
	for i, m := range members {
		assert.Equal(t, w.GetNames()[i], m.Name)
		if i > 0 {
			assert.Less(t, members[i-1].CreateRevision, m.CreateRevision)
		}
	}

	all := w.GetAll()
	all["b"] = "changed"
	delete(all, "a")
	assert.Equal(t, "vb", w.GetValueByName("b"), "GetAll must return a copy")
	assert.Equal(t, "va", w.GetValueByName("a"), "GetAll must return a copy")

	_, err := cli.Delete(ctx, "/svc/api/b")
	require.NoError(t, err)
	require.Eventually(t, func() bool { n, _ := w.GetLeader(); return n == "a" }, waitFor, time.Millisecond)
}

func TestWatcherEmptyGroup(t *testing.T) {
	etcd := startEtcd(t)
	w := startWatcher(t, etcd.Endpoints(), "/empty/")
	name, val := w.GetLeader()
	assert.Equal(t, "", name)
	assert.Equal(t, "", val)
	assert.Empty(t, w.GetNames())
	assert.Empty(t, w.GetValues())
	assert.Empty(t, w.GetAll())
	assert.Empty(t, w.Members())
	assert.Same(t, w.EtcdClient(), w.EtcdClient())
}

func TestWatcherChanges(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	for _, name := range []string{"m2", "m1", "m3"} {
		_, err := cli.Put(ctx, "/g/"+name, "v-"+name)
		require.NoError(t, err)
	}
	w := startWatcher(t, etcd.Endpoints(), "/g/")

	// Present members first, as PUTs in create order.
	for _, name := range []string{"m2", "m1", "m3"} {
		c := recv(t, w.Changes())
		assert.Equal(t, biregister.Change{Name: name, Op: biregister.OpPut, Value: "v-" + name, Revision: c.Revision}, c)
	}

	put, err := cli.Put(ctx, "/g/m4", "v-m4")
	require.NoError(t, err)
	upd, err := cli.Put(ctx, "/g/m1", "v-m1-new")
	require.NoError(t, err)
	del, err := cli.Delete(ctx, "/g/m2")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/g2/other", "not ours")
	require.NoError(t, err)

	want := []biregister.Change{
		{Name: "m4", Op: biregister.OpPut, Value: "v-m4", Revision: put.Header.Revision},
		{Name: "m1", Op: biregister.OpPut, Value: "v-m1-new", Revision: upd.Header.Revision},
		// Deleted from outside, in a group of four: a loss, held a moment.
		{Name: "m2", Op: biregister.OpDelete, Value: "v-m2", Revision: del.Header.Revision, Suspect: true},
	}
	for _, wc := range want {
		assert.Equal(t, wc, recv(t, w.Changes()))
	}
	// The cache is at least as new as the change just received.
	assert.Equal(t, []string{"m1", "m3", "m4"}, w.GetNames())
	assert.Equal(t, []string{"v-m1-new", "v-m3", "v-m4"}, w.GetValues())
	select {
	case c := <-w.Changes():
		t.Fatalf("unexpected change %+v", c)
	default:
	}
}

func TestWatcherClose(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	_, err := cli.Put(context.Background(), "/c/a", "1")
	require.NoError(t, err)
	w, err := biregister.NewWatcher(etcd.Endpoints(), "/c", 5)
	require.NoError(t, err)
	owned := w.EtcdClient()

	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); w.Close() }()
	}
	wg.Wait()
	w.Close()

	select {
	case <-w.Closed():
	default:
		t.Fatal("Closed not closed after Close")
	}
	var got []biregister.Change
	for c := range w.Changes() { // ends: Changes is closed
		got = append(got, c)
	}
	assert.Len(t, got, 1, "buffered changes stay readable")
	assert.Empty(t, w.GetNames(), "a closed watcher knows no members")
	assert.Error(t, owned.Ctx().Err(), "the client the watcher created must be closed")
}

func TestWatcherSharedClientNotClosed(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	w1, err := biregister.NewWatcher(nil, "/s1", 5, biregister.WithClient(cli))
	require.NoError(t, err)
	w2, err := biregister.NewWatcher(nil, "/s2", 5, biregister.WithClient(cli))
	require.NoError(t, err)
	assert.Same(t, cli, w1.EtcdClient())
	w1.Close()
	_, err = cli.Put(context.Background(), "/s2/x", "1")
	require.NoError(t, err, "a shared client must survive Close")
	assert.Equal(t, "x", recv(t, w2.Changes()).Name)
	w2.Close()
}

// unusedEndpoint returns a loopback address that nothing listens on.
func unusedEndpoint(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

func TestUnreachableEtcd(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	eps := []string{unusedEndpoint(t)}
	const ttl = 1
	for name, newFn := range map[string]func() error{
		"watcher":  func() error { _, err := biregister.NewWatcher(eps, "/u", ttl); return err },
		"register": func() error { _, err := biregister.NewRegister(eps, "/u", "a", "v", ttl); return err },
		"noname":   func() error { _, err := biregister.NewRegisterNoName(eps, "/u", "v", ttl); return err },
	} {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- newFn() }()
			select {
			case err := <-done:
				require.Error(t, err)
				assert.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
			case <-time.After(ttl*time.Second + 5*time.Second):
				t.Fatal("constructor hangs on an unreachable etcd")
			}
		})
	}
}

// The etcd client logs every failed retry to stderr by default; the library
// must not.
func TestQuietByDefault(t *testing.T) {
	etcd := startEtcd(t)
	// Whatever a process logs through: stderr, the standard logger, slog's
	// default logger.
	var logged syncbuf.Buffer
	defaultLogger, stdFlags, stdOut := slog.Default(), log.Flags(), log.Writer()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})))
	log.SetOutput(&logged)
	r, wr, err := os.Pipe()
	require.NoError(t, err)
	stderr := os.Stderr
	os.Stderr = wr
	defer func() {
		os.Stderr = stderr
		slog.SetDefault(defaultLogger)
		log.SetOutput(stdOut)
		log.SetFlags(stdFlags)
	}()

	// Paths that log when given a logger: a constructor that cannot reach
	// etcd, a key deleted from outside, a Watcher that lists again.
	_, werr := biregister.NewWatcher([]string{unusedEndpoint(t)}, "/q", 1)
	require.Error(t, werr)
	reg := startRegister(t, etcd.Endpoints(), "/q", "a", "v", 2)
	w := startWatcher(t, etcd.Endpoints(), "/q")
	cli := etcd.Client(t)
	_, err = cli.Delete(context.Background(), reg.MyKey())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return reg.Status().Registered && reg.MyRevision() > 0 && w.GetValueByName("a") == "v" },
		waitFor, time.Millisecond)
	_, err = cli.Put(context.Background(), reg.MyKey(), "from outside")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.GetValueByName("a") == "v" && reg.AmILeader() }, waitFor, time.Millisecond)
	reg.Close()
	w.Close()

	os.Stderr = stderr
	require.NoError(t, wr.Close())
	printed, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Empty(t, string(printed), "printed to stderr")
	assert.Empty(t, logged.String(), "logged through the default loggers")
}

func TestWatcherUpdated(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	w := startWatcher(t, etcd.Endpoints(), "/upd")
	updated := w.Updated()
	select {
	case <-updated:
		t.Fatal("Updated closed before any change")
	default:
	}
	_, err := cli.Put(context.Background(), "/upd/a", "1")
	require.NoError(t, err)
	select {
	case <-updated:
	case <-time.After(waitFor):
		t.Fatal("Updated not closed by a change")
	}
	assert.Equal(t, "1", w.GetValueByName("a"), "the cache is updated when Updated fires")
	assert.Equal(t, "a", recv(t, w.Changes()).Name, "Updated takes nothing from Changes")
	next := w.Updated()
	w.Close()
	select {
	case <-next:
	case <-time.After(waitFor):
		t.Fatal("Close must wake whoever waits on Updated")
	}
}

// Keys created by one transaction share a create revision: they are ordered
// by name among themselves, in the listing and from the watch alike.
func TestWatcherMembersOfOneTransaction(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	txn := func(names ...string) {
		t.Helper()
		var ops []clientv3.Op
		for _, n := range names {
			ops = append(ops, clientv3.OpPut("/txn/"+n, "v-"+n))
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
	}
	txn("c", "a", "b")
	w := startWatcher(t, etcd.Endpoints(), "/txn")
	assert.Equal(t, []string{"a", "b", "c"}, w.GetNames())

	txn("z", "x", "y")
	require.Eventually(t, func() bool { return len(w.GetNames()) == 6 }, waitFor, time.Millisecond)
	assert.Equal(t, []string{"a", "b", "c", "x", "y", "z"}, w.GetNames())

	_, err := cli.Delete(ctx, "/txn/b")
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "/txn/a")
	require.NoError(t, err)
	require.Eventually(t, func() bool { n, _ := w.GetLeader(); return n == "c" }, waitFor, time.Millisecond)
	assert.Equal(t, []string{"c", "x", "y", "z"}, w.GetNames())
	assert.Equal(t, []string{"v-c", "v-x", "v-y", "v-z"}, w.GetValues())
}

// A watch that ends at once, again and again — the user closed the shared
// client's watcher — has the Watcher back off between its listings
// instead of listing in a hot loop; it is not ready meanwhile.
func TestWatchEndingAtOnceBacksOff(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	w := startWatcher(t, nil, "/closed-watcher", biregister.WithClient(cli))
	require.NoError(t, cli.Watcher.Close())
	before := w.Status().Listings
	start := time.Now()
	require.Eventually(t, func() bool { return w.Status().Listings > before }, waitFor, time.Millisecond)
	for time.Since(start) < 2*time.Second {
		require.LessOrEqual(t, w.Status().Listings-before, int64(10), "listed again and again, without backing off")
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d listings in 2 s", w.Status().Listings-before)
	require.ErrorIs(t, w.Ready(), biregister.ErrNotReady)
}

// A Watcher the constructor returned has listed: ready at once.
func TestReadyRightAfterConstructor(t *testing.T) {
	etcd := startEtcd(t)
	for range 20 {
		w, err := biregister.NewWatcher(etcd.Endpoints(), "/ready-at-once", 5)
		require.NoError(t, err)
		err = w.Ready()
		w.Close()
		require.NoError(t, err)
	}
}

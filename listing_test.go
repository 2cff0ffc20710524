package biregister

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// testPageBytes makes pages of about a dozen members, so that a listing of
// a few hundred takes many pages, and writes fall between them.
const testPageBytes = 600

// testGroup is large enough that a first listing takes more than its first
// page of listFirstPage members.
const testGroup = listFirstPage + 200

// startFilled starts etcd, puts testGroup members m0000 … under prefix, a
// hundred per transaction, and returns a client.
func startFilled(t *testing.T, prefix string) *clientv3.Client {
	t.Helper()
	client := etcdtest.Start(t, 1).Client(t)
	for from := 0; from < testGroup; from += 100 {
		var ops []clientv3.Op
		for i := from; i < min(from+100, testGroup); i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sm%04d", prefix, i), "v0"))
		}
		if _, err := client.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return client
}

// listingWatcher returns a watcher of prefix that is not started, whose
// listings read pages of testPageBytes.
func listingWatcher(t *testing.T, client *clientv3.Client, prefix string) *watcher {
	t.Helper()
	cfg, prefix, err := newConfig(nil, prefix, 10, []Option{WithClient(client)})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher(client, func() {}, prefix, cfg)
	w.pageBytes = testPageBytes
	return w
}

// requireListedAsEtcd fails unless listed is what etcd holds under prefix
// at revision, read in one Get: each key one level below prefix (not
// prefix itself), with its value and create revision, once. It has its own
// rule for which keys are members, not the listing's.
func requireListedAsEtcd(t *testing.T, client *clientv3.Client, prefix string, listed []Member, revision int64) {
	t.Helper()
	resp, err := client.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithRev(revision))
	if err != nil {
		t.Fatal(err)
	}
	var want []Member
	for _, kv := range resp.Kvs {
		if name := string(kv.Key[len(prefix):]); name != "" && !strings.Contains(name, "/") {
			want = append(want, Member{Name: name, Value: string(kv.Value), CreateRevision: kv.CreateRevision})
		}
	}
	byName := func(a, b Member) int { return strings.Compare(a.Name, b.Name) }
	got := slices.SortedFunc(slices.Values(listed), byName)
	if !slices.Equal(got, want) {
		t.Fatalf("listed %d members at revision %d, etcd holds %d there; first difference at %d",
			len(got), revision, len(want), firstDifference(got, want))
	}
}

func firstDifference(a, b []Member) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A group that grows, changes and shrinks while it is listed page by page
// lists as etcd held it at the listing's revision: every page reads that
// revision. Both plans are checked: one range (the first listing), and
// ranges cut from the cache's names (every re-listing).
func TestListingUnderChurn(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const prefix = "/churn/"
	client := startFilled(t, prefix)
	ctx := context.Background()

	stop := make(chan struct{})
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("%sm%04d", prefix, rng.IntN(2*testGroup))
			var err error
			if i%3 == 2 {
				_, err = client.Delete(ctx, key)
			} else {
				_, err = client.Put(ctx, key, fmt.Sprint("v", i))
			}
			if err != nil {
				t.Error(err)
				return
			}
			writes.Add(1)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	w := listingWatcher(t, client, prefix)
	deadline := time.Now().Add(waitFor)
	for churned := 0; churned < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d listings had writes between their pages in time", churned)
		}
		before := writes.Load()
		l, err := w.list(ctx)
		if err != nil {
			t.Fatal(err)
		}
		listed, header := l.members, l.header
		if writes.Load() > before+1 {
			churned++
		}
		requireListedAsEtcd(t, client, prefix, listed, header.Revision)
		// The next listing is a re-listing: ranges cut from these names.
		s, _, _ := w.snap.Load().replace(listed, nil, header.Revision, 0)
		w.snap.Store(s)
		if starts := (&lister{prefix: prefix, pageBytes: testPageBytes}).plan(s); len(starts) < 10 {
			t.Fatalf("a re-listing of %d members plans %d ranges, want many", s.names.size, len(starts))
		}
	}
}

// compactingKV compacts etcd once, right after the first page of a listing,
// at the revision of a write made after it.
type compactingKV struct {
	clientv3.KV
	once      sync.Once
	compacted atomic.Int64
}

func (kv *compactingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := kv.KV.Get(ctx, key, opts...)
	if err == nil && resp.More {
		kv.once.Do(func() {
			put, perr := kv.KV.Put(ctx, key+"-written-meanwhile", "v")
			if perr == nil {
				_, perr = kv.KV.Compact(ctx, put.Header.Revision)
			}
			if perr != nil {
				panic(perr)
			}
			kv.compacted.Store(put.Header.Revision)
		})
	}
	return resp, err
}

// A listing whose revision is compacted before its last page lists again,
// at a newer revision, and says nothing of it to its caller.
func TestListingCompactedMeanwhile(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const prefix = "/compacted/"
	client := startFilled(t, prefix)
	ctx := context.Background()
	kv := &compactingKV{KV: client.KV}
	client.KV = kv
	l, err := listingWatcher(t, client, prefix).list(ctx)
	if err != nil {
		t.Fatalf("a listing whose revision was compacted: %v", err)
	}
	listed, header := l.members, l.header
	if header.Revision < kv.compacted.Load() || kv.compacted.Load() == 0 {
		t.Fatalf("listed at revision %d, want at least the compacted %d", header.Revision, kv.compacted.Load())
	}
	requireListedAsEtcd(t, client, prefix, listed, header.Revision)
	if len(listed) != testGroup+1 {
		t.Fatalf("listed %d members, want the %d and the one written meanwhile", len(listed), testGroup)
	}
}

// rangeLog wraps a client's KV and records what etcd answered each read.
type rangeLog struct {
	clientv3.KV
	mu    sync.Mutex
	pages []listedPage
}

// listedPage is one range response: how many keys it returned and their
// bytes as the lister sizes them, how many keys etcd counted for it, and
// the revision it was read at.
type listedPage struct {
	kvs, bytes      int
	count, revision int64
}

func (l *rangeLog) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := l.KV.Get(ctx, key, opts...)
	if err == nil {
		p := listedPage{kvs: len(resp.Kvs), count: resp.Count, revision: resp.Header.Revision}
		for _, kv := range resp.Kvs {
			p.bytes += len(kv.Key) + len(kv.Value) + kvOverhead
		}
		l.mu.Lock()
		l.pages = append(l.pages, p)
		l.mu.Unlock()
	}
	return resp, err
}

// take returns the pages recorded so far and forgets them.
func (l *rangeLog) take() []listedPage {
	l.mu.Lock()
	defer l.mu.Unlock()
	pages := l.pages
	l.pages = nil
	return pages
}

// What README promises of a listing's reads: the first page of a first
// listing asks for listFirstPage members; every later page holds about
// pageBytes; every page reads the first one's revision; and a re-listing,
// planned from the cache's names, never has etcd count much more than a
// page's worth of keys for a page (a first listing's first page counts the
// group once).
func TestListingPageBounds(t *testing.T) {
	const prefix = "/bounds/"
	client := startFilled(t, prefix)
	log := &rangeLog{KV: client.KV}
	client.KV = log
	w := listingWatcher(t, client, prefix)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	l, err := w.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed, header := l.members, l.header
	first := log.take()
	requireListedAsEtcd(t, client, prefix, listed, header.Revision)
	log.take() // the check's read
	if first[0].kvs != listFirstPage || first[0].count != testGroup {
		t.Fatalf("first page: %d members of %d counted, want %d of %d", first[0].kvs, first[0].count, listFirstPage, testGroup)
	}
	meanBytes := first[0].bytes / first[0].kvs
	perPage := int64(testPageBytes / meanBytes)
	checkPages := func(what string, pages []listedPage, revision int64) {
		t.Helper()
		for i, p := range pages {
			if p.revision != revision {
				t.Fatalf("%s, page %d: read at revision %d, the listing's is %d", what, i, p.revision, revision)
			}
			if p.bytes > testPageBytes+testPageBytes/2 {
				t.Fatalf("%s, page %d: %d bytes, over the page's %d", what, i, p.bytes, testPageBytes)
			}
		}
	}
	checkPages("first listing", first[1:], header.Revision)

	snap, _, _ := emptySnapshot(0).replace(listed, nil, header.Revision, 0)
	w.snap.Store(snap)
	l, err = w.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed, header = l.members, l.header
	again := log.take()
	requireListedAsEtcd(t, client, prefix, listed, header.Revision)
	checkPages("re-listing", again, header.Revision)
	for i, p := range again {
		if p.count > 3*perPage {
			t.Fatalf("re-listing, page %d: etcd counted %d keys for a page of about %d", i, p.count, perPage)
		}
	}
	t.Logf("first listing %d pages, re-listing %d pages of about %d members", len(first), len(again), perPage)
}

// A re-listing bounds each page by the ttl, not the whole: a group that
// takes several ttls to read over a slow link still lists again.
func TestRelistingBoundedPerPage(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const prefix = "/slow-relist/"
	etcd := etcdtest.Start(t, 1)
	direct := etcd.Client(t)
	for i := range 200 {
		if _, err := direct.Put(context.Background(), fmt.Sprintf("%sm%03d", prefix, i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	client, err := devetcd.NewClient([]string{proxy.Endpoint()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cfg, _, err := newConfig(nil, prefix, 1, []Option{WithClient(client)}) // ttl 1 s
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher(client, func() {}, prefix, cfg)
	w.pageBytes = 400 // about ten members a page: twenty pages
	w.ctx, w.cancel = context.WithTimeout(context.Background(), waitFor)
	defer w.cancel()
	l, err := w.list(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.adopt(l, causeStart)

	proxy.DelayReplies(100 * time.Millisecond) // twenty pages: 2 s, twice the ttl
	start := time.Now()
	w.relist(causeWatchFailed)
	if w.ctx.Err() != nil {
		t.Fatalf("the re-listing did not end in %v", waitFor)
	}
	t.Logf("re-listed in %v, %d listings", time.Since(start), w.listings.Load())
	if got := w.listings.Load(); got != 2 {
		t.Fatalf("%d listings, want 2", got)
	}
}

package biregister

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// testRoot is the root the tests of ListGroups fill.
const testRoot = "/fleet/"

// fillRoot starts etcd and fills testRoot: groups g00 … of 1 to 7 members,
// some created by one transaction, the youngest first by name in others;
// markers of graceful leaves and deeper keys in some, a prefix with deeper
// keys only, keys directly under the root, keys beside it, and groups whose
// keys come in another order than their names. It returns
// a client.
func fillRoot(t *testing.T) *clientv3.Client {
	t.Helper()
	client := etcdtest.Start(t, 1).Client(t)
	put := func(ops ...clientv3.Op) {
		t.Helper()
		if _, err := client.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for g := range 40 {
		prefix := fmt.Sprintf("%sg%02d/", testRoot, g)
		var together []clientv3.Op
		for m := range g%7 + 1 {
			key := fmt.Sprintf("%sm%d", prefix, (m+g)%7) // not created in name order
			if g%3 == 0 {
				together = append(together, clientv3.OpPut(key, "v"))
			} else {
				put(clientv3.OpPut(key, "v"))
			}
		}
		if len(together) > 0 {
			put(together...)
		}
		if g%5 == 0 {
			put(clientv3.OpPut(prefix+leavingDir+"m9", "1"), clientv3.OpPut(prefix+"sub/x", "v"), clientv3.OpPut(prefix, "v"))
		}
	}
	put(clientv3.OpPut(testRoot+"deeper-only/sub/x", "v"), clientv3.OpPut(testRoot+"deeper-only/"+leavingDir+"y", "1"),
		clientv3.OpPut(testRoot+"x", "v"), clientv3.OpPut(testRoot, "v"), clientv3.OpPut(testRoot+"/m", "v"),
		clientv3.OpPut(strings.TrimSuffix(testRoot, "/")+"2/g/m", "v"), clientv3.OpPut(testRoot+"g-/m", "v"),
		// Before g01/ by key, after it by name.
		clientv3.OpPut(testRoot+"g01-b/m", "v"))
	return client
}

// groupsInEtcd returns the groups under root at revision by a rule of its
// own, not listRoot's, from one Get of the whole root: keys split at '/',
// the leader found by comparing create revisions, then names.
func groupsInEtcd(t *testing.T, client *clientv3.Client, root string, revision int64) []GroupSummary {
	t.Helper()
	resp, err := client.Get(context.Background(), root, clientv3.WithPrefix(), clientv3.WithRev(revision))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*GroupSummary{}
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), root), "/")
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			continue
		}
		g, ok := byName[parts[0]]
		if !ok {
			g = &GroupSummary{Name: parts[0], Leader: parts[1], Term: kv.CreateRevision}
			byName[parts[0]] = g
		}
		g.Members++
		if kv.CreateRevision < g.Term || (kv.CreateRevision == g.Term && parts[1] < g.Leader) {
			g.Leader, g.Term = parts[1], kv.CreateRevision
		}
	}
	var groups []GroupSummary
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		groups = append(groups, *byName[name])
	}
	return groups
}

// pageLog wraps a client's KV and records each read it is asked for.
type pageLog struct {
	clientv3.KV
	mu    sync.Mutex
	reads []clientv3.Op
	// afterFirst, if set, runs once, after the first read.
	afterFirst func()
}

func (l *pageLog) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := l.KV.Get(ctx, key, opts...)
	l.mu.Lock()
	first := len(l.reads) == 0
	l.reads = append(l.reads, clientv3.OpGet(key, opts...))
	l.mu.Unlock()
	if first && l.afterFirst != nil {
		l.afterFirst()
	}
	return resp, err
}

// The groups under a root read in many small pages are those that one Get
// of the root shows: every page reads keys only, at the revision of the
// first, and a group whose members span pages is counted once.
func TestListRootInPages(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	client := fillRoot(t)
	log := &pageLog{KV: client.KV}
	client.KV = log
	ctx := context.Background()

	// Pages of about 4 keys, after the first of listFirstPage.
	groups, revision, err := listRoot(ctx, client, testRoot, 4*(len("/fleet/g00/m0")+kvOverhead), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reads := log.reads
	want := groupsInEtcd(t, client, testRoot, revision)
	if !slices.Equal(groups, want) {
		t.Fatalf("listed in pages:\n%v\none Get:\n%v", groups, want)
	}
	if len(want) != 42 {
		t.Fatalf("%d groups, want 40, g- and g01-b", len(want))
	}
	if len(reads) < 30 {
		t.Fatalf("%d pages, want many", len(reads))
	}
	for i, op := range reads {
		switch {
		case !op.IsKeysOnly():
			t.Fatalf("page %d reads values", i)
		case i == 0 && op.Limit() != listFirstPage:
			t.Fatalf("first page asks for %d keys, want %d", op.Limit(), listFirstPage)
		case i > 0 && (op.Rev() != revision || op.Limit() > 6):
			t.Fatalf("page %d asks for %d keys at revision %d; want about 4 at %d", i, op.Limit(), op.Rev(), revision)
		}
	}

	// The same in pages of the default size: two, the first of listFirstPage.
	log.reads = nil
	again, revision, err := listRoot(ctx, client, testRoot, listPageBytes, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, want) || len(log.reads) != 2 {
		t.Fatalf("listed in %d pages of the default size at revision %d:\n%v\nwant\n%v", len(log.reads), revision, again, want)
	}
}

// Writes between the pages of a listing change nothing it returns: every
// page reads the revision of the first, and the groups are those of that
// revision, though by the last page etcd holds others.
func TestListRootOneRevision(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	client := fillRoot(t)
	ctx := context.Background()
	writes := &pageLog{KV: client.KV}
	writes.afterFirst = func() {
		// A leader and a whole group gone, members and a group added, all
		// in pages still to read.
		for _, op := range []clientv3.Op{
			clientv3.OpDelete(testRoot + "g30/m2"),
			clientv3.OpDelete(testRoot+"g39/", clientv3.WithPrefix()),
			clientv3.OpPut(testRoot+"g31/new", "v"),
			clientv3.OpPut(testRoot+"g35-new/m", "v"),
		} {
			if _, err := writes.KV.Do(ctx, op); err != nil {
				t.Error(err)
			}
		}
	}
	client.KV = writes
	groups, revision, err := listRoot(ctx, client, testRoot, 4*(len("/fleet/g00/m0")+kvOverhead), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(writes.reads) < 10 {
		t.Fatalf("%d pages, want many", len(writes.reads))
	}
	if want := groupsInEtcd(t, client, testRoot, revision); !slices.Equal(groups, want) {
		t.Fatalf("listed at revision %d:\n%v\netcd held then:\n%v", revision, groups, want)
	}
	if now := groupsInEtcd(t, client, testRoot, 0); slices.Equal(groups, now) {
		t.Fatal("the writes between the pages changed no group: the test tests nothing")
	}
}

// A listing whose revision is compacted before its last page lists again,
// at a newer revision.
func TestListRootCompactedMeanwhile(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	client := fillRoot(t)
	kv := &compactingKV{KV: client.KV}
	client.KV = kv
	groups, revision, err := listRoot(context.Background(), client, testRoot, listPageBytes, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("a listing whose revision was compacted: %v", err)
	}
	if kv.compacted.Load() == 0 || revision < kv.compacted.Load() {
		t.Fatalf("listed at revision %d, want at least the compacted %d", revision, kv.compacted.Load())
	}
	if want := groupsInEtcd(t, client, testRoot, revision); !slices.Equal(groups, want) {
		t.Fatalf("listed at revision %d:\n%v\netcd held then:\n%v", revision, groups, want)
	}
}

// ListGroups refuses an empty root, as List an empty prefix.
func TestListGroupsEmptyRoot(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	_, _, err := ListGroups([]string{"127.0.0.1:1"}, "", 1)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ListGroups of an empty root: %v, want ErrInvalidArgument", err)
	}
}

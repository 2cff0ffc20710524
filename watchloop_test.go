package biregister

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// deletingKV deletes a key and compacts history at that very revision,
// once, right after the first listing page read once it is armed.
type deletingKV struct {
	clientv3.KV
	key   string
	armed chan struct{}
	once  sync.Once
}

func (kv *deletingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := kv.KV.Get(ctx, key, opts...)
	select {
	case <-kv.armed:
	default:
		return resp, err
	}
	kv.once.Do(func() {
		deleted, err := kv.KV.Delete(ctx, kv.key)
		if err == nil {
			_, err = kv.KV.Compact(ctx, deleted.Header.Revision)
		}
		if err != nil {
			panic(err)
		}
	})
	return resp, err
}

// On etcd before the fix of etcd-io/etcd#18089 (Debian's 3.4.23 among
// them), history compacted at exactly the revision a watch starts from
// drops the DELETE made there, and the watch does not fail. After a
// listing again, the Watcher's watch starts at the listed revision, one
// before: here a member leaves right after the listing and history is
// compacted at that very revision, and the watch fails, compacted, and the
// listing that follows drops the member. (make test-etcd34 runs it
// against 3.4.23; embedded etcd has the fix.)
func TestDeleteAtCompactedWatchStart(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	direct := etcd.Client(t)
	ctx := context.Background()
	put := func(name string) int64 {
		t.Helper()
		resp, err := direct.Put(ctx, "/compacted/"+name, "v")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	put("a")
	put("b")
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	cli, err := devetcd.NewClient([]string{proxy.Endpoint()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	kv := &deletingKV{KV: cli.KV, key: "/compacted/a", armed: make(chan struct{})}
	cli.KV = kv
	w, err := NewWatcher(nil, "/compacted", 2, WithClient(cli))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// The watch falls behind a compaction, fails when it resumes, and the
	// group is listed again; right after that listing, a leaves.
	proxy.Stall()
	put("c")
	if _, err := direct.Compact(ctx, put("d")); err != nil {
		t.Fatal(err)
	}
	close(kv.armed)
	proxy.Cut()
	proxy.Heal()
	waitUntil(t, waitFor, func() bool { return w.GetValueByName("d") == "v" && w.GetValueByName("a") == "" })
}

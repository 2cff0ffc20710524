package biregister

import (
	"context"
	"testing"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// On etcd before the fix of etcd-io/etcd#18089 (Debian's 3.4.23 among
// them), history compacted at exactly the revision a watch starts from
// drops the DELETE made there, and the watch does not fail. The Watcher's
// watch starts at the revision its cache holds, one before: it fails,
// compacted, and the listing that follows drops the member. (make
// test-etcd34 runs it against 3.4.23; embedded etcd has the fix.)
func TestDeleteAtCompactedWatchStart(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	cli := etcd.Client(t)
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		if _, err := cli.Put(ctx, "/compacted/"+name, "v"); err != nil {
			t.Fatal(err)
		}
	}
	cfg, prefix, err := newConfig(nil, "/compacted", 5, []Option{WithClient(cli)})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher(cli, func() {}, prefix, cfg)
	l, err := w.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.adopt(l, causeStart)
	// Between the listing and the watch: a member leaves, and history is
	// compacted at that very revision.
	deleted, err := cli.Delete(ctx, "/compacted/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, deleted.Header.Revision); err != nil {
		t.Fatal(err)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	defer w.Close()
	waitUntil(t, waitFor, func() bool { return w.GetValueByName("a") == "" && w.GetValueByName("b") == "v" })
}

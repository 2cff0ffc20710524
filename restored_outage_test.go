package biregister_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// TestRestoredEtcdValueRepaired with an outage long enough for the Watcher
// to give up its watch (it logs a stall) before etcd comes back restored:
// the Watcher lists the restored etcd for a stall, not for a replaced etcd,
// and still counts another incarnation (its revision is below the view's),
// so the Register judges the view despite its write's higher revision and
// writes its value again.
func TestRestoredAfterOutageValueRepaired(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	m, start := sameFlagsMember(t)
	endpoints := []string{m.ClientURL.String()}
	var logs syncbuf.Buffer
	a := startRegister(t, endpoints, "/restored", "a", "old", 2,
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	cli := memberClient(t, endpoints)

	backup := filepath.Join(t.TempDir(), "backup")
	start(func() { require.NoError(t, os.CopyFS(backup, os.DirFS(m.Dir))) })
	for range 5 {
		_, err := cli.Put(context.Background(), "/elsewhere", "x")
		require.NoError(t, err)
	}
	require.NoError(t, a.SetValue(context.Background(), "new"))
	// The view holds the write before etcd goes: a view that never saw
	// it is not told apart from an etcd restored to that view's revision.
	require.Eventually(t, func() bool { return a.GetValueByName("a") == "new" }, waitFor, time.Millisecond)

	start(func() {
		// An outage: the Watcher gives up its watch and lists again
		// until etcd answers (the probe gives up after two silent
		// intervals and a read of ttl). etcd restores the lease with
		// its key, and renews it as it starts.
		require.Empty(t, logs.WaitFor(time.After(3*waitFor), "listing failed, retrying"),
			"the Watcher never gave up its watch")
		require.NoError(t, os.RemoveAll(m.Dir))
		require.NoError(t, os.CopyFS(m.Dir, os.DirFS(backup)))
		require.NoError(t, os.Chmod(m.Dir, 0o700))
	})
	require.Eventually(t, func() bool {
		resp, err := cli.Get(context.Background(), "/restored/a")
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "new"
	}, waitFor, 50*time.Millisecond, "etcd holds another value at the key than the Register's %q", "new")
}

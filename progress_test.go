package biregister_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

// Progress requests on the stream a Watcher shares with other watches (its
// client given by WithClient; other Watchers' idle probes, or the user's
// own requests) lose no change, whatever the server. etcd before 3.4.25 and
// 3.5.8 (Debian's 3.4.23 among them) answers them at once with its current
// revision, to every watch of the stream, even one whose events below that
// revision are still on their way (etcd-io/etcd#15220). A cache that took
// that revision for the last one it holds skipped those events for good:
// here, on etcd 3.4.23, tens of members wrong in every run. Against a
// server with etcd's fix (the embedded 3.6) it checks the same of a shared
// stream busy with progress requests, where answers never overtake events.
func TestProgressRequestsOnSharedStreamLoseNothing(t *testing.T) {
	etcd := startEtcd(t)
	shared := etcd.Client(t)
	writer := etcd.Client(t)
	const prefix = "/progress/"
	w := startWatcher(t, nil, prefix, biregister.WithClient(shared))

	ctx, cancel := context.WithCancel(context.Background())
	var requests sync.WaitGroup
	requests.Add(1)
	go func() {
		defer requests.Done()
		// The Watcher's watch metadata, so the Watcher's stream; a thousand
		// requests a second, so that answers often overtake events.
		rctx := clientv3.WithRequireLeader(ctx)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil {
			_ = shared.RequestProgress(rctx)
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	}()
	// Big values make the watch fall behind the writes, so that events wait
	// on the server while progress answers go out.
	value := strings.Repeat("v", 16<<10)
	var writers sync.WaitGroup
	for g := range 8 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 300 {
				key := fmt.Sprintf("%sk%d-%d", prefix, g, i%16)
				var err error
				if i%3 == 2 {
					_, err = writer.Delete(ctx, key)
				} else {
					_, err = writer.Put(ctx, key, fmt.Sprint(i)+value)
				}
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	writers.Wait()
	cancel()
	requests.Wait()

	resp, err := writer.Get(context.Background(), prefix, clientv3.WithPrefix())
	require.NoError(t, err)
	truth := map[string]string{}
	for _, kv := range resp.Kvs {
		truth[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
	}
	require.Eventually(t, func() bool { return maps.Equal(truth, w.GetAll()) }, waitFor, 10*time.Millisecond,
		"the cache differs from etcd at revision %d", resp.Header.Revision)
}

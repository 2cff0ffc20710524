package biregister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

// writeWhileNobodyReads starts etcd and a Watcher of prefix with a buffer
// of buffer changes, puts total members m000, m001, … one by one, and
// returns once the cache holds them all, nobody having read Changes.
func writeWhileNobodyReads(t *testing.T, prefix string, buffer, total int) (biregister.Watcher, *clientv3.Client) {
	t.Helper()
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	w := startWatcher(t, etcd.Endpoints(), prefix, biregister.WithBufferSize(buffer))
	for i := range total {
		_, err := cli.Put(context.Background(), fmt.Sprintf("%sm%03d", prefix, i), "v")
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return len(w.GetNames()) == total }, waitFor, time.Millisecond,
		"the cache must follow etcd although nobody reads Changes")
	return w, cli
}

// A consumer that never reads must not block the cache nor make memory grow:
// the changes that do not fit are replaced by one RESYNC.
func TestWatcherSlowConsumer(t *testing.T) {
	const buffer, total = 5, 60
	w, cli := writeWhileNobodyReads(t, "/slow/", buffer, total)
	ctx := context.Background()
	assert.Equal(t, buffer, cap(w.Changes()))
	assert.Equal(t, buffer, len(w.Changes()))

	for i := range buffer {
		c := recv(t, w.Changes())
		assert.Equal(t, fmt.Sprintf("m%03d", i), c.Name)
	}
	c := recv(t, w.Changes())
	assert.Equal(t, biregister.OpResync, c.Op, "dropped changes must be reported")
	assert.Len(t, w.GetAll(), total)

	// Delivery goes on normally after the RESYNC.
	_, err := cli.Delete(ctx, "/slow/m000")
	require.NoError(t, err)
	c = recv(t, w.Changes())
	assert.Equal(t, biregister.Change{Name: "m000", Op: biregister.OpDelete, Value: "v", Revision: c.Revision, Suspect: true}, c)
}

// A consumer that falls behind by more than the channel holds gets every
// change that fits in its buffer, in order, then one RESYNC; the buffer
// beyond the channel is taken only while it is behind.
func TestWatcherSlowConsumerBeyondTheChannel(t *testing.T) {
	const buffer, total = 150, 200
	w, cli := writeWhileNobodyReads(t, "/slower/", buffer, total)
	ctx := context.Background()
	assert.Less(t, cap(w.Changes()), buffer, "the channel itself is small")

	for i := range buffer {
		c := recv(t, w.Changes())
		require.Equal(t, fmt.Sprintf("m%03d", i), c.Name, "change %d out of order", i)
		assert.Equal(t, "v", w.GetValueByName(c.Name), "the cache holds a change when it is delivered")
	}
	assert.Equal(t, biregister.OpResync, recv(t, w.Changes()).Op, "dropped changes must be reported")
	_, err := cli.Delete(ctx, "/slower/m000")
	require.NoError(t, err)
	c := recv(t, w.Changes())
	assert.Equal(t, biregister.Change{Name: "m000", Op: biregister.OpDelete, Value: "v", Revision: c.Revision, Suspect: true}, c)
}

// Close closes Changes after what the channel holds: a consumer still
// receives those changes, in order, and none of those queued behind them.
func TestCloseDropsQueuedChanges(t *testing.T) {
	const buffer, total = 150, 100
	w, _ := writeWhileNobodyReads(t, "/closing/", buffer, total)
	held := cap(w.Changes())
	require.Less(t, held, total, "the test needs changes queued behind the channel")
	w.Close()
	var got []string
	for c := range w.Changes() {
		got = append(got, c.Name)
	}
	require.Len(t, got, held, "what the channel held, and nothing queued behind it")
	for i, name := range got {
		assert.Equal(t, fmt.Sprintf("m%03d", i), name)
	}
}

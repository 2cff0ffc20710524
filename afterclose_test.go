package biregister_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
)

// After Close every method has the answer README's "After Close" table
// gives, and none blocks: a closed Watcher reads as an empty group whose
// feeds are closed, a closed Register leads nothing and refuses requests.
func TestEveryMethodAfterClose(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	w := startWatcher(t, etcd.Endpoints(), "/after-close")
	r := startRegister(t, etcd.Endpoints(), "/after-close", "a", "v", 2)
	require.Eventually(t, func() bool { return len(w.GetNames()) == 1 }, waitFor, time.Millisecond)
	key, client := r.MyKey(), r.EtcdClient()
	w.Close()
	r.Close()

	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, x := range []biregister.Watcher{w, r} {
			x.Close() // idempotent
			assert.Empty(t, x.GetAll())
			assert.NotNil(t, x.GetAll(), "a map the caller may fill")
			assert.Empty(t, x.GetNames())
			assert.Empty(t, x.GetValues())
			assert.Empty(t, x.GetValueByName("a"))
			name, value := x.GetLeader()
			assert.Empty(t, name+value)
			assert.Empty(t, x.Members())
			assert.Zero(t, x.View().Len())
			for what, ch := range map[string]<-chan struct{}{"Updated": x.Updated(), "View().Updated": x.View().Updated(), "Closed": x.Closed()} {
				select {
				case <-ch:
				default:
					t.Errorf("%s is not closed", what)
				}
			}
			for range x.Changes() { // closed: the loop ends
			}
			st := x.Status()
			assert.False(t, st.Current)
			assert.False(t, st.Registered)
			assert.False(t, st.Leading)
			assert.Zero(t, st.LeaseLeft)
			require.ErrorIs(t, x.Ready(), biregister.ErrNotReady)
			assert.Contains(t, x.Ready().Error(), "closed")
			assert.Equal(t, "/after-close/", x.Prefix())
		}
		assert.Same(t, client, r.EtcdClient())
		assert.Equal(t, key, r.MyKey())
		assert.Equal(t, "a", r.MyName())
		assert.False(t, r.AmILeader())
		assert.Zero(t, r.MyRevision())
		ctx := context.Background()
		assert.ErrorIs(t, r.SetValue(ctx, "x"), biregister.ErrClosed)
		assert.ErrorIs(t, r.Resign(ctx), biregister.ErrClosed)
		assert.ErrorIs(t, r.WaitLeader(ctx), biregister.ErrClosed)
		term, err := r.WaitTerm(ctx)
		assert.ErrorIs(t, err, biregister.ErrClosed)
		assert.Nil(t, term)
		assert.ErrorIs(t, r.Lead(ctx, func(*biregister.Term) { t.Error("work ran after Close") }), biregister.ErrClosed)
		// The fence of a closed Register never holds, not even on the key
		// now absent.
		resp, err := cli.Txn(ctx).If(r.Fence()).Then(clientv3.OpPut("/owner", "a")).Commit()
		if assert.NoError(t, err) {
			assert.False(t, resp.Succeeded)
		}
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("a method blocked after Close")
	}
}

// Close never waits on an etcd that does not answer for longer than its
// bound (min(ttl, 2 s) for the revoke), whatever the ttl: a process under
// Kubernetes has 30 s to end by default, and a ttl of 30–60 s is common.
func TestCloseBoundedWithLongTTL(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 60
	r, err := biregister.NewRegister([]string{proxy.Endpoint()}, "/close-long", "a", "v", ttl)
	require.NoError(t, err)
	proxy.Stall()
	defer proxy.Heal()
	start := time.Now()
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
		t.Logf("Close returned after %v", time.Since(start))
	case <-time.After(2*time.Second + 3*time.Second):
		t.Fatal("Close waited on etcd beyond its bound")
	}
}

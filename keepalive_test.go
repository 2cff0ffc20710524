package biregister

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// While answers are held, each keepalive goes out on a new stream (the
// current one left its keepalive unanswered for more than half an
// interval), a stream is given up once its oldest keepalive could no longer
// extend the lease, and no more than maxKeepAliveStreams are ever open. The
// test plays the registration loop: it sends on every tick and hands each
// result to answered.
func TestKeepAliveStreamsWhileAnswersHeld(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{proxy.Endpoint()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	lease, err := client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	proxy.DelayReplies(time.Minute)
	defer proxy.Heal()

	// Renewals every 200 ms; a stream given up 540 ms after its oldest
	// keepalive went out.
	const ttl = 600 * time.Millisecond
	var background sync.WaitGroup
	k := newKeepAliveStreams(ctx, client, ttl, &background)
	tick := time.NewTicker(keepAliveInterval(ttl))
	defer tick.Stop()
	opened, most := 0, 0
	for range 15 {
		before := k.current()
		k.send(lease.ID)
		if k.current() != before {
			opened++
		}
		most = max(most, len(k.open))
		if len(k.open) > maxKeepAliveStreams {
			t.Fatalf("%d keepalive streams open", len(k.open))
		}
		for waiting := true; waiting; {
			select {
			case result := <-k.answers:
				if _, ok := k.answered(result); ok && result.err == nil {
					t.Fatal("an answer came through although answers are held")
				}
			case <-tick.C:
				waiting = false
			}
		}
	}
	cancel()
	background.Wait()
	t.Logf("15 keepalives: %d streams opened, at most %d open at once", opened, most)
	// A tick late on a loaded machine lets streams be given up before the
	// next one opens: fewer open at once, never more.
	if opened < 10 || most < 2 {
		t.Fatalf("%d streams opened, at most %d open: want a new stream for nearly every keepalive, and old ones kept while they can still answer", opened, most)
	}
}

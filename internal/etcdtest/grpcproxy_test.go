package etcdtest

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/leakcheck"
)

// TestGRPCProxy checks that reads, writes and watches go through the proxy,
// that the faults of its front and back links fall where they should, and
// that the proxy follows a member that restarts.
func TestGRPCProxy(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := Start(t, 1)
	p := c.StartGRPCProxy(t)
	direct := c.Client(t)
	proxied := p.Client(t)

	put := mustPut(t, proxied, "k", "v")
	wantValue(t, mustGet(t, direct, "k"), "v")
	if p.Front().Conns() == 0 {
		t.Fatal("the client does not go through the proxy's front")
	}

	ctx := testContext(t)
	watch := proxied.Watch(ctx, "w", clientv3.WithRev(put.Header.Revision+1))
	mustPut(t, direct, "w", "1")
	select {
	case resp := <-watch:
		if err := resp.Err(); err != nil || len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "1" {
			t.Fatalf("watch through the proxy: %v, events %v", err, resp.Events)
		}
	case <-ctx.Done():
		t.Fatal("no event through the proxy")
	}

	// The front's faults are between the client and the proxy only.
	p.Front().Stall()
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := proxied.Get(short, "k")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get through a stalled front: %v, want a deadline error", err)
	}
	wantValue(t, mustGet(t, clientFor(t, p.DirectEndpoint()), "k"), "v")
	p.Front().Heal()
	wantValue(t, mustGet(t, proxied, "k"), "v")

	// A Back link's faults are between the proxy and its member only.
	p.Back(0).Stall()
	short, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = proxied.Get(short, "k")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get through a proxy whose back link stalls: %v, want a deadline error", err)
	}
	wantValue(t, mustGet(t, direct, "k"), "v")
	p.Back(0).Heal()
	wantValue(t, mustGet(t, proxied, "k"), "v")

	// The proxy reaches the member through its front, so it sees the
	// restart as a crash, reconnects, and its watch resumes.
	c.Stop(t, 0)
	c.Restart(t, 0)
	mustPut(t, direct, "w", "2")
	select {
	case resp := <-watch:
		if err := resp.Err(); err != nil || len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "2" {
			t.Fatalf("watch through the proxy after a restart: %v, events %v", err, resp.Events)
		}
	case <-ctx.Done():
		t.Fatal("no event through the proxy after a restart")
	}
	wantValue(t, mustGet(t, proxied, "w"), "2")
}

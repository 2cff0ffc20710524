package biregister

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// The keeper renews a lease an interval after the last send etcd
// acknowledged, not an interval after it was handed the lease: a lease
// whose clock a wait for the name or a long listing aged is renewed at
// once. Here the clock was last extended two thirds of a ttl ago; the
// renewal must come well before the interval of ttl/3 a keeper that
// counted from the hand-off would wait.
func TestKeeperRenewsAnAgedLeaseAtOnce(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const ttl = 30 * time.Second
	etcd := etcdtest.Start(t, 1)
	client, lease := keepAliveClient(t, 1, etcd.Endpoints()...)
	ctx, cancel := context.WithCancel(context.Background())
	k := newLeaseKeeper(ctx, client, ttl, "/aged/a", func(*etcdserverpb.ResponseHeader) {}, func() {}, nil, slog.New(slog.DiscardHandler))
	go k.run(ctx)
	defer func() {
		cancel()
		<-k.done
	}()
	clock := newLeaseClock()
	clock.extend(time.Now().Add(-2*keepAliveInterval(ttl)), ttl)
	aged := clock.remaining()
	k.keep(keptLease{id: lease.ID, clock: clock})
	renewed := time.Now().Add(keepAliveInterval(ttl) / 2)
	for clock.remaining() <= aged {
		if time.Now().After(renewed) {
			t.Fatalf("a lease with %v left of %v was not renewed within %v of the hand-off", aged, ttl, keepAliveInterval(ttl)/2)
		}
		time.Sleep(10 * time.Millisecond) // polling the clock, which the keeper extends
	}
}

// renewalDue counts from the clock's last extension: an interval after a
// fresh send, nothing once an interval has passed.
func TestRenewalDue(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const ttl = 9 * time.Second
	clock := newLeaseClock()
	clock.extend(time.Now(), ttl)
	if due := renewalDue(clock, ttl); due <= 0 || due > keepAliveInterval(ttl) {
		t.Fatalf("a lease just renewed is due in %v, want at most %v", due, keepAliveInterval(ttl))
	}
	clock.clear()
	clock.extend(time.Now().Add(-keepAliveInterval(ttl)), ttl)
	if due := renewalDue(clock, ttl); due != 0 {
		t.Fatalf("a lease renewed an interval ago is due in %v", due)
	}
}

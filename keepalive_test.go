package biregister

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// While answers are held, each keepalive goes out on a new stream (the
// current one left its keepalive unanswered for more than half an
// interval; with one endpoint, a round is one stream), a stream is given up
// once its oldest keepalive could no longer extend the lease, and no more
// than maxKeepAliveRounds are ever open. The test plays the registration
// loop: it sends on every tick and hands each result to answered.
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
		if len(k.open) > maxKeepAliveRounds {
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

// While every member holds its answers, each keepalive after the first goes
// out on a round of two streams, a majority of the three endpoints, on two
// different members. With two endpoints every round reaches both: once one
// of them answers again, its stream of the newest round becomes the only
// one, the others dropped at once, and every keepalive goes out on it alone.
func TestKeepAliveRoundsSpreadOverMembers(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 3)
	client, lease := keepAliveClient(t, 3, etcd.Endpoints()...)
	two, _ := keepAliveClient(t, 2, etcd.Endpoint(0), etcd.Endpoint(1))
	for i := range 3 {
		etcd.Front(i).DelayReplies(time.Minute)
		defer etcd.Front(i).Heal()
	}
	const ttl = 600 * time.Millisecond
	play := startKeepAliveLoop(t, client, ttl)
	reached := map[*keepAliveRound][]string{}
	for range 6 {
		play.interval(lease)
		for _, s := range play.k.open {
			if s.addr != "" {
				reached[s.round] = appendNew(reached[s.round], s.addr)
			}
		}
		if play.k.rounds() > maxKeepAliveRounds {
			t.Fatalf("%d rounds open", play.k.rounds())
		}
	}
	play.stop()
	if len(reached) < 3 {
		t.Fatalf("%d rounds of several streams in 6 intervals, want one for nearly every keepalive: %v", len(reached), reached)
	}
	for round, addrs := range reached {
		if len(addrs) != 2 {
			t.Errorf("a round reached %v (%d repicks left), want two members", addrs, round.repicks)
		}
	}

	play = startKeepAliveLoop(t, two, ttl)
	for range 3 {
		play.interval(lease)
	}
	etcd.Front(1).DelayReplies(0)
	var steady *keepAliveStream
	for i := range 3 {
		answers := play.interval(lease)
		if answers == 0 || len(play.k.open) != 1 || (i > 0 && play.k.current() != steady) {
			t.Fatalf("interval %d after member 1 answers again: %d answers, %d streams open, current one changed: %v",
				i, answers, len(play.k.open), i > 0 && play.k.current() != steady)
		}
		steady = play.k.current()
	}
	play.stop()
}

// A round whose streams all reach the one member the client can reach opens
// a bounded number of streams in place of those that landed on a taken
// member, and then keeps what it has.
func TestKeepAliveRoundRepicksBounded(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	etcd := etcdtest.Start(t, 1)
	nobody, err := devetcd.FreeURLs(1)
	if err != nil {
		t.Fatal(err)
	}
	client, lease := keepAliveClient(t, 1, etcd.Endpoint(0), nobody[0].String())
	etcd.Front(0).DelayReplies(time.Minute)
	defer etcd.Front(0).Heal()
	play := startKeepAliveLoop(t, client, 600*time.Millisecond)
	play.interval(lease) // the first keepalive: a round of one
	play.interval(lease) // silent: a round of two, a majority of two endpoints
	var round []*keepAliveStream
	for _, s := range play.k.open {
		if s.round == play.k.current().round {
			round = append(round, s)
		}
	}
	if len(round) != 2 || round[0].addr == "" || round[0].addr != round[1].addr || round[0].round.repicks != 0 {
		t.Fatalf("the round has %d streams, the last two on %q and %q with %d repicks left; want two on the one member, repicks used up",
			len(round), round[0].addr, round[len(round)-1].addr, round[0].round.repicks)
	}
	play.stop()
}

// keepAliveClient returns a client of endpoints, once it has a connection
// to each of the members that answer, and a lease of 60 s granted with it.
func keepAliveClient(t *testing.T, members int, endpoints ...string) (*clientv3.Client, *clientv3.LeaseGrantResponse) {
	t.Helper()
	client, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Round robin picks only among ready connections: one request per
	// member answered means each has one.
	answered := map[uint64]bool{}
	for len(answered) < members {
		resp, err := client.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		answered[resp.Header.MemberId] = true
	}
	lease, err := client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	return client, lease
}

// keepAlivePlay plays the keeper of a keepAliveStreams: it sends
// once an interval and hands each result to answered.
type keepAlivePlay struct {
	k          *keepAliveStreams
	tick       *time.Ticker
	cancel     context.CancelFunc
	background sync.WaitGroup
}

func startKeepAliveLoop(t *testing.T, client *clientv3.Client, ttl time.Duration) *keepAlivePlay {
	ctx, cancel := context.WithCancel(context.Background())
	p := &keepAlivePlay{tick: time.NewTicker(keepAliveInterval(ttl)), cancel: cancel}
	p.k = newKeepAliveStreams(ctx, client, ttl, &p.background)
	t.Cleanup(p.stop)
	return p
}

// interval sends a keepalive of lease and hands results to answered until
// the next tick; it returns how many keepalives were answered.
func (p *keepAlivePlay) interval(lease *clientv3.LeaseGrantResponse) int {
	p.k.send(lease.ID)
	answers := 0
	for {
		select {
		case result := <-p.k.answers:
			if _, ok := p.k.answered(result); ok && result.err == nil {
				answers++
			}
		case <-p.tick.C:
			return answers
		}
	}
}

// stop ends every stream and waits for their goroutines.
func (p *keepAlivePlay) stop() {
	p.tick.Stop()
	p.cancel()
	p.background.Wait()
}

func appendNew(addrs []string, addr string) []string {
	if slices.Contains(addrs, addr) {
		return addrs
	}
	return append(addrs, addr)
}

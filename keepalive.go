// Renewing a Register's lease over long-lived LeaseKeepAlive streams, and
// matching each answer to the send time of its request.
//
// One message to etcd per keepalive, where a KeepAliveOnce opens a stream each
// time. etcd answers a stream's requests one by one, in order (server
// v3rpc/lease.go, leaseKeepAlive), so the send times queued on a stream match
// its answers and the lease deadline still dates from the send of the
// acknowledged keepalive.
//
// A keepalive left unanswered for half an interval (on a healthy link answers
// take milliseconds) makes the next one go out on new streams, while the old
// stream keeps its chance to answer until its oldest request could no longer
// extend the lease. The new streams go to a majority of the client's
// endpoints, each to another connection: a member frozen by its machine keeps
// its connection open and looks healthy, and gRPC's round robin, which picks
// the connection of each new stream, interleaves the picks of every user of
// the client, so that one Register's successive new streams may reach the
// frozen member every time while the others serve. A majority of distinct
// members holds one that answers as long as a quorum is up. The first of the
// new streams to answer becomes the one keepalives go out on, and the others
// are closed: in steady state that is one stream and one message per renewal.

package biregister

import (
	"context"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// maxKeepAliveRounds bounds the rounds of streams open at once: one in steady
// state, one more per interval etcd leaves a keepalive unanswered.
const maxKeepAliveRounds = 3

// keepAliveStreams renews one Register's lease. Only the keeper
// calls its methods and reads answers; each stream has at most one goroutine
// of its own, living for one Recv, which hands its result to answers.
type keepAliveStreams struct {
	// Set when built; never change.
	client     *clientv3.Client
	leases     pb.LeaseClient
	ttl        time.Duration
	ctx        context.Context      // the keeper's: ends every stream
	answers    chan keepAliveResult // to the keeper
	background *sync.WaitGroup      // the keeper's: counts the goroutines started here

	open []*keepAliveStream // the current one last
}

// keepAliveRound is the streams opened at once for one keepalive.
type keepAliveRound struct {
	// repicks is how many more streams may be opened in place of ones that
	// reached a member another stream of the round reached. Written by the
	// loop.
	repicks int
}

// keepAliveStream is one LeaseKeepAlive stream. The loop writes every field;
// the stream's goroutines only name it in their results.
type keepAliveStream struct {
	round      *keepAliveRound
	stream     pb.Lease_LeaseKeepAliveClient // nil while its opener runs
	addr       string                        // the member it reached, once known; "" in a round of one
	cancel     context.CancelFunc
	unanswered []sentKeepAlive // oldest first
	receiving  bool            // a goroutine waits for its next answer
}

// sentKeepAlive is a keepalive request of lease, sent no earlier than sent.
type sentKeepAlive struct {
	lease clientv3.LeaseID
	sent  time.Time
}

// keepAliveResult is the next answer on a stream, or why there is none, or,
// with landed alone, where a stream of a round of several went.
type keepAliveResult struct {
	from   *keepAliveStream
	landed string                        // set alone by the opener: the address of the member reached
	opened pb.Lease_LeaseKeepAliveClient // set by the goroutine that opened the stream
	resp   *pb.LeaseKeepAliveResponse
	err    error
}

func newKeepAliveStreams(ctx context.Context, client *clientv3.Client, ttl time.Duration, background *sync.WaitGroup) *keepAliveStreams {
	return &keepAliveStreams{
		client:     client,
		leases:     pb.NewLeaseClient(client.ActiveConnection()),
		ttl:        ttl,
		ctx:        ctx,
		answers:    make(chan keepAliveResult, maxKeepAliveRounds),
		background: background,
	}
}

// waitedSince returns how long s has left its oldest keepalive unanswered.
func (s *keepAliveStream) waitedSince(now time.Time) time.Duration {
	if len(s.unanswered) == 0 {
		return 0
	}
	return now.Sub(s.unanswered[0].sent)
}

// current returns the stream new keepalives go out on, or nil.
func (k *keepAliveStreams) current() *keepAliveStream {
	if len(k.open) == 0 {
		return nil
	}
	return k.open[len(k.open)-1]
}

// send renews lease.
func (k *keepAliveStreams) send(lease clientv3.LeaseID) {
	now := time.Now()
	current := k.current()
	silent := current != nil && current.waitedSince(now) >= keepAliveInterval(k.ttl)/2
	k.drop(func(s *keepAliveStream) bool {
		if len(s.unanswered) == 0 {
			return s != current // nothing left to wait for on it
		}
		// Its oldest keepalive could no longer extend the lease, nor could
		// any later one: etcd answers in order.
		return s.waitedSince(now) >= k.ttl-leaseMargin(k.ttl)
	})
	current = k.current()
	switch {
	case current == nil || silent:
		if k.rounds() < maxKeepAliveRounds {
			k.openRound(lease, silent)
		}
	case current.stream == nil:
		// Its opener is still at work, with a keepalive of its own.
	default:
		keepAlive := sentKeepAlive{lease: lease, sent: time.Now()}
		// Send only queues the request: it does not wait for the network,
		// and flow control never fills with a few requests in flight.
		if err := current.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease)}); err != nil {
			k.drop(func(s *keepAliveStream) bool { return s == current })
			k.openRound(lease, false)
			return
		}
		current.unanswered = append(current.unanswered, keepAlive)
		k.receive(current)
	}
}

// openRound opens new streams and sends each a keepalive of lease: one, or,
// if the current stream went silent, one to each of a majority of the
// client's endpoints.
func (k *keepAliveStreams) openRound(lease clientv3.LeaseID, spread bool) {
	n := 1
	if spread {
		n = len(k.client.Endpoints())/2 + 1
	}
	// Picks in a row go to members in turn, unless others' picks come in
	// between: a few more make up for those.
	round := &keepAliveRound{repicks: 4 * (n - 1)}
	keepAlive := sentKeepAlive{lease: lease, sent: time.Now()}
	for range n {
		k.openStream(round, keepAlive, n > 1)
	}
}

// rounds returns how many rounds the open streams belong to.
func (k *keepAliveStreams) rounds() int {
	n := 0
	for i, s := range k.open {
		if !slices.ContainsFunc(k.open[:i], func(o *keepAliveStream) bool { return o.round == s.round }) {
			n++
		}
	}
	return n
}

// openStream opens a new current stream of round in the background, and
// sends it keepAlive; if tell, it first reports which member the stream
// reached.
func (k *keepAliveStreams) openStream(round *keepAliveRound, keepAlive sentKeepAlive, tell bool) {
	// WithRequireLeader: a member cut off from the cluster ends the stream
	// instead of holding keepalives it cannot renew.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(k.ctx))
	s := &keepAliveStream{round: round, cancel: cancel, receiving: true, unanswered: []sentKeepAlive{keepAlive}}
	k.open = append(k.open, s)
	k.background.Add(1)
	go func() {
		defer k.background.Done()
		// As etcd's own client: wait for a connection rather than fail fast.
		stream, err := k.leases.LeaseKeepAlive(ctx, grpc.WaitForReady(true))
		if err != nil {
			k.report(keepAliveResult{from: s, err: err})
			return
		}
		// Asking for the peer commits the stream to its connection: gRPC no
		// longer retries it elsewhere by itself if the member refuses it,
		// and the error ends the stream instead. A round of one does not ask.
		if p, ok := peer.FromContext(stream.Context()); tell && ok {
			k.report(keepAliveResult{from: s, landed: p.Addr.String()})
		}
		result := keepAliveResult{from: s, opened: stream}
		if result.err = stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(keepAlive.lease)}); result.err == nil {
			result.resp, result.err = stream.Recv()
		}
		k.report(result)
	}()
}

// receive waits for s's next answer in the background.
func (k *keepAliveStreams) receive(s *keepAliveStream) {
	if s.receiving {
		return
	}
	s.receiving = true
	stream := s.stream
	k.background.Add(1)
	go func() {
		defer k.background.Done()
		resp, err := stream.Recv()
		k.report(keepAliveResult{from: s, resp: resp, err: err})
	}()
}

// report hands a result to the loop, unless the loop has ended.
func (k *keepAliveStreams) report(result keepAliveResult) {
	select {
	case k.answers <- result:
	case <-k.ctx.Done():
	}
}

// drop closes and forgets the streams that match.
func (k *keepAliveStreams) drop(match func(s *keepAliveStream) bool) {
	kept := k.open[:0]
	for _, s := range k.open {
		if match(s) {
			s.cancel()
		} else {
			kept = append(kept, s)
		}
	}
	clear(k.open[len(kept):])
	k.open = kept
}

// answered takes the answer to the oldest keepalive of result.from off its
// queue; ok is false if the result is about a stream dropped since, or says
// only where a stream went. A stream that failed is dropped. The first
// stream of the newest round to answer becomes current; a stream of an older
// round is dropped once it has nothing left to answer, and so is any stream
// that waits only for keepalives sent no later than the one answered: their
// answers could extend the lease no further.
func (k *keepAliveStreams) answered(result keepAliveResult) (answered sentKeepAlive, ok bool) {
	s := result.from
	if !slices.Contains(k.open, s) {
		return sentKeepAlive{}, false
	}
	if result.landed != "" {
		k.landed(s, result.landed)
		return sentKeepAlive{}, false
	}
	s.receiving = false
	if result.opened != nil {
		s.stream = result.opened
	}
	if result.err != nil {
		k.drop(func(live *keepAliveStream) bool { return live == s })
		return sentKeepAlive{}, true
	}
	answered = s.unanswered[0]
	s.unanswered = s.unanswered[1:]
	switch {
	case s.round == k.current().round:
		k.open = append(slices.DeleteFunc(k.open, func(o *keepAliveStream) bool { return o == s }), s)
	case len(s.unanswered) == 0:
		k.drop(func(live *keepAliveStream) bool { return live == s })
	}
	k.drop(func(o *keepAliveStream) bool {
		return o != s && len(o.unanswered) > 0 && !o.unanswered[len(o.unanswered)-1].sent.After(answered.sent)
	})
	if len(s.unanswered) > 0 {
		k.receive(s)
	}
	return answered, true
}

// landed notes that s reached the member at addr, and opens another stream
// in its place if another stream of its round reached the same member, while
// the round may.
func (k *keepAliveStreams) landed(s *keepAliveStream, addr string) {
	s.addr = addr
	taken := slices.ContainsFunc(k.open, func(o *keepAliveStream) bool {
		return o != s && o.round == s.round && o.addr == addr
	})
	if !taken || s.round.repicks == 0 {
		return
	}
	s.round.repicks--
	k.drop(func(live *keepAliveStream) bool { return live == s })
	k.openStream(s.round, s.unanswered[0], true)
}

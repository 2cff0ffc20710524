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
// take milliseconds) makes the next one go out on a new stream, which may
// reach a live connection or another member, while the old stream keeps its
// chance to answer until its oldest request could no longer extend the lease.

package biregister

import (
	"context"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// maxKeepAliveStreams bounds the streams open at once: one in steady state,
// one more per interval etcd leaves a keepalive unanswered.
const maxKeepAliveStreams = 3

// keepAliveStreams renews one Register's lease. Only the registration loop
// calls its methods and reads answers; each stream has at most one goroutine
// of its own, living for one Recv, which hands its result to answers.
type keepAliveStreams struct {
	// Set when built; never change.
	leases     pb.LeaseClient
	ttl        time.Duration
	ctx        context.Context      // the registration loop's: ends every stream
	answers    chan keepAliveResult // to the loop
	background *sync.WaitGroup      // the Register's: counts the goroutines started here

	open []*keepAliveStream // the current one last
}

// keepAliveStream is one LeaseKeepAlive stream.
type keepAliveStream struct {
	stream     pb.Lease_LeaseKeepAliveClient // nil while its opener runs
	cancel     context.CancelFunc
	unanswered []sentKeepAlive // oldest first
	receiving  bool            // a goroutine waits for its next answer
}

// sentKeepAlive is a keepalive request of lease, sent no earlier than sent.
type sentKeepAlive struct {
	lease clientv3.LeaseID
	sent  time.Time
}

// keepAliveResult is the next answer on a stream, or why there is none.
type keepAliveResult struct {
	from   *keepAliveStream
	opened pb.Lease_LeaseKeepAliveClient // set by the goroutine that opened the stream
	resp   *pb.LeaseKeepAliveResponse
	err    error
}

func newKeepAliveStreams(ctx context.Context, client *clientv3.Client, ttl time.Duration, background *sync.WaitGroup) *keepAliveStreams {
	return &keepAliveStreams{
		leases:     pb.NewLeaseClient(client.ActiveConnection()),
		ttl:        ttl,
		ctx:        ctx,
		answers:    make(chan keepAliveResult, maxKeepAliveStreams),
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
	case current == nil || current.waitedSince(now) >= keepAliveInterval(k.ttl)/2:
		if len(k.open) < maxKeepAliveStreams {
			k.openStream(lease)
		}
	case current.stream == nil:
		// Its opener is still at work, with a keepalive of its own.
	default:
		keepAlive := sentKeepAlive{lease: lease, sent: time.Now()}
		// Send only queues the request: it does not wait for the network,
		// and flow control never fills with a few requests in flight.
		if err := current.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease)}); err != nil {
			k.drop(func(s *keepAliveStream) bool { return s == current })
			k.openStream(lease)
			return
		}
		current.unanswered = append(current.unanswered, keepAlive)
		k.receive(current)
	}
}

// openStream opens a new current stream in the background, and sends it a
// keepalive of lease.
func (k *keepAliveStreams) openStream(lease clientv3.LeaseID) {
	// WithRequireLeader: a member cut off from the cluster ends the stream
	// instead of holding keepalives it cannot renew.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(k.ctx))
	s := &keepAliveStream{cancel: cancel, receiving: true}
	s.unanswered = append(s.unanswered, sentKeepAlive{lease: lease, sent: time.Now()})
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
		result := keepAliveResult{from: s, opened: stream}
		if result.err = stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease)}); result.err == nil {
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
// queue; ok is false if the result is about a stream dropped since. A stream
// that failed is dropped; one that is no longer current is dropped once it
// has nothing left to answer.
func (k *keepAliveStreams) answered(result keepAliveResult) (answered sentKeepAlive, ok bool) {
	s := result.from
	if !slices.Contains(k.open, s) {
		return sentKeepAlive{}, false
	}
	current := s == k.current()
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
	case len(s.unanswered) > 0:
		k.receive(s)
	case !current:
		k.drop(func(live *keepAliveStream) bool { return live == s })
	}
	return answered, true
}

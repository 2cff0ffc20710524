package biregister

import (
	"context"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// A Register renews its lease over one long-lived LeaseKeepAlive stream: one
// message to etcd per keepalive, where a KeepAliveOnce opens a stream each
// time. etcd answers a stream's requests one by one, in order (server
// v3rpc/lease.go, leaseKeepAlive), so the send times queued on a stream match
// its answers and the lease deadline still dates from the send of the
// acknowledged keepalive.
//
// A keepalive left unanswered for half an interval (on a healthy link answers
// take milliseconds) makes the next one go out on a new stream, which may
// reach a live connection or another member, while the old stream keeps its
// chance to answer until its oldest request could no longer extend the lease.
// Only the registration loop touches these streams; each has at most one
// goroutine of its own, living for one Recv.

// maxKeepAliveStreams bounds the streams open at once: one in steady state,
// one more per interval etcd leaves a keepalive unanswered.
const maxKeepAliveStreams = 3

// keepAliveStream is one LeaseKeepAlive stream, owned by the registration loop.
type keepAliveStream struct {
	stream     pb.Lease_LeaseKeepAliveClient // nil while its opener runs
	cancel     context.CancelFunc
	unanswered []sentKeepAlive // oldest first
	receiving  bool            // a goroutine waits for its next answer
}

// waitedSince returns how long s has left its oldest keepalive unanswered.
func (s *keepAliveStream) waitedSince(now time.Time) time.Duration {
	if len(s.unanswered) == 0 {
		return 0
	}
	return now.Sub(s.unanswered[0].sent)
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

// currentStream returns the stream new keepalives go out on, or nil.
func (r *register) currentStream() *keepAliveStream {
	if len(r.streams) == 0 {
		return nil
	}
	return r.streams[len(r.streams)-1]
}

// sendKeepAlive renews the current lease.
func (r *register) sendKeepAlive() {
	now := time.Now()
	current := r.currentStream()
	r.dropStreams(func(s *keepAliveStream) bool {
		if len(s.unanswered) == 0 {
			return s != current // nothing left to wait for on it
		}
		// Its oldest keepalive could no longer extend the lease, nor could
		// any later one: etcd answers in order.
		return s.waitedSince(now) >= r.ttl-leaseMargin(r.ttl)
	})
	current = r.currentStream()
	switch {
	case current == nil || current.waitedSince(now) >= r.keepAliveInterval()/2:
		if len(r.streams) < maxKeepAliveStreams {
			r.openStream(r.lease)
		}
	case current.stream == nil:
		// Its opener is still at work, with a keepalive of its own.
	default:
		request := sentKeepAlive{lease: r.lease, sent: time.Now()}
		// Send only queues the request: it does not wait for the network,
		// and flow control never fills with a few requests in flight.
		if err := current.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(request.lease)}); err != nil {
			r.dropStreams(func(s *keepAliveStream) bool { return s == current })
			r.openStream(r.lease)
			return
		}
		current.unanswered = append(current.unanswered, request)
		r.receive(current)
	}
}

// openStream opens a new current stream in the background, and sends it a
// keepalive of lease.
func (r *register) openStream(lease clientv3.LeaseID) {
	// WithRequireLeader: a member cut off from the cluster ends the stream
	// instead of holding keepalives it cannot renew.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(r.ctx))
	s := &keepAliveStream{cancel: cancel, receiving: true}
	s.unanswered = append(s.unanswered, sentKeepAlive{lease: lease, sent: time.Now()})
	r.streams = append(r.streams, s)
	r.attempts.Add(1)
	go func() {
		defer r.attempts.Done()
		// As etcd's own client: wait for a connection rather than fail fast.
		stream, err := r.leases.LeaseKeepAlive(ctx, grpc.WaitForReady(true))
		if err != nil {
			r.report(keepAliveResult{from: s, err: err})
			return
		}
		result := keepAliveResult{from: s, opened: stream}
		if result.err = stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease)}); result.err == nil {
			result.resp, result.err = stream.Recv()
		}
		r.report(result)
	}()
}

// receive waits for s's next answer in the background.
func (r *register) receive(s *keepAliveStream) {
	if s.receiving {
		return
	}
	s.receiving = true
	stream := s.stream
	r.attempts.Add(1)
	go func() {
		defer r.attempts.Done()
		resp, err := stream.Recv()
		r.report(keepAliveResult{from: s, resp: resp, err: err})
	}()
}

// report hands a result to the loop, unless the loop has ended.
func (r *register) report(result keepAliveResult) {
	select {
	case r.keepAlives <- result:
	case <-r.ctx.Done():
	}
}

// dropStreams closes and forgets the streams that match.
func (r *register) dropStreams(match func(s *keepAliveStream) bool) {
	kept := r.streams[:0]
	for _, s := range r.streams {
		if match(s) {
			s.cancel()
		} else {
			kept = append(kept, s)
		}
	}
	clear(r.streams[len(kept):])
	r.streams = kept
}

// keepAliveAnswered takes the answer to the oldest keepalive of result.from
// off its queue; ok is false if the result is about a stream dropped since.
// A stream that failed is dropped; one that is no longer current is dropped
// once it has nothing left to answer.
func (r *register) keepAliveAnswered(result keepAliveResult) (answered sentKeepAlive, ok bool) {
	s := result.from
	if !slices.Contains(r.streams, s) {
		return sentKeepAlive{}, false
	}
	current := s == r.currentStream()
	s.receiving = false
	if result.opened != nil {
		s.stream = result.opened
	}
	if result.err != nil {
		r.dropStreams(func(live *keepAliveStream) bool { return live == s })
		return sentKeepAlive{}, true
	}
	answered = s.unanswered[0]
	s.unanswered = s.unanswered[1:]
	switch {
	case len(s.unanswered) > 0:
		r.receive(s)
	case !current:
		r.dropStreams(func(live *keepAliveStream) bool { return live == s })
	}
	return answered, true
}

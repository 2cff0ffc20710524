// Registering in etcd: granting a lease under an id of our own, creating the
// key only where no live member holds the name, telling whether the key is
// still the registration's, and giving the lease back.

package biregister

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errDetached is why a name is taken by a key without a lease: no live
// member holds it, and the key would outlive every member. The loop
// deletes it, if it is still as it was read, and registers.
var errDetached = fmt.Errorf("%w: by a key without a lease", ErrNameTaken)

// create registers: it grants a lease if there is none, deletes a key
// without a lease found at our name, then puts the key if no live member
// holds the name. A shared lease is its Lease's to grant.
func (r *register) create(ctx context.Context) error {
	if err := r.deleteSquatter(ctx); err != nil {
		return err
	}
	if r.shared != nil {
		return r.putIfAbsent(ctx)
	}
	for {
		if r.lease == 0 {
			if err := r.grantLease(ctx); err != nil {
				return err
			}
		}
		lease := r.lease
		err := r.putIfAbsent(ctx)
		if err == nil || r.lease != 0 || lease == 0 {
			return err
		}
		// The lease was gone (revoked, expired) before the keeper could
		// say so: putIfAbsent dropped it; a new one, at once.
	}
}

// grantLease grants a lease of ttl under an id of our own and hands it to
// the keeper.
func (r *register) grantLease(ctx context.Context) error {
	id, clock, err := grantLease(ctx, r.client, r.ttl, &r.granting)
	if err != nil {
		return err
	}
	r.lease, r.clock = id, clock
	r.keeper.keep(keptLease{id: r.lease, clock: r.clock})
	return nil
}

// grantLease asks etcd for the lease g names, drawing an id first if it
// names none, and returns it with its clock. An id etcd already holds is
// ours if we asked for it before (an answer lost); a new id is drawn only
// once the last one is settled.
func grantLease(ctx context.Context, client *clientv3.Client, ttl time.Duration, g *grant) (clientv3.LeaseID, *leaseClock, error) {
	if g.id == 0 {
		// Positive, as etcd's own: 0 means no lease.
		*g = grant{id: clientv3.LeaseID(rand.Int64N(math.MaxInt64) + 1), firstSent: time.Now()}
	}
	asked := g.asked
	g.asked = true
	// As etcd's own client: wait for a connection rather than fail fast.
	resp, err := pb.NewLeaseClient(client.ActiveConnection()).LeaseGrant(ctx,
		&pb.LeaseGrantRequest{ID: int64(g.id), TTL: int64(ttl / time.Second)}, grpc.WaitForReady(true))
	switch {
	case err == nil:
		ttl = time.Duration(resp.TTL) * time.Second
	case asked && errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist):
		// Our earlier ask went through: the lease began after it was sent.
	default:
		if !ambiguous(err) {
			*g = grant{} // refused, or an id someone else holds: draw anew
		}
		return 0, nil, fmt.Errorf("biregister: grant lease: %w", rpctypes.Error(err))
	}
	id, clock := g.id, newLeaseClock()
	clock.extend(g.firstSent, ttl)
	*g = grant{}
	return id, clock, nil
}

// dropLease forgets the lease etcd no longer has (or that is given up). A
// shared lease is its Lease's to forget: the Register only lets go of it.
func (r *register) dropLease() {
	if r.lease == 0 {
		return
	}
	if r.shared == nil {
		r.keeper.keep(keptLease{})
		r.clock.clear()
	}
	r.lease, r.clock = 0, nil
}

// putOutcome is what a transaction that puts a key only where it is absent
// found: the key created at revision, or held as etcd read it (nil: absent,
// but another key of the transaction was not).
type putOutcome struct {
	created  bool
	revision int64  // of the transaction
	cluster  uint64 // that answered
	held     *mvccpb.KeyValue
}

// putIfAbsent puts the key with the value on the lease if no live member
// holds the name, and publishes the registration; otherwise it fails with
// ErrNameTaken (errDetached for a key without a lease). A key already on
// our lease is ours: a put whose answer was lost.
func (r *register) putIfAbsent(ctx context.Context) error {
	put := r.putOwn
	if r.shared != nil {
		put = r.putShared
	}
	out, err := put(ctx)
	if err != nil {
		return fmt.Errorf("biregister: register %s: %w", quoteKey(r.key), err)
	}
	if out.created {
		return r.claim(ctx, out.revision, out.cluster, out.revision)
	}
	if out.held == nil {
		return fmt.Errorf("%w: %s", ErrNameTaken, quoteKey(r.key))
	}
	held := keyStateOfKV(out.held)
	switch {
	case held.lease == r.lease && r.mayHold(held.value):
		r.value = held.value // if it is an unsure one, its write went through
		return r.claim(ctx, held.createRevision, out.cluster, held.modRevision)
	case held.lease == r.lease:
		// Ours, by a put whose answer got lost, but with a value from
		// before a SetValue that came since: the value goes in place.
		return r.putValueInPlace(ctx, held)
	case held.lease == 0:
		r.squatter = held.modRevision
		return fmt.Errorf("%w: %s", errDetached, quoteKey(r.key))
	}
	return fmt.Errorf("%w: %s", ErrNameTaken, quoteKey(r.key))
}

// putOwn puts the key where it is absent, on the Register's own lease.
func (r *register) putOwn(ctx context.Context) (putOutcome, error) {
	resp, err := r.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(r.lease))).
		Else(clientv3.OpGet(r.key)).
		Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// The key went with its lease.
			r.dropLease()
			r.lostCause = causeLeaseLost
		}
		return putOutcome{}, err
	}
	out := putOutcome{created: resp.Succeeded, revision: resp.Header.Revision, cluster: resp.Header.ClusterId}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); !resp.Succeeded && len(kvs) > 0 {
		out.held = kvs[0]
	}
	return out, nil
}

// putValueInPlace writes the Register's value to the key, which held
// holds on the Register's lease, and claims it.
func (r *register) putValueInPlace(ctx context.Context, held keyState) error {
	resp, err := r.client.Txn(ctx).
		If(r.ours(&registration{revision: held.createRevision})...).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(r.lease))).
		Commit()
	switch {
	case err != nil:
		return fmt.Errorf("biregister: register %s: %w", quoteKey(r.key), err)
	case !resp.Succeeded:
		return fmt.Errorf("biregister: register %s: the key changed meanwhile", quoteKey(r.key))
	}
	return r.claim(ctx, held.createRevision, resp.Header.ClusterId, resp.Header.Revision)
}

// errRevisionReused is why a registration was given up as soon as made:
// see claim. Registering again at once gets another revision.
var errRevisionReused = errors.New("biregister: registered at a revision a registration in a replaced etcd had, registering again")

// maxRevisionsKept bounds the create revisions claim remembers of one
// cluster: the terms whose fences could still be in use are the recent ones.
const maxRevisionsKept = 1024

// claim publishes the registration the key now holds, created at revision
// in cluster and last written at written — unless a registration in an
// etcd since replaced had that revision: revisions start again in a new
// cluster, and a fence of the old registration's terms would hold for the
// new one. The key is then deleted, and claim returns errRevisionReused for
// the caller to register again. An etcd that lost its data, or was
// restored from a backup, keeps its cluster id (it derives from the
// members' peer URLs and token): a registration at or below the last one's
// revision tells it was replaced all the same.
func (r *register) claim(ctx context.Context, revision int64, cluster uint64, written int64) error {
	rewound := len(r.here) > 0 && revision <= r.here[len(r.here)-1]
	if cluster != r.cluster || rewound {
		if r.cluster != 0 {
			if r.elsewhere == nil {
				r.elsewhere = map[int64]bool{}
			}
			for _, old := range r.here {
				r.elsewhere[old] = true
			}
			r.here = nil
		}
		r.cluster = cluster
	}
	if r.elsewhere[revision] {
		_, err := r.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", revision), clientv3.Compare(clientv3.LeaseValue(r.key), "=", r.lease)).
			Then(clientv3.OpDelete(r.key)).
			Commit()
		if err != nil {
			return fmt.Errorf("biregister: register %s: %w", quoteKey(r.key), err)
		}
		return errRevisionReused
	}
	if len(r.here) == maxRevisionsKept {
		r.here = r.here[1:]
	}
	r.here = append(r.here, revision)
	r.registered(revision, cluster, written)
	return nil
}

// deleteSquatter deletes the key without a lease found at our name, if it
// is still as it was read.
func (r *register) deleteSquatter(ctx context.Context) error {
	if r.squatter == 0 {
		return nil
	}
	resp, err := r.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(r.key), "=", r.squatter)).
		Then(clientv3.OpDelete(r.key)).
		Commit()
	if err != nil {
		return fmt.Errorf("biregister: delete %s, written from outside: %w", quoteKey(r.key), err)
	}
	if resp.Succeeded {
		r.watcher.logger.Warn("biregister: deleted our key, written from outside", "key", r.key)
	}
	// Else written again meanwhile: registering reads it anew.
	r.squatter = 0
	return nil
}

// revoke revokes id, waiting at most wait: it is best effort, a lease it
// cannot revoke expires by itself within ttl. It tries even when parent has
// ended (Close ends the request it runs in): a lease left behind would keep
// keys alive for ttl. whose names the lease in the log.
func revoke(parent context.Context, client *clientv3.Client, logger *slog.Logger, whose string, id clientv3.LeaseID, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), wait)
	defer cancel()
	_, err := client.Revoke(ctx, id)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		logger.Warn("biregister: revoke lease failed", "key", whose, "err", err)
	}
}

// revokeGrant revokes id, a lease whose grant got no answer, within wait.
// etcd may apply that grant after the revoke, if they reach its leader by
// two members: a revoke that finds no lease is asked again a few times,
// 100 ms apart.
func revokeGrant(client *clientv3.Client, id clientv3.LeaseID, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for range 3 {
		_, err := client.Revoke(ctx, id)
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) || !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// ambiguous reports whether err leaves it unknown whether etcd applied the
// request: it ended without an answer (a deadline, a cancellation, a lost
// connection, a proposal etcd could not commit in time). What etcd refuses
// outright, it never applied.
func ambiguous(err error) bool {
	if errors.Is(err, ErrClosed) {
		return false // a Lease closing: whatever etcd did goes with its lease
	}
	code := status.Code(err)
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) {
		code = etcdErr.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.ResourceExhausted, codes.FailedPrecondition, codes.OutOfRange, codes.Unauthenticated,
		codes.Unimplemented:
		return false
	}
	return true
}

// closeWait is the most Close waits for etcd to revoke the lease: a
// revoke takes milliseconds, and a Register whose etcd does not answer
// must still let its process end within a shutdown's grace period
// (Kubernetes gives 30 s); its key then goes when the lease expires.
func closeWait(ttl time.Duration) time.Duration { return min(ttl, 2*time.Second) }

// constructorLeaveWait is the most a failed constructor waits to give back
// what it may have left in etcd: it must fail within about its ttl, and a
// lease it could not revoke expires by itself.
const constructorLeaveWait = 500 * time.Millisecond

// Putting a shared lease's keys back: as many in one transaction as etcd
// takes, each only where it is absent, each answered on its own.

package biregister

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sharedPut asks run to put key with value on the lease where the key is
// absent.
type sharedPut struct {
	key, value string
	deadline   time.Time // the asker's; zero: none
	reply      chan sharedPutAnswer
}

// sharedPutAnswer is what became of a sharedPut, and the lease it was put
// on (also with an error: a put etcd may have applied is on that lease).
type sharedPutAnswer struct {
	lease   clientv3.LeaseID
	clock   *leaseClock
	outcome putOutcome
	err     error
}

// putBack puts first's key back, with every put asked for meanwhile (see
// gather), granting a lease first if there is none.
func (l *Lease) putBack(first sharedPut) {
	puts := l.gather([]sharedPut{first})
	ctx, cancel := l.putContext(puts)
	defer cancel()
	took := l.putsPerTxn // what etcd took before: see the refusal of one key below
	for len(puts) > 0 {
		if l.closed || l.putsCtx.Err() != nil {
			// Closing: the lease is about to go, with whatever is on it.
			l.answer(puts, putOutcome{}, fmt.Errorf("%w: the Lease", ErrClosed))
			return
		}
		if l.lease == 0 {
			if err := l.grant(ctx); err != nil {
				l.answer(puts, putOutcome{}, err)
				return
			}
		}
		chunk := puts[:min(len(puts), l.putsPerTxn)]
		again, err := l.putChunk(ctx, chunk)
		switch {
		case err == nil:
			puts = append(again, puts[len(chunk):]...)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			// Gone before the keeper could say so: the keys went with it.
			l.lost(l.lease)
			puts = l.gather(puts)
		case tooBig(err) && len(chunk) > 1:
			l.putsPerTxn = len(chunk) / 2
			l.logger.Warn("biregister: etcd refused a transaction putting keys back, putting fewer at once", "keys", len(chunk), "err", err)
		case l.putsCtx.Err() != nil:
			// Closing: answered at the top of the loop.
		default:
			if tooBig(err) {
				// One key too big alone: it, not their number, made the
				// bigger transactions too big.
				l.putsPerTxn = took
			}
			l.answer(chunk, putOutcome{}, err)
			puts = puts[len(chunk):]
		}
	}
}

// gather adds to puts every put asked for already, and, while Registers
// still owe their key since the lease was lost, waits for theirs, for
// gatherWait at most.
func (l *Lease) gather(puts []sharedPut) []sharedPut {
	var timeout <-chan time.Time
	for {
		select {
		case p := <-l.puts:
			puts = append(puts, p)
			continue
		default:
		}
		if len(puts) >= l.owed {
			return puts
		}
		if timeout == nil {
			timer := time.NewTimer(gatherWait)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case p := <-l.puts:
			puts = append(puts, p)
		case <-timeout:
			l.owed = 0 // the others are late: they go on their own
			return puts
		}
	}
}

// putContext bounds the puts by the latest of their askers' deadlines,
// by the ttl if one has none.
func (l *Lease) putContext(puts []sharedPut) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range puts {
		if p.deadline.IsZero() {
			latest = time.Now().Add(l.ttl)
			break
		}
		if p.deadline.After(latest) {
			latest = p.deadline
		}
	}
	return context.WithDeadline(l.putsCtx, latest)
}

// putChunk puts every key of chunk where it is absent, in one transaction:
// all of them if none is there. Otherwise it answers each key it read and
// returns the others, absent, to put again.
func (l *Lease) putChunk(ctx context.Context, chunk []sharedPut) ([]sharedPut, error) {
	ifs := make([]clientv3.Cmp, len(chunk))
	thens := make([]clientv3.Op, len(chunk))
	elses := make([]clientv3.Op, len(chunk))
	for i, p := range chunk {
		ifs[i] = clientv3.Compare(clientv3.CreateRevision(p.key), "=", 0)
		thens[i] = clientv3.OpPut(p.key, p.value, clientv3.WithLease(l.lease))
		elses[i] = clientv3.OpGet(p.key)
	}
	resp, err := l.client.Txn(ctx).If(ifs...).Then(thens...).Else(elses...).Commit()
	if err != nil {
		return nil, err
	}
	out := putOutcome{created: resp.Succeeded, revision: resp.Header.Revision, cluster: resp.Header.ClusterId}
	if resp.Succeeded {
		l.answer(chunk, out, nil)
		return nil, nil
	}
	var again []sharedPut
	for i, p := range chunk {
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			again = append(again, p)
			continue
		}
		held := out
		held.held = kvs[0]
		l.answer([]sharedPut{p}, held, nil)
	}
	return again, nil
}

// answer tells each of puts what became of it, on the current lease.
func (l *Lease) answer(puts []sharedPut, out putOutcome, err error) {
	for _, p := range puts {
		p.reply <- sharedPutAnswer{lease: l.lease, clock: l.clock, outcome: out, err: err}
		if l.owed > 0 {
			l.owed--
		}
	}
}

// tooBig reports whether etcd refused a transaction for its size: more
// operations than its --max-txn-ops, or more bytes than its
// --max-request-bytes (or than the client sends).
func tooBig(err error) bool {
	err = rpctypes.Error(err)
	return errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge) ||
		status.Code(err) == codes.ResourceExhausted
}

// putShared puts the Register's key where it is absent, on the shared
// lease, which it takes on.
func (r *register) putShared(ctx context.Context) (putOutcome, error) {
	p := sharedPut{key: r.key, value: r.value, reply: make(chan sharedPutAnswer, 1)}
	p.deadline, _ = ctx.Deadline()
	select {
	case r.shared.puts <- p:
	case <-ctx.Done():
		return putOutcome{}, ctx.Err()
	case <-r.shared.done:
		return putOutcome{}, fmt.Errorf("%w: the Lease", ErrClosed)
	}
	select {
	case a := <-p.reply:
		if a.lease != 0 {
			r.lease, r.clock = a.lease, a.clock
		}
		return a.outcome, a.err
	case <-ctx.Done():
		return putOutcome{}, ctx.Err()
	}
}

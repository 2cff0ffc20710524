// Names at the constructor: waiting for a name that a previous run still
// holds (WithNameWait), and choosing one (NewRegisterNoName).

package biregister

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// createWhenFree is create, but while a live member holds the name it waits
// for that member's key to go, for at most wait. A request whose answer
// got lost (a leader change of etcd's, a connection reset) is asked again,
// within ctx: asked again, it tells what became of the first.
func (r *register) createWhenFree(ctx context.Context, wait time.Duration) error {
	started := time.Now()
	giveUp := started.Add(wait)
	waited := false
	var retry backoff
	for attempts := 0; ; attempts++ {
		attempt, cancel := context.WithTimeout(ctx, attemptTimeout(r.ttl, attempts))
		err := r.create(attempt)
		cancel()
		if err != nil && ctx.Err() == nil && (errors.Is(err, errDetached) || !errors.Is(err, ErrNameTaken) && ambiguous(err)) {
			if errors.Is(err, errDetached) {
				// The key without a lease goes first: create deletes it.
				r.watcher.logger.Warn("biregister: name held by a key without a lease, deleting it", "key", r.key)
			} else {
				r.watcher.logger.Info("biregister: registering failed, retrying", "key", r.key, "err", err)
			}
			if !sleep(ctx, retry.next()) {
				return fmt.Errorf("%w (%w)", err, ctx.Err())
			}
			continue
		}
		left := time.Until(giveUp)
		if !errors.Is(err, ErrNameTaken) {
			if err == nil && waited {
				r.watcher.logger.Info("biregister: registered after waiting for the name", "key", r.key, "waited", time.Since(started))
			}
			return err
		}
		if left <= 0 {
			if wait == 0 {
				return fmt.Errorf("%w (its lease is alive; a process that restarts under its own name can wait for its previous run's lease to expire with WithNameWait)", err)
			}
			return err
		}
		r.watcher.logger.Info("biregister: name held by a live member, waiting for its key to go", "key", r.key, "wait", left)
		waited = true
		if err := r.awaitKeyGone(ctx, left); err != nil {
			return fmt.Errorf("biregister: wait for %s: %w", quoteKey(r.key), err)
		}
	}
}

// awaitKeyGone returns once the key is absent or d has passed, or with the
// error that ended ctx.
func (r *register) awaitKeyGone(ctx context.Context, d time.Duration) error {
	waitCtx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), d)
	defer cancel()
	resp, err := r.client.Get(waitCtx, r.key)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil || len(resp.Kvs) == 0:
		return nil // d passed, or the key is gone: the caller tries once more
	}
	events := r.client.Watch(waitCtx, r.key, clientv3.WithRev(resp.Header.Revision+1), clientv3.WithFilterPut())
	for resp := range events {
		if len(resp.Events) > 0 || resp.Err() != nil {
			return nil
		}
	}
	return ctx.Err()
}

// createNoName registers under a revision as name. The transaction also
// requires that no key under the prefix was created after that revision:
// then every member that registered before has a smaller name, and callers
// that read the same revision cannot both succeed. Writes of values do not
// get in the way; each failed try learns the revision for the next from
// its answer. One lease serves every try.
func (r *register) createNoName(ctx context.Context) error {
	prefix := r.watcher.prefix
	resp, err := r.client.Get(ctx, prefix)
	if err != nil {
		return fmt.Errorf("biregister: read revision: %w", err)
	}
	revision := resp.Header.Revision
	var retry backoff
	for attempts := 0; ; attempts++ {
		r.name = fmt.Sprintf("%020d", revision)
		r.key = prefix + r.name
		attempt, cancel := context.WithTimeout(ctx, attemptTimeout(r.ttl, attempts))
		if r.lease == 0 {
			if err := r.grantLease(attempt); err != nil {
				cancel()
				if !ambiguous(err) || !sleep(ctx, retry.next()) {
					return err
				}
				continue
			}
		}
		resp, err := r.client.Txn(attempt).
			If(clientv3.Compare(clientv3.CreateRevision(prefix), "<", revision+1).WithPrefix()).
			Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(r.lease))).
			Else(clientv3.OpGet(r.key)).
			Commit()
		cancel()
		switch {
		case err != nil && ambiguous(err) && ctx.Err() == nil:
			// Perhaps registered: the same name again tells.
		case err != nil:
			return fmt.Errorf("biregister: register under a revision: %w", err)
		case resp.Succeeded:
			if err := r.claim(ctx, resp.Header.Revision, resp.Header.ClusterId, resp.Header.Revision); !errors.Is(err, errRevisionReused) {
				return err
			}
		default:
			kvs := resp.Responses[0].GetResponseRange().GetKvs()
			if len(kvs) > 0 && clientv3.LeaseID(kvs[0].Lease) == r.lease {
				// A try whose answer was lost went through.
				held := keyStateOfKV(kvs[0])
				if err := r.claim(ctx, held.createRevision, resp.Header.ClusterId, held.modRevision); !errors.Is(err, errRevisionReused) {
					return err
				}
			}
			revision = resp.Header.Revision
		}
		if !sleep(ctx, retry.next()) {
			return fmt.Errorf("biregister: register under a revision: %w", ctx.Err())
		}
	}
}

// Registering in etcd: granting a lease, creating the key only where no live
// member holds the name, and giving the lease back.

package biregister

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// create grants a lease and puts the key if no live member holds the name and
// every extra comparison holds.
func (r *register) create(ctx context.Context, extra ...clientv3.Cmp) error {
	sent := time.Now()
	lease, err := r.client.Grant(ctx, int64(r.ttl/time.Second))
	if err != nil {
		return fmt.Errorf("biregister: grant lease: %w", err)
	}
	r.lease = lease.ID
	if err := r.putIfAbsent(ctx, extra...); err != nil {
		r.revoke(ctx)
		return err
	}
	r.extendLease(sent, lease.TTL)
	return nil
}

// createWhenFree is create, but while a live member holds the name it waits
// for that member's key to go, for at most wait.
func (r *register) createWhenFree(ctx context.Context, wait time.Duration) error {
	giveUp := time.Now().Add(wait)
	for {
		err := r.create(ctx)
		left := time.Until(giveUp)
		if !errors.Is(err, ErrNameTaken) || left <= 0 {
			return err
		}
		r.watcher.logger.Info("biregister: name held by a live member, waiting for its key to go", "key", r.key, "wait", left)
		if err := r.awaitKeyGone(ctx, left); err != nil {
			return fmt.Errorf("biregister: wait for %q: %w", r.key, err)
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

// createNoName registers under the current revision as name. The transaction
// also requires that nothing under the prefix changed since that revision was
// read: then every member that registered before has a smaller name, and
// concurrent callers that read the same revision retry with a newer one.
func (r *register) createNoName(ctx context.Context) error {
	prefix := r.watcher.prefix
	for {
		resp, err := r.client.Get(ctx, prefix)
		if err != nil {
			return fmt.Errorf("biregister: read revision: %w", err)
		}
		revision := resp.Header.Revision
		r.name = fmt.Sprintf("%020d", revision)
		r.key = prefix + r.name
		err = r.create(ctx, clientv3.Compare(clientv3.ModRevision(prefix), "<", revision+1).WithPrefix())
		if !errors.Is(err, ErrNameTaken) {
			return err
		}
	}
}

// putIfAbsent puts the key with the current value on the current lease if no
// live member holds the name and every extra comparison holds; otherwise it
// fails with ErrNameTaken.
func (r *register) putIfAbsent(ctx context.Context, extra ...clientv3.Cmp) error {
	resp, err := r.client.Txn(ctx).
		If(append(extra, clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0))...).
		Then(clientv3.OpPut(r.key, r.value, clientv3.WithLease(r.lease))).
		Commit()
	if err == nil && !resp.Succeeded {
		err = fmt.Errorf("%w: %q", ErrNameTaken, r.key)
	}
	if err != nil {
		return fmt.Errorf("biregister: register %q: %w", r.key, err)
	}
	r.registered(resp.Header.Revision)
	return nil
}

// revoke revokes the lease and forgets the registration. It is best effort: a
// lease it cannot revoke expires by itself within ttl, so it waits no longer.
// It tries even when parent has ended (Close ends the request it runs in): a
// lease left behind would keep a key it may just have put alive for ttl.
func (r *register) revoke(parent context.Context) {
	if r.lease != 0 {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), r.ttl)
		_, err := r.client.Revoke(ctx, r.lease)
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.watcher.logger.Warn("biregister: revoke lease failed", "key", r.key, "err", err)
		}
	}
	r.forget()
}

// abandonLease forgets the registration and revokes its lease in the
// background, so that registering again does not wait for an etcd that may be
// down: the revoke is only there not to leave the lease to expire.
func (r *register) abandonLease() {
	lease := r.lease
	r.lostCause = causeKeyDeleted
	r.forget()
	r.background.Add(1)
	go func() {
		defer r.background.Done()
		ctx, cancel := context.WithTimeout(r.ctx, r.ttl)
		defer cancel()
		_, _ = r.client.Revoke(ctx, lease)
	}()
}

// keyLost reports whether snap shows that the current registration is gone.
// A snapshot that has not applied the registration's own event cannot tell.
func (r *register) keyLost(snap *snapshot) bool {
	revision := r.revision.Load()
	if revision == 0 || snap.applied < revision {
		return false
	}
	m, ok := snap.lookup(r.name)
	return !ok || m.CreateRevision != revision
}

// Requests: what other goroutines ask of the registration — SetValue,
// Resign — carried out by the registration loop, which takes from etcd's
// answer what became of it.

package biregister

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// call runs do on the loop and returns its result. The loop carries do to
// its end, within ttl, whatever becomes of ctx: a caller that stops
// waiting (ctx.Err()) leaves the Register as etcd then says it is. It
// stops waiting when until ends, which ends with ctx or later. A ctx
// ended already asks nothing of the loop. It returns ErrClosed if the
// Register is closed, or Close ended do.
func (r *register) call(ctx, until context.Context, do func(ctx context.Context) error) error {
	if r.closing.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		// Not carried out: a caller whose ctx has ended asked for nothing.
		return err
	}
	req := request{do: do, reply: make(chan error, 1)}
	select {
	case r.requests <- req:
	case <-until.Done():
		return ctx.Err()
	case <-r.ctx.Done():
		return ErrClosed
	}
	select {
	case err := <-req.reply:
		if r.ctx.Err() != nil && err != nil {
			return ErrClosed // whatever etcd's client made of the cancel
		}
		return err
	case <-until.Done():
		return ctx.Err()
	}
}

func (r *register) SetValue(ctx context.Context, value string) error {
	return r.call(ctx, ctx, func(ctx context.Context) error { return r.setValue(ctx, value) })
}

// setValue writes value to the key, on the loop. The Register takes it
// only once etcd did: a value etcd refuses leaves it as it was.
func (r *register) setValue(ctx context.Context, value string) error {
	reg := r.current.Load()
	if reg == nil {
		// Registering again: register now, with the new value.
		old := r.value
		r.value = value
		if err := r.create(ctx); err != nil {
			r.value = old
			if ambiguous(err) {
				r.unanswered(value) // the put may have gone through
			}
			return fmt.Errorf("biregister: set value of %s: %w", quoteKey(r.key), err)
		}
		if r.value != value {
			// The key held an earlier value of ours whose write got no
			// answer: ours, but not this one.
			return r.setValue(ctx, value)
		}
		return nil
	}
	resp, err := r.client.Txn(ctx).
		If(r.ours(reg)...).
		Then(clientv3.OpPut(r.key, value, clientv3.WithLease(r.lease))).
		Else(clientv3.OpGet(r.key)).
		Commit()
	switch {
	case err != nil:
		if ambiguous(err) {
			r.unanswered(value) // etcd may hold it: the key holding it is still ours
		}
		return fmt.Errorf("biregister: set value of %s: %w", quoteKey(r.key), err)
	case resp.Succeeded:
		r.value, r.unsure = value, nil
		r.wrote(resp.Header.Revision)
		return nil
	}
	// The key is not ours any more: registered again, it holds the new value.
	r.notOurs(reg, heldBy(resp))
	return r.setValue(ctx, value)
}

func (r *register) Resign(ctx context.Context) error {
	// Resign ends this member's terms before its delete goes out: called
	// with such a term (work under Lead handing leadership on), it must not
	// end with it.
	until, stop := outlastResign(ctx)
	defer stop()
	return r.call(ctx, until, r.resign)
}

// resign gives up leadership, on the loop: the registration leads no more,
// its terms end, and its key goes; then it registers again, at the back.
// If etcd refuses the delete, it leads again as before; if no answer comes,
// it leads no more, and the loop deletes until it knows.
func (r *register) resign(ctx context.Context) error {
	reg := r.current.Load()
	if reg == nil || r.resignOwed {
		return nil
	}
	resigned := *reg
	resigned.resigned = true
	r.publish(&resigned)
	r.endTenure(ErrResigned)
	deleted, err := r.deleteKey(ctx)
	switch {
	case err != nil && ambiguous(err):
		r.resignOwed = true
		return fmt.Errorf("biregister: resign %s: %w", quoteKey(r.key), err)
	case err != nil:
		r.publish(reg)
		return fmt.Errorf("biregister: resign %s: %w", quoteKey(r.key), err)
	case !deleted:
		return nil // not ours any more: lost, and registering again
	}
	r.lose(causeResigned)
	if err := r.putIfAbsent(ctx); err != nil {
		return nil // stepped down, but not back yet: the loop registers again
	}
	r.metrics.registeredFor(causeResigned)
	return nil
}

// deleteKey deletes the key if it is still the registration's, as a
// graceful leave, and reports whether it did; if the key is not the
// registration's any more, the registration is dropped for what it became
// (see notOurs).
func (r *register) deleteKey(ctx context.Context) (bool, error) {
	reg := r.current.Load()
	resp, err := r.deleteGracefully(ctx, r.ours(reg)...)
	if err == nil && resp.Succeeded {
		_ = r.deleteMarker(ctx) // best effort: it goes with the lease
	}
	if err != nil || resp.Succeeded {
		return err == nil, err
	}
	// Read apart, not in the transaction's else: a name near etcd's
	// request limit fits three times in a request, not four.
	got, err := r.client.Get(ctx, r.key)
	if err != nil {
		return false, err
	}
	held := keyState{}
	if len(got.Kvs) > 0 {
		held = keyStateOfKV(got.Kvs[0])
	}
	r.notOurs(reg, held)
	return false, nil
}

// deleteGracefully deletes the key if ifOurs holds, in one transaction
// with the marker that says the member leaves on purpose, on the lease
// (leaving.go). A transaction etcd refuses — the lease gone (a key detached
// from it must go all the same), or too big (a name near etcd's request
// limit is in it four times) — deletes without the marker: the leave then
// reads as a loss.
func (r *register) deleteGracefully(ctx context.Context, ifOurs ...clientv3.Cmp) (*clientv3.TxnResponse, error) {
	plain := func() (*clientv3.TxnResponse, error) {
		return r.client.Txn(ctx).If(ifOurs...).Then(clientv3.OpDelete(r.key)).Commit()
	}
	if r.lease == 0 {
		return plain() // a marker without a lease would stay for good
	}
	reg := r.current.Load()
	resp, err := r.client.Txn(ctx).If(ifOurs...).
		Then(clientv3.OpPut(leavingKey(r.watcher.prefix, r.name), leavingValue(reg.revision), clientv3.WithLease(r.lease)),
			clientv3.OpDelete(r.key)).
		Commit()
	if err != nil && !ambiguous(err) {
		return plain()
	}
	return resp, err
}

// deleteMarker deletes the marker of a graceful leave that went through:
// every watcher read it in the revision of the delete, its work is done,
// and it need not stay until the lease goes.
func (r *register) deleteMarker(ctx context.Context) error {
	_, err := r.client.Delete(ctx, leavingKey(r.watcher.prefix, r.name))
	return err
}

// heldBy returns what the Else branch of a transaction read at the key.
func heldBy(resp *clientv3.TxnResponse) keyState {
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		return keyStateOfKV(kvs[0])
	}
	return keyState{}
}

// outlastResign returns a context that ends when ctx does, unless ctx ends
// because this member resigned (see Resign); stop releases it.
func outlastResign(ctx context.Context) (context.Context, context.CancelFunc) {
	outlasting, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		if cause := context.Cause(ctx); !errors.Is(cause, ErrResigned) {
			cancel(cause)
		}
	})
	return outlasting, func() {
		stop()
		cancel(nil)
	}
}

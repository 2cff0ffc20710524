// Terms of leadership: a context per term that ends, with its cause, the
// moment this member can no longer be certain it leads.

package biregister

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Term is one term of leadership of a Register, and a context.Context for
// the work done while it lasts. It ends — Done closes, Err reports
// context.Canceled and context.Cause why — the moment the member can no
// longer be certain it leads:
//
//   - at the lease deadline, when etcd acknowledged no keepalive that keeps
//     the lease certainly alive (ErrLeaseDeadline): the same deadline as
//     AmILeader, dated from the send of the acknowledged keepalive, so the
//     term ends before etcd can let anyone else lead;
//   - when the registration is seen deleted or replaced, or its lease lost
//     (ErrRegistrationLost), or an older registration appears (ErrNotLeader);
//   - on Resign (ErrResigned) and Close (ErrClosed);
//   - for the Term that Lead hands to its work, also when Lead's context
//     ends (that context's cause).
//
// A timer ends the term at the deadline; Err and Value also look at the clock
// themselves, so a process resumed after a pause never sees a live term, even
// before any other goroutine has run. Contexts derived from a Term end when
// it ends.
//
// The term carries its identity: Revision, the create revision of the
// registration that leads, and Fence, which guards the term's writes.
type Term struct {
	ctx    context.Context // ends the Term
	cancel context.CancelCauseFunc
	tenure *tenure
}

// Deadline returns no deadline (or that of Lead's context): the lease
// deadline moves with every acknowledged keepalive, and a context's deadline
// does not.
func (t *Term) Deadline() (time.Time, bool) { return t.ctx.Deadline() }

// Done returns a channel that is closed when the term ends.
func (t *Term) Done() <-chan struct{} { return t.ctx.Done() }

// Err returns nil while the term lasts and a non-nil error once it ended;
// context.Cause(t) says why. It ends the term first if the lease deadline
// has passed.
func (t *Term) Err() error {
	t.check()
	return t.ctx.Err()
}

// Value returns no value (or that of Lead's context for key). Like Err, it
// ends the term first if the lease deadline has passed, so that
// context.Cause and the contexts derived from the Term see the end too.
func (t *Term) Value(key any) any {
	t.check()
	return t.ctx.Value(key)
}

// Revision returns the create revision of the registration that leads in
// this term: the term's identity, for logs and for fencing.
func (t *Term) Revision() int64 { return t.tenure.revision }

// Fence returns a comparison that holds only while the registration of this
// term exists. A later registration of the same name, by this process or
// another, never satisfies it: it creates the key anew, at another revision.
func (t *Term) Fence() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.tenure.key), "=", t.tenure.revision)
}

// String names the term, for logs.
func (t *Term) String() string {
	return fmt.Sprintf("term of %s at revision %d", t.tenure.key, t.tenure.revision)
}

// check ends the Term if its tenure is over, before anyone can see it alive.
func (t *Term) check() {
	if t.ctx.Err() != nil {
		return
	}
	if cause := t.tenure.check(); cause != nil {
		t.cancel(cause)
	}
}

// tenure is one stretch of leadership of one registration: from when a term
// was first asked for while it led, to when it stopped leading. WaitTerm
// hands out its term; the Terms that Lead makes end when it ends.
type tenure struct {
	// Set when made; never change.
	key        string
	revision   int64                      // the registration that leads
	clock      *leaseClock                // its lease's deadline
	notLeading func(revision int64) error // why the registration does not lead now, or nil
	ctx        context.Context            // ends with the tenure; its cause says why
	cancel     context.CancelCauseFunc    // ends ctx; finish also stops the timer
	term       *Term                      // the tenure's own Term, of ctx

	mu    sync.Mutex  // guards timer
	timer *time.Timer // fires at the lease deadline
}

// newTenure returns a tenure of the registration of key created at
// revision, whose lease clock says until when it is alive and notLeading
// whether it still leads; it has no timer yet.
func newTenure(key string, revision int64, clock *leaseClock, notLeading func(revision int64) error) *tenure {
	ctx, cancel := context.WithCancelCause(context.Background())
	tn := &tenure{key: key, revision: revision, clock: clock, notLeading: notLeading, ctx: ctx, cancel: cancel}
	tn.term = &Term{ctx: ctx, cancel: cancel, tenure: tn}
	return tn
}

// arm sets the timer that ends the tenure at the lease deadline.
func (tn *tenure) arm() {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	tn.timer = time.AfterFunc(tn.clock.remaining(), tn.atDeadline)
}

// check ends the tenure if its registration no longer leads, and returns the
// cause of its end, or nil while it lasts.
func (tn *tenure) check() error {
	if tn.ctx.Err() == nil {
		if cause := tn.notLeading(tn.revision); cause != nil {
			tn.finish(cause)
		}
	}
	return context.Cause(tn.ctx)
}

// finish ends the tenure with cause, unless it ended already.
func (tn *tenure) finish(cause error) {
	tn.cancel(cause)
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.timer != nil {
		tn.timer.Stop()
	}
}

// atDeadline runs when the lease deadline known when the timer was set has
// come: keepalives acknowledged since may have moved it.
func (tn *tenure) atDeadline() {
	if tn.check() != nil {
		return
	}
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.ctx.Err() == nil {
		tn.timer.Reset(tn.clock.remaining())
	}
}

// newTerm returns a Term of tn that also ends with parent, and takes
// parent's values.
func (tn *tenure) newTerm(parent context.Context) *Term {
	ctx, cancel := context.WithCancelCause(parent)
	t := &Term{ctx: ctx, cancel: cancel, tenure: tn}
	stop := context.AfterFunc(tn.ctx, func() { cancel(context.Cause(tn.ctx)) })
	// A Term that ends with its parent no longer waits for the tenure.
	context.AfterFunc(ctx, func() { stop() })
	return t
}

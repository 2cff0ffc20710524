// Leadership: whether this member leads now, the fence for its leader-only
// writes, waiting to lead, and the terms it hands out (see term.go).

package biregister

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func (r *register) AmILeader() bool {
	r.askedLeadership()
	return r.leading()
}

// leading is AmILeader for the library's own reads (Status, the metrics),
// which do not make the program one that asks about leadership.
func (r *register) leading() bool {
	return !r.closing.Load() && r.leads(r.current.Load(), r.watcher.snap.Load())
}

// askedLeadership records that the user asks about leadership, whose
// changes are then logged at Info rather than Debug: a server that only
// registers to be found has no use for them.
func (r *register) askedLeadership() {
	if !r.leadershipAsked.Load() && r.leadershipAsked.CompareAndSwap(false, true) {
		r.changed.notify() // the loop says at Info a leadership it logged at Debug
	}
}

// leads reports whether reg leads in snap: it is the oldest member there,
// and its lease is certainly alive. It is notLeading(reg.revision) == nil
// without finding out why not: AmILeader is the read leader-only code asks
// before every piece of work. reg carries its lease's clock, so a
// registration made since, on another lease, never makes it look alive.
func (r *register) leads(reg *registration, snap *snapshot) bool {
	if reg == nil || reg.resigned {
		return false
	}
	m := snap.leader
	return m.CreateRevision == reg.revision && m.Name == r.name && sameCluster(snap.cluster, reg.cluster) && reg.clock.alive()
}

// sameCluster reports whether two etcd cluster ids may be the same cluster:
// 0 says nothing (etcd's gRPC proxy leaves the id out of responses it
// makes up itself).
func sameCluster(a, b uint64) bool { return a == 0 || b == 0 || a == b }

// notLeading returns why the registration created at revision does not lead
// now, or nil if it does: it is the current registration, the oldest in the
// cache, and its lease is certainly alive. Any goroutine may ask; nothing is
// locked and nothing waits.
func (r *register) notLeading(revision int64) error {
	reg := r.current.Load()
	switch {
	case r.closing.Load():
		return ErrClosed
	case reg == nil || reg.revision != revision:
		return ErrRegistrationLost
	case reg.resigned:
		return ErrResigned
	case !reg.clock.alive():
		return ErrLeaseDeadline
	}
	// The create revision, not just the name, must match: after a
	// re-registration a stale cache still lists the old one under our name.
	snap := r.watcher.snap.Load()
	if !sameCluster(snap.cluster, reg.cluster) {
		return ErrRegistrationLost // the cache follows another etcd: not there
	}
	if m := snap.leader; m.CreateRevision == revision && m.Name == r.name {
		return nil
	}
	if m, ok := snap.lookup(r.name); ok && m.CreateRevision == revision {
		return ErrNotLeader
	}
	// Gone from a cache that applied its event, or not in it yet.
	if snap.applied >= revision {
		return ErrRegistrationLost
	}
	return ErrNotLeader
}

func (r *register) Fence() clientv3.Cmp {
	revision := r.MyRevision()
	if revision == 0 {
		// Not registered: "= 0" would hold for an absent key, so compare with
		// a revision no key ever has.
		revision = -1
	}
	return clientv3.Compare(clientv3.CreateRevision(r.key), "=", revision)
}

func (r *register) WaitLeader(ctx context.Context) error {
	r.askedLeadership()
	_, err := waitLeading(r, ctx, func() (struct{}, bool) { return struct{}{}, r.AmILeader() })
	return err
}

// waitLeading waits until leading says this member leads, and returns what
// it said then: at once if the member leads when called, whatever ctx;
// ErrClosed if the Register is closed or closes; ctx.Err() if ctx ends
// first. WaitLeader and WaitTerm both wait with it.
func waitLeading[T any](r *register, ctx context.Context, leading func() (T, bool)) (T, error) {
	var none T
	for {
		// Take the channels before looking, so no change in between is missed.
		snapChanged, regChanged := r.watcher.snap.Load().replaced, r.changed.wait()
		if r.closing.Load() {
			return none, ErrClosed
		}
		if got, ok := leading(); ok {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return none, ctx.Err()
		case <-r.ctx.Done():
			return none, ErrClosed
		case <-snapChanged:
		case <-regChanged:
		}
	}
}

// leadingTenure returns the tenure of the registration that leads now, or
// nil if this member does not lead.
func (r *register) leadingTenure() *tenure {
	for {
		current := r.tenure.Load()
		reg := r.current.Load()
		if current != nil && reg != nil && current.revision == reg.revision && current.check() == nil {
			return current
		}
		if reg == nil || r.notLeading(reg.revision) != nil {
			return nil
		}
		tn := newTenure(r.key, reg.revision, reg.clock, r.notLeading)
		if !r.tenure.CompareAndSwap(current, tn) {
			tn.finish(nil)
			continue
		}
		tn.arm()
		// The loop ends the stored tenure after every change it makes; one
		// that came while this was being stored is seen here.
		if tn.check() == nil {
			return tn
		}
	}
}

// endTenure ends the current tenure with cause; the loop calls it when it
// changes the registration, and then checkTenure.
func (r *register) endTenure(cause error) {
	if tn := r.tenure.Load(); tn != nil {
		tn.finish(cause)
	}
}

// checkTenure ends the current tenure if its registration no longer leads.
func (r *register) checkTenure() {
	if tn := r.tenure.Load(); tn != nil {
		tn.check()
	}
}

func (r *register) WaitTerm(ctx context.Context) (*Term, error) {
	r.askedLeadership()
	return waitLeading(r, ctx, func() (*Term, bool) {
		if tn := r.leadingTenure(); tn != nil {
			return tn.term, true
		}
		return nil, false
	})
}

func (r *register) Lead(ctx context.Context, work func(term *Term)) error {
	if work == nil {
		return fmt.Errorf("%w: Lead with no work", ErrInvalidArgument)
	}
	for {
		// A caller that ends ctx gets ctx's error, also when Close came
		// with it: a shutdown reads as one, whichever comes first.
		if err := ctx.Err(); err != nil {
			return err
		}
		leading, err := r.WaitTerm(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		term := leading.tenure.newTerm(ctx)
		work(term)
		// Once per term: work that returns early waits for its term to end.
		<-term.Done()
	}
}

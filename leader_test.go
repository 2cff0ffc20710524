package biregister

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// While a Register has no registration, its fence must not hold, even though
// its key is absent.
func TestFenceWhileUnregistered(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	cli := etcdtest.Start(t, 1).Client(t)
	r := &register{key: "/fence/absent"}
	resp, err := cli.Txn(context.Background()).If(r.Fence()).Then(clientv3.OpPut("/fence/data", "x")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Succeeded {
		t.Fatal("the fence of an unregistered Register held")
	}
}

// A term's Err and Value look at the lease clock themselves: once the
// deadline has passed, the first call reports the end, with Done closed
// before it, and so does a context derived from the term, although no timer
// is there to end the term (none is armed here, as when the process has just
// resumed and no timer has run yet).
func TestTermReadsTheClock(t *testing.T) {
	for _, call := range []struct {
		name  string
		ended func(*Term) error
	}{
		{"Err", (*Term).Err},
		// A context derived from the term asks it for its cancelCtx with
		// Value, and starts ended if the term has.
		{"Value", func(term *Term) error {
			derived, cancel := context.WithCancel(term)
			defer cancel()
			return derived.Err()
		}},
	} {
		t.Run(call.name, func(t *testing.T) {
			const revision = 7
			r := testRegister([]Member{{Name: "a", Value: "v", CreateRevision: revision}}, revision, revision)
			term := newTenure(r.key, revision, r.clock, r.notLeading).term
			if err := call.ended(term); err != nil {
				t.Fatalf("a term of a live lease reports %v", err)
			}

			r.clock.monoDeadline.Store(int64(time.Since(r.clock.epoch))) // the deadline is now
			err := call.ended(term)
			if !errors.Is(err, context.Canceled) && !errors.Is(err, ErrLeaseDeadline) {
				t.Fatalf("the first call past the deadline reports %v", err)
			}
			select {
			case <-term.Done():
			default:
				t.Fatal("Done is open while the term reports its end")
			}
			if cause := context.Cause(term); !errors.Is(cause, ErrLeaseDeadline) {
				t.Fatalf("cause %v, want ErrLeaseDeadline", cause)
			}
		})
	}
}

// notLeading names the reason a registration does not lead, for every reason
// a term can end with, and AmILeader agrees with it.
func TestNotLeadingSaysWhy(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const ours = 7 // the create revision of our registration "a"
	a := Member{Name: "a", Value: "v", CreateRevision: ours}
	for _, tc := range []struct {
		name     string
		members  []Member // the cache
		revision int64    // the cache's revision
		change   func(r *register)
		want     error
	}{
		{"leads", []Member{a, {Name: "b", CreateRevision: 9}}, 9, nil, nil},
		{"closing", []Member{a}, 9, func(r *register) { r.closing.Store(true) }, ErrClosed},
		{"registered again", []Member{a}, 9, func(r *register) {
			r.current.Store(&registration{revision: ours + 5, cluster: 1, clock: r.clock})
		}, ErrRegistrationLost},
		{"resigning", []Member{a}, 9, func(r *register) {
			resigned := *r.current.Load()
			resigned.resigned = true
			r.current.Store(&resigned)
		}, ErrResigned},
		{"lease deadline passed", []Member{a}, 9, func(r *register) { r.clock.clear() }, ErrLeaseDeadline},
		// Revisions go down only when etcd is restored from an older
		// snapshot; a member older than ours then leads.
		{"an older member", []Member{{Name: "b", CreateRevision: 5}, a}, 9, nil, ErrNotLeader},
		{"not in the cache yet", []Member{{Name: "b", CreateRevision: 3}}, ours - 2, nil, ErrNotLeader},
		{"gone from a cache that saw it", []Member{{Name: "b", CreateRevision: 3}}, 9, nil, ErrRegistrationLost},
		// A progress notification ahead of our registration's event (etcd
		// before 3.4.25 and 3.5.8 sends one): the event is still to come.
		{"not in the cache yet, progress beyond", []Member{{Name: "b", CreateRevision: 3}}, ours - 2,
			func(r *register) {
				ahead, _ := r.watcher.snap.Load().apply("/t/", "/t/a", nil, ours+3)
				r.watcher.snap.Store(ahead)
			}, ErrNotLeader},
		{"another registration of the name", []Member{{Name: "a", CreateRevision: 4}}, 9, nil, ErrRegistrationLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testRegister(tc.members, tc.revision, ours)
			if tc.change != nil {
				tc.change(r)
			}
			if err := r.notLeading(ours); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("notLeading = %v, want %v", err, tc.want)
			}
			if got := r.AmILeader(); got != (tc.want == nil) {
				t.Fatalf("AmILeader = %v where notLeading says %v", got, tc.want)
			}
			if lost := r.keyLost(r.watcher.snap.Load()); lost != errors.Is(tc.want, ErrRegistrationLost) && tc.name != "registered again" {
				t.Fatalf("keyLost = %v where notLeading says %v", lost, tc.want)
			}
		})
	}
}

// A reader that took the registration just before the loop replaced it
// (its lease lost, a new registration on a new lease) reads the old
// registration with its own lease's deadline, never the new one's: the
// revision and the deadline are one value.
func TestLeadershipReadsOneRegistration(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const ours = 7
	r := testRegister([]Member{{Name: "a", Value: "v", CreateRevision: ours}}, 9, ours)
	old, snap := r.current.Load(), r.watcher.snap.Load()
	if !r.leads(old, snap) {
		t.Fatal("the registration does not lead")
	}
	// The loop: the lease is lost, and the Register registers again on a
	// new one, whose answer just came; the cache still shows the old key.
	r.clock.clear()
	r.clock = newLeaseClock()
	r.clock.extend(time.Now(), time.Hour)
	r.current.Store(&registration{revision: ours + 5, cluster: 1, clock: r.clock})
	if r.leads(old, snap) {
		t.Fatal("the old registration leads on the new lease's deadline")
	}
}

// testRegister returns a register "a" under "/t/", on lease 1 of cluster 1
// alive for an hour, registered at revision (its value "v"), whose cache
// holds members at cacheRevision: its own key as the member "a" says.
func testRegister(members []Member, cacheRevision, revision int64) *register {
	r := &register{name: "a", key: "/t/a", watcher: &watcher{logger: slog.New(slog.DiscardHandler)},
		changed: newSignal(), lease: 1, clock: newLeaseClock(), value: "v", written: revision}
	snap, _, _ := emptySnapshot(0).replace(slices.Clone(members), nil, cacheRevision, 0)
	snap.cluster = 1
	for _, m := range members {
		if m.Name == r.name {
			snap.own = keyState{createRevision: m.CreateRevision, modRevision: m.CreateRevision, lease: r.lease, value: m.Value}
		}
	}
	r.watcher.snap.Store(snap)
	r.clock.extend(time.Now(), time.Hour)
	r.current.Store(&registration{revision: revision, cluster: 1, clock: r.clock})
	return r
}

// WaitLeader and WaitTerm answer alike: a member that leads gets its answer
// at once even with a ctx that has ended; one that does not gets ctx.Err().
func TestWaitWithEndedContext(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const ours = 7
	r := testRegister([]Member{{Name: "a", Value: "v", CreateRevision: ours}}, 9, ours)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	defer r.cancel()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.WaitLeader(ended); err != nil {
		t.Fatalf("WaitLeader of a leader with an ended ctx: %v", err)
	}
	term, err := r.WaitTerm(ended)
	if err != nil || term == nil {
		t.Fatalf("WaitTerm of a leader with an ended ctx: %v", err)
	}
	term.tenure.finish(nil)
	r.clock.clear() // leads no more
	if err := r.WaitLeader(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitLeader of a follower with an ended ctx: %v", err)
	}
	if _, err := r.WaitTerm(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitTerm of a follower with an ended ctx: %v", err)
	}
}

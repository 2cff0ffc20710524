package biregister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
)

// waitTerm returns r's next term, failing the test if none comes in time.
func waitTerm(t *testing.T, r biregister.Register) *biregister.Term {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	term, err := r.WaitTerm(ctx)
	require.NoError(t, err)
	return term
}

// requireEnded fails the test unless term ends, in time, with cause.
func requireEnded(t *testing.T, term *biregister.Term, cause error) {
	t.Helper()
	select {
	case <-term.Done():
	case <-time.After(waitFor):
		t.Fatalf("%v still lasts", term)
	}
	require.ErrorIs(t, term.Err(), context.Canceled)
	require.ErrorIs(t, context.Cause(term), cause)
}

// A term is a context of the registration that leads: it carries its
// revision and fence, outlives the context of the wait, and ends with the
// right cause on Resign and on Close, and so do contexts derived from it.
func TestTermBasics(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/term", "a", "v", 5)
	term := waitTerm(t, r)
	require.NoError(t, term.Err())
	require.Equal(t, r.MyRevision(), term.Revision())
	require.Contains(t, term.String(), "/term/a")
	_, hasDeadline := term.Deadline()
	require.False(t, hasDeadline, "a term asked with a context without deadline has none")

	cli := etcd.Client(t)
	resp, err := cli.Txn(context.Background()).If(term.Fence()).Then(clientv3.OpPut("/owner", "a")).Commit()
	require.NoError(t, err)
	require.True(t, resp.Succeeded, "the fence of a live term must hold")

	// WaitTerm's context bounds the wait only; calls during one term
	// return the same Term.
	ctx, cancel := context.WithCancel(context.Background())
	again, err := r.WaitTerm(ctx)
	require.NoError(t, err)
	cancel()
	require.Same(t, term, again)
	require.NoError(t, term.Err(), "a term must not end with the context of the wait")

	require.NoError(t, r.Resign(context.Background()))
	requireEnded(t, term, biregister.ErrResigned)
	resp, err = cli.Txn(context.Background()).If(term.Fence()).Then(clientv3.OpPut("/owner", "a")).Commit()
	require.NoError(t, err)
	require.False(t, resp.Succeeded, "the fence of an ended term must not hold for the next registration")

	next := waitTerm(t, r)
	require.Greater(t, next.Revision(), term.Revision())
	derived, cancelDerived := context.WithTimeout(next, time.Hour)
	defer cancelDerived()
	r.Close()
	requireEnded(t, next, biregister.ErrClosed)
	select {
	case <-derived.Done():
	case <-time.After(waitFor):
		t.Fatal("a context derived from a term did not end with it")
	}
	_, err = r.WaitTerm(context.Background())
	require.ErrorIs(t, err, biregister.ErrClosed)
}

// WaitTerm returns when the leader leaves, and gives up with its context.
func TestWaitTermBlocksUntilLeading(t *testing.T) {
	etcd := startEtcd(t)
	first := startRegister(t, etcd.Endpoints(), "/term", "first", "v", 5)
	second := startRegister(t, etcd.Endpoints(), "/term", "second", "v", 5)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := second.WaitTerm(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	got := make(chan *biregister.Term, 1)
	go func() {
		term, _ := second.WaitTerm(context.Background())
		got <- term
	}()
	first.Close()
	select {
	case term := <-got:
		require.NotNil(t, term)
		require.Equal(t, second.MyRevision(), term.Revision())
	case <-time.After(waitFor):
		t.Fatal("WaitTerm did not return once second led")
	}
}

// The key of a leading registration deleted from outside ends its term with
// ErrRegistrationLost, within one watch event: long before the lease
// deadline (ttl 60 s), which would end it too.
func TestTermEndsOnKeyDeleted(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/term", "a", "v", 60)
	term := waitTerm(t, r)
	_, err := etcd.Client(t).Delete(context.Background(), r.MyKey())
	require.NoError(t, err)
	requireEnded(t, term, biregister.ErrRegistrationLost)
}

// The lease deadline ends a term by itself: here the registration loop is
// held in a request to an etcd it cannot reach, so that no keepalive goes
// out and no loop looks, and the term still ends, with ErrLeaseDeadline,
// while the request is pending.
func TestTermEndsByItsTimer(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	r := startRegister(t, []string{proxy.Endpoint()}, "/timer", "a", "v", faultTTL)
	term := waitTerm(t, r)

	proxy.Stall()
	defer proxy.Heal()
	ctx, cancel := context.WithTimeout(context.Background(), 3*faultTTL*time.Second)
	defer cancel()
	setDone := make(chan error, 1)
	go func() { setDone <- r.SetValue(ctx, "w") }()
	select {
	case <-term.Done():
	case err := <-setDone:
		t.Fatalf("SetValue returned (%v) before the term ended", err)
	case <-time.After(waitFor):
		t.Fatal("the term outlived its lease deadline")
	}
	require.ErrorIs(t, context.Cause(term), biregister.ErrLeaseDeadline)
	select {
	case err := <-setDone:
		t.Fatalf("SetValue returned (%v): the loop was not held", err)
	default:
	}
	cancel()
	<-setDone
}

// Lead runs work once per term, each time the member leads, and returns with
// its context or when the Register closes.
func TestLead(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/lead", "a", "v", 5)
	terms := make(chan *biregister.Term)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- r.Lead(ctx, func(term *biregister.Term) {
			terms <- term
			<-term.Done()
		})
	}()
	receive := func() *biregister.Term {
		select {
		case term := <-terms:
			return term
		case <-time.After(waitFor):
			t.Fatal("no term")
		}
		return nil
	}
	first := receive()
	require.NoError(t, r.Resign(context.Background()))
	second := receive()
	require.ErrorIs(t, context.Cause(first), biregister.ErrResigned)
	require.Greater(t, second.Revision(), first.Revision())
	// Lead's context ends the term it handed out, and Lead.
	cancel()
	requireEnded(t, second, context.Canceled)
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(waitFor):
		t.Fatal("Lead did not return with its context")
	}
	require.NoError(t, waitTerm(t, r).Err(), "Lead's context must end its own term only")

	requireReturnsClosed(t, r, "Lead", func() error { return r.Lead(context.Background(), func(*biregister.Term) {}) })
}

// Many terms in a row, ended every way but the lease, leave nothing behind:
// no goroutine (the leak check), no timer that keeps a term alive.
func TestTermsLeaveNothingBehind(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/terms", "a", "v", 5)
	const contextsEnded = 10000
	for i := 0; i < contextsEnded; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		err := r.Lead(ctx, func(term *biregister.Term) { cancel() })
		require.ErrorIs(t, err, context.Canceled)
	}
	resigned := stressCount(100, 10000)
	for i := 0; i < resigned; i++ {
		term := waitTerm(t, r)
		require.NoError(t, r.Resign(context.Background()))
		requireEnded(t, term, biregister.ErrResigned)
	}
	t.Logf("%d terms of Lead ended by its context, %d terms by Resign", contextsEnded, resigned)
}

// A Register that can no longer know its lease alive ends its term at the
// lease deadline, strictly before anyone else can lead: the old term's Done
// is closed when the successor's term begins, every time. One process, one
// clock. In stress mode (BIREGISTER_STRESS=1) it runs 20 times.
func TestTermEndsBeforeSuccessorBegins(t *testing.T) {
	for run := range stressCount(1, 20) {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			etcd := startEtcd(t)
			proxy := faultproxy.Start(t, etcd.Endpoint(0))
			old := startRegister(t, []string{proxy.Endpoint()}, "/stall-term", "old", "v", faultTTL)
			next := startRegister(t, etcd.Endpoints(), "/stall-term", "next", "v", faultTTL)
			oldTerm := waitTerm(t, old)

			oldEnded := make(chan time.Time, 1)
			go func() {
				<-oldTerm.Done()
				oldEnded <- time.Now()
			}()
			stalled := time.Now()
			proxy.Stall()
			defer proxy.Heal()
			nextTerm := waitTerm(t, next)
			began := time.Now()
			select {
			case <-oldTerm.Done():
			default:
				t.Fatal("the successor's term began while the old one lasted")
			}
			require.ErrorIs(t, context.Cause(oldTerm), biregister.ErrLeaseDeadline)
			ended := <-oldEnded
			require.True(t, ended.Before(began), "old term ended %v, successor's began %v", ended, began)
			t.Logf("old term ended %v after the stall, the successor's began %v later", ended.Sub(stalled), began.Sub(ended))
			require.NoError(t, nextTerm.Err())
		})
	}
}

// The leadership deadline dates from when the acknowledged keepalive was
// sent, not from when its answer arrived. Here they differ by more than the
// margin: etcd's answers reach the leader 1.2 s late, then its requests stop
// reaching etcd while the last answers are still on their way. Dated from
// the answers, the old leader would believe in a lease that etcd has let go.
func TestLeaderSafeWhenAnswersLag(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 3
	old := startRegister(t, []string{proxy.Endpoint()}, "/lag", "old", "v", ttl)
	next := startRegister(t, etcd.Endpoints(), "/lag", "next", "v", ttl)
	oldTerm := waitTerm(t, old)

	proxy.DelayReplies(1200 * time.Millisecond)
	steady := time.Now().Add(ttl * time.Second)
	for time.Now().Before(steady) {
		require.True(t, old.AmILeader(), "a slow link alone must not cost leadership")
		time.Sleep(10 * time.Millisecond)
	}
	sampler := startSampling(old, next)
	proxy.StallRequests()
	nextTerm := waitTerm(t, next)
	select {
	case <-oldTerm.Done():
	default:
		t.Fatal("the successor's term began while the old one lasted")
	}
	s := sampler.result()
	requireOneLeaderAtATime(t, s)
	t.Logf("gap between old leader's last true and new leader's first true: %v", s.firstNew.Sub(s.lastOld))
	assert.NoError(t, nextTerm.Err())
	proxy.Heal()
}

// A leader paused in the middle of its work, past its lease (here: its
// link to etcd silent), may find on resuming that it registered again
// before its write goes out, while another member leads and has written.
// A fence taken when it decided — Fence before AmILeader, as README and
// ExampleRegister_Fence show, or its term's — is refused then; the work
// never overwrites the successor's.
func TestFenceTakenAtTheDecision(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 2
	a := startRegister(t, []string{proxy.Endpoint()}, "/decide", "a", "va", ttl)
	b := startRegister(t, etcd.Endpoints(), "/decide", "b", "vb", ttl)
	ctx := context.Background()

	// a decides: the fence first, then whether it leads.
	fence := a.Fence()
	require.True(t, a.AmILeader())
	term := waitTerm(t, a)
	before := a.MyRevision()

	// a's work takes longer than its lease: b leads, and writes.
	proxy.Stall()
	require.NoError(t, b.WaitLeader(ctx))
	written, err := cli.Txn(ctx).If(b.Fence()).Then(clientv3.OpPut("/decide-owner", "b")).Commit()
	require.NoError(t, err)
	require.True(t, written.Succeeded)
	// a resumes, and registers again before its write goes out.
	proxy.Heal()
	require.Eventually(t, func() bool { return a.MyRevision() > before }, waitFor, time.Millisecond)
	for _, f := range []clientv3.Cmp{fence, term.Fence()} {
		late, err := cli.Txn(ctx).If(f).Then(clientv3.OpPut("/decide-owner", "a")).Commit()
		require.NoError(t, err)
		require.False(t, late.Succeeded, "a fence taken at the decision held after the member registered again")
	}
	got, err := cli.Get(ctx, "/decide-owner")
	require.NoError(t, err)
	require.Equal(t, "b", string(got.Kvs[0].Value))
}

// A shutdown by the caller reads as one, whichever Lead notices first: the
// signal that ends its context, or Close right behind it (the leader
// example's shutdown). Lead returns the context's error, never ErrClosed
// then.
func TestLeadShutdownRace(t *testing.T) {
	etcd := startEtcd(t)
	for round := range 20 {
		r, err := biregister.NewRegister(etcd.Endpoints(), "/lead-shutdown", "a", "v", 5)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		leading := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- r.Lead(ctx, func(term *biregister.Term) {
				close(leading)
				<-term.Done()
			})
		}()
		select {
		case <-leading:
		case <-time.After(waitFor):
			t.Fatal("never led")
		}
		// The signal, and Close right behind it, as the leader example
		// does: from this goroutine, or from another that races Lead.
		cancel()
		if round%2 == 0 {
			r.Close()
		} else {
			go r.Close()
		}
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled, "round %d", round)
		case <-time.After(waitFor):
			t.Fatal("Lead did not return")
		}
		r.Close()
	}
}

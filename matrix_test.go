package biregister_test

// The matrix of a Register's methods × faults × inputs (TestMatrix…, in
// matrix_*_test.go), and the checks of the contract that every cell of it
// applies: nothing panics or blocks beyond its bound, errors match the
// sentinels, a refused request changes nothing, and once a fault heals the
// Register is back in its contract state. The leak check is startEtcd's.

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

const (
	// matrixTTL is the lease TTL of the matrix's Registers, in seconds;
	// matrixLease is the same as a Duration.
	matrixTTL   = 2
	matrixLease = matrixTTL * time.Second
	// readBound bounds every read: reads never touch the network, so any
	// bound holds; this one leaves room for a loaded machine under -race.
	readBound = time.Second
	// slack is the room given beyond a documented bound, for a loaded
	// machine under -race.
	slack = 2 * time.Second
	// promptly bounds how long a call takes to return once its context
	// ended: it has only to notice. (Far less than matrixTTL, so that a
	// call that waits for the loop's own bound instead is caught.)
	promptly = 500 * time.Millisecond
)

// requestBound is the most SetValue or Resign may take with a context that
// never ends: a wait for the loop, which may be in one attempt at
// registering again (max(ttl/3, 500 ms)), and the request, which the loop
// bounds by ttl.
func requestBound(ttl time.Duration) time.Duration {
	return ttl + max(ttl/3, 500*time.Millisecond) + slack
}

// closeBound is the most Close may take on an etcd that does not answer:
// its revoke waits min(ttl, 2 s).
func closeBound(ttl time.Duration) time.Duration { return min(ttl, 2*time.Second) + slack }

// returnsWithin runs call, named what, and returns its result; it fails the
// test if call panics or does not return within bound.
func returnsWithin[T any](t *testing.T, what string, bound time.Duration, call func() T) T {
	t.Helper()
	type outcome struct {
		result   T
		panicked string
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- outcome{panicked: fmt.Sprintf("%v\n%s", p, debug.Stack())}
			}
		}()
		done <- outcome{result: call()}
	}()
	select {
	case o := <-done:
		if o.panicked != "" {
			t.Fatalf("%s panicked: %s", what, o.panicked)
		}
		return o.result
	case <-time.After(bound):
		t.Fatalf("%s did not return within %v", what, bound)
	}
	panic("unreachable")
}

// construct runs a constructor, named what, and returns what it made; it
// fails the test if the constructor fails, panics or does not return within
// bound. t.Cleanup closes what it made.
func construct[T interface{ Close() }](t *testing.T, what string, bound time.Duration, newT func() (T, error)) T {
	t.Helper()
	type made struct {
		x   T
		err error
	}
	m := returnsWithin(t, what, bound, func() made {
		x, err := newT()
		return made{x, err}
	})
	require.NoError(t, m.err, what)
	t.Cleanup(m.x.Close)
	return m.x
}

// eventually waits until check returns "", and fails the test with the last
// reason it gave if that does not happen within waitFor.
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	eventuallyWithin(t, waitFor, what, check)
}

// eventuallyWithin is eventually with a bound of d.
func eventuallyWithin(t *testing.T, d time.Duration, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		why := check()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// short quotes s for a message, cut short: values can be megabytes long.
func short(s string) string {
	if len(s) <= 40 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:40], len(s))
}

// checkReads calls every read of x — and of the Register x may be — and
// fails the test unless all of them return within readBound, without a
// panic, with answers that agree with themselves.
func checkReads(t *testing.T, x biregister.Watcher) {
	t.Helper()
	problems := returnsWithin(t, "the reads of "+short(x.Prefix()), readBound, func() []string { return readAll(x) })
	if len(problems) > 0 {
		t.Fatalf("reads of %s: %s", short(x.Prefix()), strings.Join(problems, "; "))
	}
}

// readAll calls every read of x and returns what disagrees with itself. It
// may run on any goroutine: it reports instead of failing the test.
func readAll(x biregister.Watcher) []string {
	var problems []string
	wrong := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	members := x.Members()
	if !slices.IsSortedFunc(members, func(a, b biregister.Member) int {
		if a.CreateRevision != b.CreateRevision {
			return int(a.CreateRevision - b.CreateRevision)
		}
		return strings.Compare(a.Name, b.Name)
	}) {
		wrong("Members not oldest first")
	}
	x.GetAll()
	x.GetNames()
	x.GetValues()
	name, value := x.GetLeader()
	if name == "" && value != "" {
		wrong("a leader without a name has a value")
	}
	x.GetValueByName(name)
	view := x.View()
	n := 0
	for m := range view.All() {
		if got, ok := view.Member(m.Name); !ok || got != m {
			wrong("View.Member(%s) differs from View.All", short(m.Name))
		}
		if leader, _ := view.Leader(); n == 0 && leader != m {
			wrong("View.Leader is not the oldest member")
		}
		n++
	}
	if n != view.Len() {
		wrong("View.Len %d, View.All %d members", view.Len(), n)
	}
	if put, gone := view.Diff(view); len(put)+len(gone) > 0 {
		wrong("a View differs from itself")
	}
	x.Updated()
	x.Status()
	if err := x.Ready(); err != nil && !errors.Is(err, biregister.ErrNotReady) {
		wrong("Ready: %v does not wrap ErrNotReady", err)
	}
	x.EtcdClient()
	if r, ok := x.(biregister.Register); ok {
		r.AmILeader()
		r.MyRevision()
		r.Fence()
		if r.MyKey() != r.Prefix()+r.MyName() {
			wrong("MyKey %s is not Prefix+MyName", short(r.MyKey()))
		}
	}
	return problems
}

// checkRegistered waits until r is in its contract state: etcd holds its
// key with one of values, bound to a live lease that lists the key, at the
// create revision r reports; r is registered and reads that value; and the
// caches of r and of every watcher equal etcd.
func checkRegistered(t *testing.T, cli *clientv3.Client, r biregister.Register, values []string, watchers ...biregister.Watcher) {
	t.Helper()
	eventually(t, short(r.MyKey())+" not in its contract state", func() string {
		resp, err := cli.Get(context.Background(), r.MyKey())
		switch {
		case err != nil:
			return err.Error()
		case len(resp.Kvs) == 0:
			return "etcd holds no key"
		}
		kv := resp.Kvs[0]
		held := string(kv.Value)
		switch {
		case !slices.Contains(values, held):
			return "etcd holds the value " + short(held)
		case !boundToLiveLease(t, cli, r.MyKey(), held, 0):
			return "the key is not bound to a live lease that lists it"
		case !r.Status().Registered:
			return "Status().Registered is false"
		case r.MyRevision() != kv.CreateRevision:
			return fmt.Sprintf("MyRevision %d, the key's create revision %d", r.MyRevision(), kv.CreateRevision)
		case r.GetValueByName(r.MyName()) != held:
			return "the Register reads " + short(r.GetValueByName(r.MyName()))
		}
		for _, w := range append([]biregister.Watcher{r}, watchers...) {
			if !sameAsEtcd(t, cli, w, w.Prefix()) {
				return fmt.Sprintf("a cache of %d members differs from etcd", len(w.Members()))
			}
		}
		return ""
	})
}

// held is what etcd holds at a Register's key, and what the Register says.
type held struct {
	value    string
	revision int64
	lease    int64
}

// heldBy returns what etcd holds at r's key, requiring that r agrees.
func heldBy(t *testing.T, cli *clientv3.Client, r biregister.Register) held {
	t.Helper()
	resp, err := cli.Get(context.Background(), r.MyKey())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "etcd holds no key for %s", short(r.MyKey()))
	kv := resp.Kvs[0]
	require.Equal(t, kv.CreateRevision, r.MyRevision())
	return held{value: string(kv.Value), revision: kv.CreateRevision, lease: kv.Lease}
}

// checkUnchanged fails the test unless r and etcd are as before: a request
// etcd refused leaves the Register exactly as it was, on a live lease.
func checkUnchanged(t *testing.T, cli *clientv3.Client, r biregister.Register, before held) {
	t.Helper()
	require.Equal(t, before, heldBy(t, cli, r), "etcd's key changed")
	require.True(t, boundToLiveLease(t, cli, r.MyKey(), before.value, before.revision-1), "the key is not on a live lease")
	require.Equal(t, before.value, r.GetValueByName(r.MyName()))
	require.True(t, r.Status().Registered)
}

// checkWaitsEnd fails the test unless WaitLeader, WaitTerm and Lead, each
// given a context that ends after d, return by d + promptly: with ctx.Err(),
// or, for WaitLeader and WaitTerm, with leadership.
func checkWaitsEnd(t *testing.T, r biregister.Register, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	errs := returnsWithin(t, "WaitLeader, WaitTerm and Lead", d+promptly, func() [3]error {
		var errs [3]error
		done := make(chan struct{}, 2)
		go func() {
			errs[0] = r.WaitLeader(ctx)
			done <- struct{}{}
		}()
		go func() {
			term, err := r.WaitTerm(ctx)
			if (term == nil) == (err == nil) {
				err = fmt.Errorf("WaitTerm returned term %v and error %v", term, err)
			}
			errs[1] = err
			done <- struct{}{}
		}()
		errs[2] = r.Lead(ctx, func(term *biregister.Term) { <-term.Done() })
		<-done
		<-done
		return errs
	})
	for i, what := range []string{"WaitLeader", "WaitTerm"} {
		if errs[i] != nil {
			require.ErrorIs(t, errs[i], context.DeadlineExceeded, what)
		}
	}
	require.ErrorIs(t, errs[2], context.DeadlineExceeded, "Lead")
}

// call is a method call that takes time, named for messages.
type call struct {
	name string
	do   func() error
}

// requests returns r's calls that may wait, each with ctx: SetValue,
// Resign, WaitLeader, WaitTerm and Lead (whose work waits for its term to
// end).
func requests(ctx context.Context, r biregister.Register) []call {
	return []call{
		{"SetValue", func() error { return r.SetValue(ctx, "requested") }},
		{"Resign", func() error { return r.Resign(ctx) }},
		{"WaitLeader", func() error { return r.WaitLeader(ctx) }},
		{"WaitTerm", func() error { _, err := r.WaitTerm(ctx); return err }},
		{"Lead", func() error { return r.Lead(ctx, func(term *biregister.Term) { <-term.Done() }) }},
	}
}

// checkCloseEnds starts the named requests of r with ctx, which must not be
// able to finish by themselves, waits until each is in flight, closes r,
// and fails the test unless Close returns within closeBound(ttl) and every
// request with ErrClosed. Then it checks every method of the closed
// Register (checkClosed).
func checkCloseEnds(t *testing.T, ctx context.Context, r biregister.Register, ttl time.Duration, names ...string) {
	t.Helper()
	calls := slices.DeleteFunc(requests(ctx, r), func(c call) bool { return !slices.Contains(names, c.name) })
	require.Len(t, calls, len(names), "requests %v", names)
	results := make(chan error, len(calls))
	for _, c := range calls {
		go func() {
			err := c.do()
			if !errors.Is(err, biregister.ErrClosed) {
				err = fmt.Errorf("%s returned %v, not ErrClosed", c.name, err)
			} else {
				err = nil
			}
			results <- err
		}()
	}
	for _, c := range calls {
		eventually(t, c.name+" never got in flight", func() string {
			if len(results) > 0 || stackHas("(*register)."+c.name+"(") {
				return ""
			}
			return "not on any stack"
		})
	}
	returnsWithin(t, "Close", closeBound(ttl), func() struct{} { r.Close(); return struct{}{} })
	for range calls {
		select {
		case err := <-results:
			require.NoError(t, err)
		case <-time.After(readBound):
			t.Fatal("a call did not return once Close had")
		}
	}
	checkClosed(t, r)
}

// checkClosed fails the test unless every method of the closed r answers
// at once, as README's After Close says: requests and waits ErrClosed, no
// registration, no leadership, closed feeds.
func checkClosed(t *testing.T, r biregister.Register) {
	t.Helper()
	checkReads(t, r)
	for _, c := range requests(context.Background(), r) {
		require.ErrorIs(t, returnsWithin(t, c.name+" after Close", readBound, c.do), biregister.ErrClosed, c.name)
	}
	returnsWithin(t, "Close again", readBound, func() struct{} { r.Close(); return struct{}{} })
	require.False(t, r.AmILeader())
	require.Zero(t, r.MyRevision())
	require.False(t, r.Status().Registered)
	require.ErrorIs(t, r.Ready(), biregister.ErrNotReady)
	for range r.Changes() { // closed: the loop ends
	}
	<-r.Closed()
}

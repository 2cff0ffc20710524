package biregister_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
)

// within returns the next value of ch, failing the test, which waited for
// what, if none comes within waitFor.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("%s: nothing within %v", what, waitFor)
	}
	var zero T
	return zero
}

// A Resign whose delete reaches etcd at once but whose answer the member
// does not have when the caller stops waiting leaves the member not
// leading: etcd may have let the next member lead, and here it has.
// Sampled every millisecond, the two members never lead at once, and the
// old member's WaitTerm hands out no live term while the next one leads.
// The member registers again, behind the next one.
//
//   - answer late: replies come 1.5 s late and the caller waits 500 ms; the
//     Resign runs to its end all the same;
//   - answer lost: the connection is cut while the answer is on its way, so
//     the Resign fails without knowing; the member must not lead again
//     until it knows (replies are still 1.5 s late afterwards, so that its
//     watch learns of the delete only then).
func TestResignUnansweredNeverTwoLeaders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		resign func(t *testing.T, a, b biregister.Register, proxy *faultproxy.Proxy)
	}{
		{"answer late", func(t *testing.T, a, _ biregister.Register, _ *faultproxy.Proxy) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			require.ErrorIs(t, a.Resign(ctx), context.DeadlineExceeded)
		}},
		{"answer lost", func(t *testing.T, a, b biregister.Register, proxy *faultproxy.Proxy) {
			resigned := make(chan error, 1)
			go func() { resigned <- a.Resign(context.Background()) }()
			require.Eventually(t, b.AmILeader, waitFor, time.Millisecond, "the delete never reached etcd")
			proxy.Cut()
			require.Error(t, within(t, resigned, "Resign"))
			proxy.Heal()
			proxy.DelayReplies(lateReplies)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etcd := startEtcd(t)
			proxy := faultproxy.Start(t, etcd.Endpoint(0))
			// Keepalives answered 1.5 s late keep the lease certainly
			// alive, and an attempt to register again, bounded by ttl/3,
			// has its answer in time.
			const ttl = 6
			a := startRegister(t, []string{proxy.Endpoint()}, "/resign-unanswered", "a", "v", ttl)
			b := startRegister(t, etcd.Endpoints(), "/resign-unanswered", "b", "v", ttl)
			require.True(t, a.AmILeader())
			resigned := a.MyRevision()

			stop := make(chan struct{})
			var both, termsWhileB atomic.Int64
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					// b first: once b leads, a must never lead again.
					if b.AmILeader() && a.AmILeader() {
						both.Add(1)
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			waited := make(chan struct{})
			go func() {
				defer close(waited)
				// WaitTerm asked afresh every few milliseconds, as a
				// caller that comes along at any moment would.
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
					term, err := a.WaitTerm(ctx)
					cancel()
					if err != nil {
						select {
						case <-stop:
							return
						default:
							continue
						}
					}
					if b.AmILeader() && term.Err() == nil {
						termsWhileB.Add(1)
					}
					select {
					case <-term.Done():
					case <-stop:
						return
					}
				}
			}()

			proxy.DelayReplies(lateReplies)
			tc.resign(t, a, b, proxy)
			// Until a has registered again behind b, and its own cache
			// says so.
			require.Eventually(t, func() bool {
				name, _ := a.GetLeader()
				return a.MyRevision() > resigned && a.MyRevision() > b.MyRevision() && name == "b"
			}, waitFor, time.Millisecond, "a must register again, behind b")
			close(stop)
			<-sampled
			<-waited
			t.Logf("%d ms of two leaders, %d live terms handed out while b led", both.Load(), termsWhileB.Load())
			require.Zero(t, both.Load(), "milliseconds during which a and b both led")
			require.Zero(t, termsWhileB.Load(), "live terms a's WaitTerm handed out while b led")
			require.True(t, b.AmILeader())
			proxy.Heal()
		})
	}
}

// lateReplies is how late etcd's replies reach a resigning member.
const lateReplies = 1500 * time.Millisecond

// Work that hands leadership on calls Resign with the term it was given:
// the Resign ends that term itself, and must not fail for it. Resign
// returns nil, the member leads no more, the term ends with ErrResigned,
// and the member's next term, once the other member has gone, is of a new,
// later registration.
func TestResignWithItsOwnTerm(t *testing.T) {
	for _, tc := range []struct {
		name string
		// resign calls Resign with a term of a and returns that term and
		// the Resign's error.
		resign func(t *testing.T, a biregister.Register) (*biregister.Term, error)
	}{
		{"WaitTerm", func(t *testing.T, a biregister.Register) (*biregister.Term, error) {
			term := waitTerm(t, a)
			return term, a.Resign(term)
		}},
		{"Lead", func(t *testing.T, a biregister.Register) (*biregister.Term, error) {
			ctx, cancel := context.WithCancel(context.Background())
			led := make(chan struct{})
			t.Cleanup(func() {
				cancel()
				<-led
			})
			type outcome struct {
				term *biregister.Term
				err  error
			}
			resigned := make(chan outcome, 1)
			go func() {
				defer close(led)
				_ = a.Lead(ctx, func(term *biregister.Term) {
					select {
					case resigned <- outcome{term, a.Resign(term)}:
					default: // a later term: the test is over
					}
				})
			}()
			o := within(t, resigned, "Lead's work")
			return o.term, o.err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etcd := startEtcd(t)
			a := startRegister(t, etcd.Endpoints(), "/resign-own", "a", "v", 5)
			b := startRegister(t, etcd.Endpoints(), "/resign-own", "b", "v", 5)
			term, err := tc.resign(t, a)
			require.NoError(t, err)
			require.False(t, a.AmILeader())
			requireEnded(t, term, biregister.ErrResigned)
			require.Greater(t, a.MyRevision(), term.Revision(), "registered again")
			require.NoError(t, b.WaitLeader(context.Background()))
			b.Close()
			next := waitTerm(t, a)
			require.Greater(t, next.Revision(), term.Revision())
		})
	}
}

// readOnly lets user, whose role etcdtest names after it, only read prefix
// from now on; the function it returns lets the user write there again.
func readOnly(t *testing.T, root *clientv3.Client, user, prefix string) (readWrite func()) {
	t.Helper()
	grant := func(perm clientv3.PermissionType) {
		t.Helper()
		// A permission on the same range replaces the one the role had.
		_, err := root.RoleGrantPermission(context.Background(), user, prefix, clientv3.GetPrefixRangeEnd(prefix), perm)
		require.NoError(t, err)
	}
	grant(clientv3.PermissionType(clientv3.PermRead))
	return func() { grant(clientv3.PermissionType(clientv3.PermReadWrite)) }
}

// A Resign that etcd refuses outright (the member's user may no longer
// write its prefix) leaves the member leading as before, and wakes whoever
// started waiting for leadership while the Resign was under way: WaitLeader,
// WaitTerm and Lead return as soon as the refusal makes the member lead
// again. Replies come 500 ms late, so that the waiters are asleep before it.
func TestRefusedResignWakesWaiters(t *testing.T) {
	c := startSecureEtcd(t, etcdtest.Options{Auth: secureAuth()})
	proxy := faultproxy.Start(t, c.Endpoint(0))
	root := c.Client(t)
	a := startRegister(t, []string{proxy.Endpoint()}, securePrefix, "a", "v", 4, biregister.WithAuth(svcUser, svcPassword))
	term := waitTerm(t, a)
	readWrite := readOnly(t, root, svcUser, securePrefix)
	proxy.DelayReplies(500 * time.Millisecond)
	resigned := make(chan error, 1)
	go func() { resigned <- a.Resign(context.Background()) }()
	require.Eventually(t, func() bool { return !a.AmILeader() }, waitFor, time.Millisecond, "the Resign began")

	ctx, cancel := context.WithCancel(context.Background())
	var waiters sync.WaitGroup
	defer func() {
		cancel()
		waiters.Wait()
	}()
	woke := make(chan string, 3)
	waiters.Add(3)
	go func() {
		defer waiters.Done()
		if a.WaitLeader(ctx) == nil {
			woke <- "WaitLeader"
		}
	}()
	go func() {
		defer waiters.Done()
		if _, err := a.WaitTerm(ctx); err == nil {
			woke <- "WaitTerm"
		}
	}()
	go func() {
		defer waiters.Done()
		first := true
		_ = a.Lead(ctx, func(*biregister.Term) {
			if first {
				woke <- "Lead"
				first = false
			}
		})
	}()
	require.Eventually(t, func() bool {
		stacks := benchutil.Stacks()
		return strings.Contains(stacks, "(*register).WaitLeader") && strings.Count(stacks, "(*register).WaitTerm") >= 2
	}, waitFor, time.Millisecond, "the waiters never went to sleep")
	select {
	case err := <-resigned:
		t.Fatalf("the Resign ended (%v) before the waiters slept: the test proves nothing", err)
	default:
	}

	err := within(t, resigned, "Resign")
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	requireEnded(t, term, biregister.ErrResigned)
	require.True(t, a.AmILeader(), "a refused Resign leaves the member leading")
	refused := time.Now()
	for range 3 {
		t.Logf("%s woke %v after the refusal", within(t, woke, "the waiters"), time.Since(refused))
	}
	readWrite()
}

// A Resign's mark goes with the registration it resigned. Here etcd is then
// replaced by an empty cluster, whose revisions start again at 1, where the
// member, alone, would register again at the very revision it once resigned
// at (the first write of a cluster is at revision 2, as its first
// registration was), were it not that a registration never reuses a
// revision a replaced etcd's had: either way, it leads there.
func TestResignThenEtcdReplaced(t *testing.T) {
	etcd := startEtcd(t)
	a := startRegister(t, etcd.Endpoints(), "/resign-wipe", "a", "v", faultTTL)
	resigned := a.MyRevision()
	require.NoError(t, a.Resign(context.Background()))
	require.NoError(t, waitTerm(t, a).Err(), "alone, the member leads again at once")
	require.Greater(t, a.MyRevision(), resigned)

	etcd.Wipe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*faultTTL*time.Second)
	defer cancel()
	var term *biregister.Term
	require.Eventually(t, func() bool {
		var err error
		term, err = a.WaitTerm(ctx)
		return err == nil && a.Status().CreateRevision != 0 && term.Revision() == a.MyRevision()
	}, waitFor, time.Millisecond, "the member, alone, never leads in the new etcd")
	require.NotEqual(t, resigned, term.Revision(), "registered again at a revision of the replaced etcd")
	require.True(t, a.AmILeader())
}

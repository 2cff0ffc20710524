package biregister_test

// The matrix's faults of the network and of etcd: answers slow, the only
// endpoint stalled, one endpoint of two stalled, etcd down. In each, every
// method returns within its bound, and once the fault heals the Registers
// are in their contract state.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
)

// sampleLeading samples AmILeader of every Register until stop is called,
// which returns how many samples saw two of them lead at one moment: one
// led, then another, then the first again, all within a millisecond, too
// short for leadership to have moved twice (each move waits for a key to
// go from etcd and from a cache).
func sampleLeading(regs ...biregister.Register) (stop func() int) {
	var overlaps atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for ; ctx.Err() == nil; <-tick.C {
			for i, a := range regs {
				for _, b := range regs[i+1:] {
					start := time.Now()
					if a.AmILeader() && b.AmILeader() && a.AmILeader() && time.Since(start) < time.Millisecond {
						overlaps.Add(1)
					}
				}
			}
		}
	}()
	return func() int {
		cancel()
		sampling.Wait()
		return int(overlaps.Load())
	}
}

// pair returns two Registers of prefix — "a", reaching etcd through
// aEndpoints (etcd's own if none), and "b", reaching it directly — and a
// Watcher of the group.
func pair(t *testing.T, etcd *etcdtest.Cluster, prefix string, aEndpoints ...string) (a, b biregister.Register, w biregister.Watcher) {
	t.Helper()
	if len(aEndpoints) == 0 {
		aEndpoints = etcd.Endpoints()
	}
	a = startRegister(t, aEndpoints, prefix, "a", "v", matrixTTL)
	b = startRegister(t, etcd.Endpoints(), prefix, "b", "v", matrixTTL)
	return a, b, startWatcher(t, etcd.Endpoints(), prefix)
}

// duringFault calls each method of r that may wait on etcd while a fault
// holds, with contexts that end after d, and checks that each returns
// within d + promptly, with ctx.Err() where it could not be done: reads at
// once, SetValue, Resign, WaitLeader, WaitTerm and Lead. It returns the
// value SetValue tried, which etcd may hold once the fault heals.
func duringFault(t *testing.T, r biregister.Register, d time.Duration, value string) string {
	t.Helper()
	checkReads(t, r)
	for _, c := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"SetValue", func(ctx context.Context) error { return r.SetValue(ctx, value) }},
		{"Resign", r.Resign},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		err := returnsWithin(t, c.name, d+promptly, func() error { return c.do(ctx) })
		cancel()
		if err != nil && ctx.Err() == nil {
			t.Logf("%s under the fault: %v", c.name, err) // refused by etcd's client, say: its own answer
		} else if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded, c.name)
		}
	}
	checkWaitsEnd(t, r, d)
	checkReads(t, r)
	return value
}

// startConstructors starts each constructor with endpoints it cannot reach
// in time, and returns a check, for the test's goroutine, that each failed
// within about ttl (README, Errors: one second more here, for a loaded
// machine) with an error that wraps context.DeadlineExceeded, leaving
// nothing running.
func startConstructors(endpoints []string) (check func(t *testing.T)) {
	type failed struct {
		what string
		took time.Duration
		err  error
	}
	results := make(chan failed, 3)
	for what, construct := range map[string]func() (interface{ Close() }, error){
		"NewRegister": func() (interface{ Close() }, error) {
			return biregister.NewRegister(endpoints, "/fault-new", "a", "v", matrixTTL)
		},
		"NewRegisterNoName": func() (interface{ Close() }, error) {
			return biregister.NewRegisterNoName(endpoints, "/fault-new", "v", matrixTTL)
		},
		"NewWatcher": func() (interface{ Close() }, error) {
			return biregister.NewWatcher(endpoints, "/fault-new", matrixTTL)
		},
	} {
		go func() {
			start := time.Now()
			x, err := construct()
			if err == nil {
				x.Close()
				err = errors.New("succeeded")
			}
			results <- failed{what, time.Since(start), err}
		}()
	}
	return func(t *testing.T) {
		t.Helper()
		for range 3 {
			select {
			case r := <-results:
				assert.ErrorIs(t, r.err, context.DeadlineExceeded, r.what)
				assert.LessOrEqual(t, r.took, matrixLease+time.Second, "%s took %v, ttl %ds", r.what, r.took, matrixTTL)
			case <-time.After(waitFor):
				t.Fatal("a constructor did not return")
			}
		}
	}
}

// setValueReading calls SetValue(value) without a deadline, checks every
// read of r while the loop waits on etcd for it, and returns its result,
// which must come within requestBound(matrixLease).
func setValueReading(t *testing.T, r biregister.Register, value string) error {
	t.Helper()
	start := time.Now()
	result := make(chan error, 1)
	go func() { result <- r.SetValue(context.Background(), value) }()
	eventually(t, "SetValue never waited on etcd", func() string {
		if len(result) > 0 || stackHas("(*register).setValue(") {
			return ""
		}
		return "not on any stack"
	})
	checkReads(t, r)
	select {
	case err := <-result:
		return err
	case <-time.After(time.Until(start.Add(requestBound(matrixLease)))):
		t.Fatalf("SetValue did not return within %v", requestBound(matrixLease))
	}
	return nil
}

// checkLeft waits until etcd no longer holds the key of closed — revoked
// by Close, or expired with its lease — and until stayed, the other member,
// is in its contract state with one of values.
func checkLeft(t *testing.T, cli *clientv3.Client, closed, stayed biregister.Register, values []string, w biregister.Watcher) {
	t.Helper()
	eventually(t, "the key of a closed Register stays", func() string {
		resp, err := cli.Get(context.Background(), closed.MyKey())
		if err != nil || len(resp.Kvs) > 0 {
			return fmt.Sprint("still there ", err)
		}
		return ""
	})
	checkRegistered(t, cli, stayed, values, w)
}

// Answers from etcd 300 ms late: every request succeeds, a caller that
// stops waiting gets ctx.Err() at once while the loop carries the request
// to its end, reads never wait behind a request, the constructors succeed
// within their ttl, and Close returns within its bound.
func TestMatrixSlow(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	slow := faultproxy.Start(t, etcd.Endpoint(0))
	a, b, w := pair(t, etcd, "/slow", slow.Endpoint())
	slow.DelayReplies(300 * time.Millisecond)
	ctx := context.Background()

	require.NoError(t, returnsWithin(t, "SetValue", requestBound(matrixLease), func() error { return a.SetValue(ctx, "slow") }))
	checkRegistered(t, cli, a, []string{"slow"}, w)
	// A caller that gives up: the request still goes through.
	tried := duringFault(t, a, 100*time.Millisecond, "slow, given up")
	checkRegistered(t, cli, a, []string{"slow", tried}, w)
	t.Logf("the value given up on: etcd holds %s", short(heldBy(t, cli, a).value))

	// Reads while a request waits on the slow answer.
	require.NoError(t, setValueReading(t, a, "slow again"))
	require.NoError(t, returnsWithin(t, "Resign", requestBound(matrixLease), func() error { return a.Resign(ctx) }))
	checkRegistered(t, cli, a, []string{"slow again"}, w)
	checkRegistered(t, cli, b, []string{"v"}, w)

	for what, newX := range map[string]func() (interface{ Close() }, error){
		"NewRegister": func() (interface{ Close() }, error) {
			return biregister.NewRegister([]string{slow.Endpoint()}, "/slow", "c", "v", 5)
		},
		"NewRegisterNoName": func() (interface{ Close() }, error) {
			return biregister.NewRegisterNoName([]string{slow.Endpoint()}, "/slow", "v", 5)
		},
		"NewWatcher": func() (interface{ Close() }, error) {
			return biregister.NewWatcher([]string{slow.Endpoint()}, "/slow", 5)
		},
	} {
		construct(t, what, 5*time.Second+slack, newX)
	}
	// a resigned: its waits can only end with Close.
	checkCloseEnds(t, context.Background(), a, matrixLease, "WaitLeader", "WaitTerm", "Lead")
	checkLeft(t, cli, a, b, []string{"v"}, w)
}

// The only endpoint of a leader stalls silently for longer than its ttl:
// reads answer at once, requests end with their context or within ttl,
// constructors fail within ttl, the old leader stops leading before the
// next one leads, and after the heal it is registered again, behind it,
// with a value it was given. Stalled again, Close ends every call in
// flight and returns within its bound.
func TestMatrixStalled(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	a, b, w := pair(t, etcd, "/stalled", proxy.Endpoint())
	require.True(t, a.AmILeader())
	sampler := startSampling(a, b)
	proxy.Stall()

	constructorsFailed := startConstructors([]string{proxy.Endpoint()})
	tried := []string{"v", duringFault(t, a, 300*time.Millisecond, "stalled")}
	require.Error(t, setValueReading(t, a, "stalled, no ctx"))
	tried = append(tried, "stalled, no ctx")
	requireOneLeaderAtATime(t, sampler.result())
	t.Run("constructors fail within about ttl", constructorsFailed)

	proxy.Heal()
	checkRegistered(t, cli, a, tried, w)
	checkRegistered(t, cli, b, []string{"v"}, w)
	require.False(t, a.AmILeader())

	proxy.Stall()
	checkCloseEnds(t, context.Background(), a, matrixLease, "SetValue", "WaitLeader", "WaitTerm", "Lead")
	proxy.Heal()
	checkLeft(t, cli, a, b, []string{"v"}, w)
}

// One endpoint of a Register's two stalls silently: its requests end within
// their bounds, those that reach the other endpoint succeed, its lease
// never lapses, leadership is never held twice, and Close returns within
// its bound.
func TestMatrixOneEndpointStalled(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	stalled := faultproxy.Start(t, etcd.Endpoint(0))
	healthy := faultproxy.Start(t, etcd.Endpoint(0))
	a, b, w := pair(t, etcd, "/one-stalled", stalled.Endpoint(), healthy.Endpoint())
	lease := heldBy(t, cli, a).lease
	stopSampling := sampleLeading(a, b)
	stalled.Stall()
	defer stalled.Heal()

	// For one and a half ttls, requests one after the other, each bounded
	// by half the ttl: the lease must outlive those that wait on the
	// stalled endpoint.
	values := []string{"v"}
	stuck := 0
	for i, end := 0, time.Now().Add(3*matrixLease/2); time.Now().Before(end); i++ {
		value := fmt.Sprint(i)
		ctx, cancel := context.WithTimeout(context.Background(), matrixLease/2)
		err := returnsWithin(t, "SetValue", matrixLease/2+promptly, func() error { return a.SetValue(ctx, value) })
		cancel()
		if err == nil {
			values = []string{value}
		} else {
			values = append(values, value)
			stuck++
		}
		if i%4 == 0 {
			values = append(values, duringFault(t, a, 300*time.Millisecond, value+", given up"))
		}
	}
	require.Zero(t, stopSampling(), "two leaders at one moment")
	t.Logf("%d requests waited on the stalled endpoint", stuck)
	require.Equal(t, lease, heldBy(t, cli, a).lease, "the lease lapsed while the other endpoint served")
	// The Register's own watch may sit on the stalled endpoint, until its
	// probe notices (README: within about 15 s): its cache is checked
	// once the endpoint is healed.
	stalled.Heal()
	checkRegistered(t, cli, a, values, w)

	stalled.Stall()
	returnsWithin(t, "Close", closeBound(matrixLease), func() struct{} { a.Close(); return struct{}{} })
	checkClosed(t, a)
	checkLeft(t, cli, a, b, []string{"v"}, w)
}

// etcd down (its process gone, connections refused) for longer than the
// ttl: reads answer at once, requests end with their context or within
// ttl, constructors fail within ttl; restarted with its data, etcd still
// holds the leases, and the Registers are in their contract state with a
// value they were given. Down again, Close ends every call in flight and
// returns within its bound.
func TestMatrixEtcdDown(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	a, b, w := pair(t, etcd, "/down")
	etcd.Stop(t, 0)

	constructorsFailed := startConstructors(etcd.Endpoints())
	tried := []string{"v", duringFault(t, a, 300*time.Millisecond, "down")}
	checkReads(t, w)
	err := returnsWithin(t, "SetValue", requestBound(matrixLease), func() error { return b.SetValue(context.Background(), "down, no ctx") })
	require.Error(t, err)
	t.Run("constructors fail within about ttl", constructorsFailed)

	etcd.Restart(t, 0)
	checkRegistered(t, cli, a, tried, w)
	checkRegistered(t, cli, b, []string{"v", "down, no ctx"}, w)

	etcd.Stop(t, 0)
	longest := context.Background()
	follower := a
	if a.AmILeader() {
		follower = b
	}
	// The calls must find etcd down, not the connection it was closing
	// (reset under a request sent at that moment).
	require.Eventually(t, func() bool {
		return follower.EtcdClient().ActiveConnection().GetState() != connectivity.Ready
	}, waitFor, time.Millisecond)
	checkCloseEnds(t, longest, follower, matrixLease, "SetValue", "WaitLeader", "WaitTerm", "Lead")
	etcd.Restart(t, 0)
	stayed := a
	if follower == a {
		stayed = b
	}
	checkLeft(t, cli, follower, stayed, append(tried, "down, no ctx"), w)
}

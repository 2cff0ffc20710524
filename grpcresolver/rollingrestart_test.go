// Rolling restarts through the resolver: servers leave one at a time, each
// in one of the ways below, and come back on a new port, while callers call
// in a closed loop; every call that fails is counted.

package grpcresolver_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/grpcresolver"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// rollsEnv, set to a number of rolls, turns TestRollingRestart into the
// measurement that README and BENCHMARKS.md quote: every way of leaving,
// that many rolls each, rollCallersMeasured callers.
const rollsEnv = "BIREGISTER_ROLLS"

const (
	// rollServers is how many servers the group has; a roll restarts each
	// of them once.
	rollServers = 4
	// rollCallers and rollCallersMeasured are how many callers call in a
	// closed loop: few under the race detector on a small machine, as
	// many as issue 21 measured with otherwise.
	rollCallers         = 8
	rollCallersMeasured = 32
	// settleCalls and settleCallsMeasured are how many calls the callers
	// make between one restart and the next, once the new server is called:
	// the time a rolling restart spends on each server, counted in calls
	// so that a slow machine makes as many.
	settleCalls         = 100
	settleCallsMeasured = 20000
	// pause is the wait between closing the Register and stopping the
	// server of the ways that take one.
	pause = 100 * time.Millisecond
)

// loss is what a way of leaving may do to the calls.
type loss int

const (
	// loseNone: every call succeeds; the test fails on the first that does not.
	loseNone loss = iota
	// loseSome: calls fail, and must, for the test to show it sees them.
	loseSome
	// measureOnly: run only in the measurement, which reports what it saw.
	measureOnly
)

// leaving is one way a server leaves the group: what it does with its
// Register and with its gRPC server, in which order. The table below
// sets every field.
type leaving struct {
	name  string
	leave func(reg biregister.Register, srv *grpc.Server)
	// rename makes each new server register under a new name instead of
	// the name of the one it replaces.
	rename bool
	want   loss
}

var leavings = []leaving{
	{name: "close-gracefulstop/same-name", leave: closeThen((*grpc.Server).GracefulStop, 0)},
	{name: "close-gracefulstop/new-name", leave: closeThen((*grpc.Server).GracefulStop, 0), rename: true},
	// Stop fails the calls in flight on the server's connections. Before
	// Close, always; after it, seldom: Close deletes the key (a graceful
	// leave) a round trip before it revokes the lease and returns, and the
	// clients have mostly let go by then.
	{name: "close-stop/same-name", leave: closeThen((*grpc.Server).Stop, 0), want: measureOnly},
	{name: "stop-close/same-name", leave: stopThenClose((*grpc.Server).Stop), want: loseSome},
	{name: "gracefulstop-close/same-name", leave: stopThenClose((*grpc.Server).GracefulStop), want: measureOnly},
	{name: "close-pause-gracefulstop/same-name", leave: closeThen((*grpc.Server).GracefulStop, pause), want: measureOnly},
	{name: "close-pause-stop/same-name", leave: closeThen((*grpc.Server).Stop, pause), want: measureOnly},
}

// closeThen closes the Register, waits for pause, and stops the server with
// stop.
func closeThen(stop func(*grpc.Server), pause time.Duration) func(biregister.Register, *grpc.Server) {
	return func(reg biregister.Register, srv *grpc.Server) {
		reg.Close()
		if pause > 0 {
			// Part of the way of leaving being measured, not a wait for a
			// condition.
			<-time.After(pause)
		}
		stop(srv)
	}
}

// stopThenClose stops the server with stop, then closes the Register.
func stopThenClose(stop func(*grpc.Server)) func(biregister.Register, *grpc.Server) {
	return func(reg biregister.Register, srv *grpc.Server) {
		stop(srv)
		reg.Close()
	}
}

// TestRollingRestart restarts each of four servers registered in the
// group in turn, five times over, while callers call them through the
// resolver with round_robin and no retry policy. A server closes its Register and then
// stops with GracefulStop, and a new one takes its place on a new port,
// under the same name or a new one: no call may fail. The same restarts
// with Stop before Close must lose calls, which shows that the test sees a
// lost call; that case ends at the first.
//
// With BIREGISTER_ROLLS=n it measures instead (README, Rolling restarts):
// every way of leaving, n rolls each, 32 callers, each restart followed by
// 20,000 calls; it logs the calls and those that failed, and still fails if
// the recipe loses a call or Stop before Close loses none.
func TestRollingRestart(t *testing.T) {
	measuredRolls := benchutil.EnvInt(rollsEnv, 0)
	for _, l := range leavings {
		r := roll{leaving: l, rolls: 5, callers: rollCallers, settle: settleCalls}
		if measuredRolls > 0 {
			r.rolls, r.callers, r.settle, r.measuring = measuredRolls, rollCallersMeasured, settleCallsMeasured, true
		} else if l.want == measureOnly {
			continue
		}
		t.Run(l.name, r.run)
	}
}

// roll is one case of TestRollingRestart, which sets every field.
type roll struct {
	leaving
	rolls, callers int
	settle         int64
	// measuring: run every roll, and log the failures of each.
	measuring bool
}

func (r roll) run(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	servers := make([]*server, rollServers)
	regs := make([]biregister.Register, rollServers)
	names := make([]string, rollServers)
	for i := range servers {
		servers[i] = startServer(t)
		names[i] = fmt.Sprintf("s%d", i)
		regs[i] = register(t, c, names[i], grpcresolver.Endpoint{Addr: servers[i].addr}.String())
	}
	cl := dial(t, c)
	cl.callUntil("every server got a call", allCalled(servers...))

	bg := startCaller(cl, r.callers)
	bg.waitCalls(r.settle)
	start := time.Now()
	restarts := 0
rolling:
	for roll := range r.rolls {
		failedBefore := bg.failures.Load()
		for i := range servers {
			r.leave(regs[i], servers[i].srv)
			restarts++
			if r.rename {
				names[i] = fmt.Sprintf("s%d-%d", i, roll+1)
			}
			servers[i] = startServer(t)
			regs[i] = register(t, c, names[i], grpcresolver.Endpoint{Addr: servers[i].addr}.String())
			poll(t, names[i]+" gets calls", allCalled(servers[i]))
			bg.waitCalls(r.settle)
			if r.want == loseSome && !r.measuring && bg.failures.Load() > 0 {
				break rolling
			}
		}
		if r.measuring {
			t.Logf("roll %d: %d calls failed", roll+1, bg.failures.Load()-failedBefore)
		}
	}
	bg.halt()
	failed, calls := bg.failures.Load(), bg.calls.Load()
	t.Logf("%s: %d restarts in %v, %d of %d calls failed (%d callers); the first failure: %v",
		r.name, restarts, time.Since(start).Round(time.Millisecond), failed, calls, r.callers, bg.firstErr.Load())
	switch {
	case r.want == loseNone && failed > 0:
		t.Errorf("%d of %d calls failed; the first: %v", failed, calls, bg.firstErr.Load())
	case r.want == loseSome && failed == 0:
		t.Errorf("no call of %d failed in %d restarts: the test does not see lost calls", calls, restarts)
	}
}

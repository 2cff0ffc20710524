package biregister_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister"
)

// pauseChildEnv hands the child process of TestTermErrAfterPause the etcd
// endpoints it registers with.
const pauseChildEnv = "BIREGISTER_PAUSED_CHILD_ENDPOINTS"

// pauseGap is a gap between two calls that only a pause explains: the child
// makes its calls back to back.
const pauseGap = time.Second

// A process paused (SIGSTOP) past its lease deadline, until etcd has let its
// lease go: on resume, the very first call of its term's Err returns the end
// of the term, and AmILeader is false, whatever its timers have done yet.
// The process is a child: this test binary, running TestPausedLeaderChild.
func TestTermErrAfterPause(t *testing.T) {
	etcd := startEtcd(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestPausedLeaderChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), pauseChildEnv+"="+strings.Join(etcd.Endpoints(), ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-exited
	})
	lines := make(chan string)
	stopReading := make(chan struct{})
	t.Cleanup(func() { close(stopReading) })
	go func() {
		defer close(lines)
		scan := bufio.NewScanner(out)
		for scan.Scan() {
			select {
			case lines <- scan.Text():
			case <-stopReading:
				return
			}
		}
	}()
	expect := func(prefix string) string {
		t.Helper()
		deadline := time.After(waitFor)
		for {
			select {
			case line, ok := <-lines:
				require.True(t, ok, "the child ended without %q", prefix)
				if strings.HasPrefix(line, prefix) {
					return strings.TrimPrefix(line, prefix)
				}
			case <-deadline:
				t.Fatalf("the child printed no %q in time", prefix)
			}
		}
	}
	key := expect("LEADING ")

	require.NoError(t, cmd.Process.Signal(syscall.SIGSTOP))
	cli := etcd.Client(t)
	require.Eventually(t, func() bool {
		resp, err := cli.Get(context.Background(), key)
		return err == nil && len(resp.Kvs) == 0
	}, waitFor, 10*time.Millisecond, "etcd did not let the paused leader's lease go")
	require.NoError(t, cmd.Process.Signal(syscall.SIGCONT))

	result := expect("AFTER PAUSE ")
	t.Logf("the child's first calls after the pause: %s", result)
	require.Equal(t, "err=context canceled cause=biregister: lease deadline passed leader=false", result)
}

// TestPausedLeaderChild is the paused process of TestTermErrAfterPause, and
// runs only as its child.
func TestPausedLeaderChild(t *testing.T) {
	endpoints := os.Getenv(pauseChildEnv)
	if endpoints == "" {
		t.Skip("the child of TestTermErrAfterPause")
	}
	r, err := biregister.NewRegister(strings.Split(endpoints, ","), "/paused", "child", "v", faultTTL)
	require.NoError(t, err)
	defer r.Close()
	term := waitTerm(t, r)
	// Back to back, so that a gap between two calls means a pause. The call
	// that counts is the first that starts after it; one that the pause
	// interrupted started before and may answer for then. On one P, this
	// goroutine, running when the process stops, goes on when it resumes,
	// before the scheduler runs any timer: the term must end by itself. It
	// yields now and then, so that the keepalives go on until the pause.
	// All is set before the parent learns it may pause.
	runtime.GOMAXPROCS(1)
	previous, paused, yielded := time.Now(), false, time.Now()
	fmt.Println("LEADING", r.MyKey())
	for {
		if time.Since(yielded) > 2*time.Millisecond {
			runtime.Gosched()
			yielded = time.Now()
		}
		start := time.Now()
		err := term.Err()
		end := time.Now()
		switch {
		case paused || start.Sub(previous) > pauseGap:
			fmt.Printf("AFTER PAUSE err=%v cause=%v leader=%v\n", err, context.Cause(term), r.AmILeader())
			return
		case end.Sub(start) > pauseGap:
			paused = true
		case err != nil:
			fmt.Printf("AFTER PAUSE the term ended before the pause: %v\n", context.Cause(term))
			return
		}
		previous = end
	}
}

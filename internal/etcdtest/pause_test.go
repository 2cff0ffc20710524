package etcdtest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
)

// A paused member answers nothing while its connections stay open; the
// others go on as a quorum; resumed, it answers again with what they wrote
// meanwhile; paused again, Stop kills it without letting it run: its log
// ends where it was paused, with no word of a shutdown.
func TestPause(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	RequireProcesses(t)
	c := Start(t, 3)
	frozen := clientFor(t, c.Endpoint(0))
	mustPut(t, frozen, "k", "before")

	c.Pause(t, 0)
	c.Pause(t, 0) // a no-op
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := frozen.Get(ctx, "k")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get from a paused member: %v, want it to go unanswered", err)
	}
	if n := c.Front(0).Conns(); n == 0 {
		t.Fatal("the paused member's connections were closed")
	}
	rest := clientFor(t, c.Endpoint(1), c.Endpoint(2))
	// The first write may wait for the others to elect a leader.
	mustPut(t, rest, "k", "while paused")

	c.Resume(t, 0)
	c.Resume(t, 0) // a no-op
	waitUntil(t, "the resumed member to answer with the others' write", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := frozen.Get(ctx, "k")
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "while paused"
	})

	m := c.members[0]
	p := m.srv.(*process)
	c.Pause(t, 0)
	before, err := os.ReadFile(m.log)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(t, 0)
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("a paused member stopped with %v, want it killed", p.err)
	}
	if after, err := os.ReadFile(m.log); err != nil || len(after) != len(before) {
		t.Fatalf("a paused member ran before it was stopped: its log grew from %d to %d bytes (%v)", len(before), len(after), err)
	}
	c.Restart(t, 0)
	wantValue(t, mustGet(t, frozen, "k"), "while paused")
}

package main

import (
	"context"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// TestRun runs the service until it has registered and found itself the
// leader, then stops it the way SIGINT does.
func TestRun(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := new(syncbuf.Buffer)
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = run(ctx, []string{"-name", "test", "-addr", "127.0.0.1:9999"}, out)
	}()
	// Whatever happens below, run ends before the leak check.
	t.Cleanup(func() {
		cancel()
		<-done
	})

	deadline := time.After(30 * time.Second)
	if missing := out.WaitFor(deadline, "op=PUT name=test value=127.0.0.1:9999", "leader: doing leader-only work"); missing != "" {
		t.Fatalf("output lacks %q:\n%s", missing, out)
	}
	cancel()
	select {
	case <-done:
	case <-deadline:
		t.Fatalf("run did not return after cancel; output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("run: %v; output:\n%s", err, out)
	}
	if missing := out.WaitFor(deadline, "msg=closed"); missing != "" {
		t.Fatalf("output lacks %q:\n%s", missing, out)
	}
}

package main

import (
	"context"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// TestRun runs the program until its leader has written two ticks under its
// term, then stops it the way SIGINT does: the term ends, with its cause,
// and run returns.
func TestRun(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := new(syncbuf.Buffer)
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = run(ctx, []string{"-name", "test", "-every", "50ms"}, out)
	}()
	// Whatever happens below, run ends before the leak check.
	t.Cleanup(func() {
		cancel()
		<-done
	})

	deadline := time.After(30 * time.Second)
	if missing := out.WaitFor(deadline, "msg=\"term began\"", "msg=\"tick written\" ticks=2"); missing != "" {
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
	if missing := out.WaitFor(deadline, "msg=\"term ended\"", "cause=\"context canceled\""); missing != "" {
		t.Fatalf("output lacks %q:\n%s", missing, out)
	}
}

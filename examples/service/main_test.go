package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
)

// TestRun runs the service until it has registered and found itself the
// leader, then stops it the way SIGINT does.
func TestRun(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := newOutput()
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
	out.waitFor(t, deadline, "op=PUT name=test value=127.0.0.1:9999", "leader: doing leader-only work")
	cancel()
	select {
	case <-done:
	case <-deadline:
		t.Fatalf("run did not return after cancel; output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("run: %v; output:\n%s", err, out)
	}
	out.waitFor(t, deadline, "msg=closed")
}

// output collects what run writes, from any goroutine, and lets the test
// wait for a line without polling.
type output struct {
	mu      sync.Mutex
	text    strings.Builder
	written chan struct{} // closed by the next Write
}

func newOutput() *output {
	return &output{written: make(chan struct{})}
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	close(o.written)
	o.written = make(chan struct{})
	return o.text.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.text.String()
}

// waitFor waits until every string in want has been written, and fails t
// if that has not happened by the deadline.
func (o *output) waitFor(t *testing.T, deadline <-chan time.Time, want ...string) {
	t.Helper()
	for {
		o.mu.Lock()
		text, written := o.text.String(), o.written
		o.mu.Unlock()
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		select {
		case <-written:
		case <-deadline:
			t.Fatalf("output lacks %q:\n%s", missing, text)
		}
	}
}

// Package exampletest runs an example program's run function as its main
// does, and stops it as SIGINT does.
package exampletest

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// Run calls run with args until its output holds every string of started,
// then cancels its context and requires run to return nil with an output
// that then holds every string of ended too, all within 30 s. Whatever
// fails, run has returned before t's leak check, which Run starts.
func Run(t *testing.T, run func(ctx context.Context, args []string, stdout io.Writer) error, args, started, ended []string) {
	t.Helper()
	leakcheck.VerifyNoLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := new(syncbuf.Buffer)
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = run(ctx, args, out)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	end := time.Now().Add(30 * time.Second)
	// The output is waited for until the end, or until run returns early:
	// then its error says why the story stopped.
	waiting := make(chan time.Time)
	go func() {
		defer close(waiting)
		select {
		case <-time.After(time.Until(end)):
		case <-done:
		}
	}()
	if missing := out.WaitFor(waiting, started...); missing != "" {
		select {
		case <-done:
			t.Fatalf("run returned (%v) before its output had %q:\n%s", err, missing, out)
		default:
		}
		t.Fatalf("output lacks %q:\n%s", missing, out)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Until(end)):
		t.Fatalf("run did not return after cancel; output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("run: %v; output:\n%s", err, out)
	}
	// run has returned: its output is all there is.
	for _, want := range ended {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

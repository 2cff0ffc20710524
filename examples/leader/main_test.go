package main

import (
	"testing"

	"github.com/biregister/biregister/internal/exampletest"
)

// TestRun runs the program until its leader has written two ticks under its
// term, then stops it the way SIGINT does: the term ends, with its cause,
// and run returns.
func TestRun(t *testing.T) {
	exampletest.Run(t, run, []string{"-name", "test", "-every", "50ms"},
		[]string{`msg="term began"`, `msg="tick written" ticks=2`},
		[]string{`msg="term ended"`, `cause="context canceled"`})
}

package main

import (
	"testing"

	"github.com/biregister/biregister/internal/exampletest"
)

// TestRun runs the service until it has registered and found itself the
// leader, then stops it the way SIGINT does.
func TestRun(t *testing.T) {
	exampletest.Run(t, run, []string{"-name", "test", "-addr", "127.0.0.1:9999"},
		[]string{"op=PUT name=test value=127.0.0.1:9999", "leader: doing leader-only work"},
		[]string{"msg=closed"})
}

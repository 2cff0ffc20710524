package biregister

import (
	"testing"
	"time"

	"github.com/biregister/biregister/internal/leakcheck"
)

// Retries wait 50 ms, doubling up to 1 s, each wait jittered within the
// upper half of its step; a success starts over.
func TestBackoff(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	var b backoff
	for round := range 2 {
		step := 50 * time.Millisecond
		for i := range 8 {
			got := b.next()
			if got < step/2 || got > step {
				t.Fatalf("round %d, retry %d: waited %v, want within [%v, %v]", round, i, got, step/2, step)
			}
			step = min(2*step, time.Second)
		}
		b.reset()
	}
}

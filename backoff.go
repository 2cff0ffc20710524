// Retrying a failing etcd operation: how long to wait between attempts.

package biregister

import (
	"context"
	"math/rand/v2"
	"time"
)

const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = time.Second
)

// backoff spaces out the retries of a failing etcd operation: it doubles from
// minRetryDelay up to maxRetryDelay, with jitter so that a fleet that lost etcd
// at the same moment does not come back in lockstep. The cap is low because
// recovery must follow within about a second of etcd coming back.
type backoff struct{ delay time.Duration }

// next returns how long to wait before the next attempt.
func (b *backoff) next() time.Duration {
	b.delay = min(max(2*b.delay, minRetryDelay), maxRetryDelay)
	return b.delay/2 + rand.N(b.delay/2+1)
}

// reset starts over after a success.
func (b *backoff) reset() { b.delay = 0 }

// sleep waits for d, or returns false once ctx ends.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

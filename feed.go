// How a loop tells other goroutines that something changed, without ever
// blocking on them: the bounded feed of Changes, and the signal.

package biregister

import "sync/atomic"

// feed delivers changes to the user's channel without ever blocking the
// goroutine that owns the cache. When the channel is full it drops changes and
// owes the consumer one OpResync, which the owner sends from its select loop
// (see pending) as soon as there is room. Only the owner calls its methods.
type feed struct {
	ch        chan Change
	overflown bool
}

func newFeed(size int) *feed {
	return &feed{ch: make(chan Change, size)}
}

// push delivers c, or records that the consumer must resync.
func (f *feed) push(c Change) {
	if f.overflown {
		return
	}
	select {
	case f.ch <- c:
	default:
		f.overflown = true
	}
}

// pending returns the channel to send the owed OpResync on, or nil (a select
// case that never fires) when nothing is owed.
func (f *feed) pending() chan<- Change {
	if f.overflown {
		return f.ch
	}
	return nil
}

// resynced records that the owed OpResync was delivered.
func (f *feed) resynced() { f.overflown = false }

// signal wakes every goroutine waiting for the next change of some state,
// without a lock held while they wait. Any goroutine may wait or notify.
type signal struct {
	ch *atomic.Pointer[chan struct{}]
}

func newSignal() signal {
	s := signal{ch: new(atomic.Pointer[chan struct{}])}
	ch := make(chan struct{})
	s.ch.Store(&ch)
	return s
}

// wait returns a channel closed at the next notify.
func (s signal) wait() <-chan struct{} { return *s.ch.Load() }

func (s signal) notify() {
	ch := make(chan struct{})
	close(*s.ch.Swap(&ch))
}

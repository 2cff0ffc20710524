// How a loop tells other goroutines that something changed, without ever
// blocking on them: the bounded feed of Changes, and the signal.

package biregister

import (
	"runtime"
	"sync/atomic"
)

// feedSlots is the capacity of the Changes channel itself: what a consumer
// that keeps up needs. A feed allocates room for more only while its
// consumer falls behind, up to the buffer size.
const feedSlots = 64

// feedQueueBytes bounds the names and values the queue behind the channel
// holds, whatever the buffer size: a buffer of 10,000 changes of 1.5 MiB
// values would be 15 GB. Beyond it, as beyond the buffer size, the feed
// owes a RESYNC.
const feedQueueBytes = 64 << 20

// changeOverhead is about what a queued Change costs beyond its strings.
const changeOverhead = 64

// feedPatience bounds how often the owner yields for its consumer to make
// room (see sent).
const feedPatience = 16

// feed delivers changes to the user's channel without ever blocking the
// goroutine that owns the cache. Changes that do not fit in the channel
// wait in a queue, which grows only while the consumer is behind and is let
// go once it caught up; the channel and the queue together hold at most the
// buffer size (WithBufferSize). Beyond that the feed drops changes and owes
// the consumer one OpResync, delivered after the queue. The owner moves the
// queue into the channel from its select loop (see pending) as the consumer
// makes room. Only the owner calls its methods.
type feed struct {
	ch        chan Change
	queue     []Change // changes waiting for room in ch, oldest at queue[head]
	head      int
	size      int  // the most changes ch and queue hold together
	bytes     int  // what the queue's changes hold, by changeBytes; at most feedQueueBytes
	overflown bool // changes were dropped: an OpResync is owed after the queue
	// resyncs counts the OpResync changes delivered; any goroutine may read
	// it (Status).
	resyncs atomic.Int64
}

func newFeed(size int) *feed {
	return &feed{ch: make(chan Change, min(size, feedSlots)), size: size}
}

// push delivers c or queues it, and reports true; or it records that the
// consumer must resync, and reports false.
func (f *feed) push(c Change) bool {
	if f.overflown {
		return false
	}
	if f.head == len(f.queue) {
		select {
		case f.ch <- c:
			return true
		default:
		}
	}
	if f.room() <= 0 || f.bytes+changeBytes(c) > feedQueueBytes {
		f.overflown = true
		return false
	}
	if len(f.queue) == cap(f.queue) && f.head > 0 {
		// Reuse the room of the changes already sent before growing.
		n := copy(f.queue, f.queue[f.head:])
		clear(f.queue[n:])
		f.queue, f.head = f.queue[:n], 0
	}
	f.queue = append(f.queue, c)
	f.bytes += changeBytes(c)
	return true
}

// changeBytes is about what c holds in memory.
func changeBytes(c Change) int { return len(c.Name) + len(c.Value) + changeOverhead }

// room returns how many more changes the feed takes before it overflows.
func (f *feed) room() int {
	if f.overflown {
		return 0
	}
	return f.size - (len(f.ch) + len(f.queue) - f.head)
}

// overflow records that changes were left out: the consumer must resync.
func (f *feed) overflow() { f.overflown = true }

// pending returns the channel to send next's change on, or nil (a select
// case that never fires) when nothing waits.
func (f *feed) pending() chan<- Change {
	if f.head < len(f.queue) || f.overflown {
		return f.ch
	}
	return nil
}

// next returns the change that waits first: the oldest queued, or else the
// owed OpResync, at revision.
func (f *feed) next(revision int64) Change {
	if f.head < len(f.queue) {
		return f.queue[f.head]
	}
	return Change{Op: OpResync, Revision: revision}
}

// sent records that next's change was delivered, and refills the channel.
// The owner's select wakes it for a single free slot, while the consumer
// is reading: refilled there and then, the channel would wake the owner
// once per change (a burst of 20,000 changes took twice as long). So it
// first yields, at most feedPatience times, until the consumer freed half
// the channel.
func (f *feed) sent(revision int64) {
	f.pop()
	if f.pending() == nil {
		return // nothing waits: no reason to yield
	}
	for range feedPatience {
		if len(f.ch) <= cap(f.ch)/2 {
			break
		}
		runtime.Gosched()
	}
	for {
		select {
		case f.pending() <- f.next(revision):
			f.pop()
		default:
			return
		}
	}
}

// pop records that next's change was delivered.
func (f *feed) pop() {
	if f.head == len(f.queue) {
		f.overflown = false // it was the owed OpResync
		f.resyncs.Add(1)
		return
	}
	f.bytes -= changeBytes(f.queue[f.head])
	f.queue[f.head] = Change{} // its strings are the consumer's now
	if f.head++; f.head == len(f.queue) {
		// Caught up: let the queue's memory go.
		f.queue, f.head = nil, 0
	}
}

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

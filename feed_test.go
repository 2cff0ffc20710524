package biregister

import (
	"fmt"
	"testing"

	"github.com/biregister/biregister/internal/leakcheck"
)

// A feed whose consumer falls behind queues beyond its channel, in order, up
// to the buffer size in all; the changes beyond are replaced by one RESYNC
// after the queue; and a consumer that caught up leaves no queue behind.
func TestFeedQueuesInOrderWithinTheBufferSize(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	const size, pushed = 3*feedSlots + 5, 5 * feedSlots
	f := newFeed(size)
	if cap(f.ch) != feedSlots {
		t.Fatalf("channel of %d slots, want %d", cap(f.ch), feedSlots)
	}
	for i := range pushed {
		f.push(Change{Name: fmt.Sprint(i)})
		if held := len(f.ch) + len(f.queue) - f.head; held > size {
			t.Fatalf("after %d pushes the feed holds %d changes, more than its size %d", i+1, held, size)
		}
	}
	const revision = 42
	var got []Change
	receive := func() {
		for len(f.ch) > 0 {
			got = append(got, <-f.ch)
		}
	}
	for i := 0; f.pending() != nil; i++ {
		if i > size {
			t.Fatal("the feed never stops delivering")
		}
		receive()
		// What the owner's select loop does once the consumer made room.
		f.pending() <- f.next(revision)
		f.sent(revision)
	}
	receive()
	if len(got) != size+1 {
		t.Fatalf("received %d changes, want the %d that fit and one RESYNC", len(got), size)
	}
	for i, c := range got[:size] {
		if c.Name != fmt.Sprint(i) {
			t.Fatalf("change %d is %q: out of order", i, c.Name)
		}
	}
	if last := got[size]; last.Op != OpResync || last.Revision != revision {
		t.Fatalf("last change %+v, want a RESYNC at revision %d", last, revision)
	}
	if f.queue != nil {
		t.Fatalf("a consumer that caught up left a queue of %d changes' room", cap(f.queue))
	}
	f.push(Change{Name: "after"})
	if c := <-f.ch; c.Name != "after" {
		t.Fatalf("after the RESYNC got %+v, want the next change", c)
	}
}

// A change pushed while older ones wait in the queue goes behind them, even
// when the consumer just made room in the channel.
func TestFeedKeepsOrderWhenTheConsumerMakesRoom(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	f := newFeed(4 * feedSlots)
	for i := range 2 * feedSlots {
		f.push(Change{Name: fmt.Sprint(i)})
	}
	var got []string
	for range 10 {
		got = append(got, (<-f.ch).Name)
	}
	f.push(Change{Name: "late"})
	for i := 0; f.pending() != nil; i++ {
		if i > 4*feedSlots {
			t.Fatal("the feed never stops delivering")
		}
		for len(f.ch) > 0 {
			got = append(got, (<-f.ch).Name)
		}
		f.pending() <- f.next(0)
		f.sent(0)
	}
	for len(f.ch) > 0 {
		got = append(got, (<-f.ch).Name)
	}
	for i, name := range got[:2*feedSlots] {
		if name != fmt.Sprint(i) {
			t.Fatalf("change %d is %q: out of order", i, name)
		}
	}
	if len(got) != 2*feedSlots+1 || got[2*feedSlots] != "late" {
		t.Fatalf("got %d changes ending %q, want the late one last", len(got), got[len(got)-1])
	}
}

// The queue behind the channel holds at most feedQueueBytes of names and
// values, whatever the buffer size: beyond, the feed owes a RESYNC, and a
// consumer that catches up gets the room back.
func TestFeedBoundedInBytes(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	f := newFeed(DefaultBufferSize)
	big := string(make([]byte, 1<<20))
	for range feedSlots { // the channel's own slots
		f.push(Change{Name: "a", Value: big})
	}
	queued := 0
	for f.push(Change{Name: "a", Value: big}) {
		queued++
		if f.bytes > feedQueueBytes {
			t.Fatalf("the queue holds %d bytes, more than %d", f.bytes, feedQueueBytes)
		}
	}
	if want := feedQueueBytes / changeBytes(Change{Name: "a", Value: big}); queued != want {
		t.Fatalf("%d changes of 1 MiB queued, want %d", queued, want)
	}
	for f.pending() != nil {
		for len(f.ch) > 0 {
			<-f.ch
		}
		f.pending() <- f.next(1)
		f.sent(1)
	}
	if f.bytes != 0 || f.queue != nil {
		t.Fatalf("a consumer that caught up leaves %d bytes queued", f.bytes)
	}
}

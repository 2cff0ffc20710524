// Benchmark 5, scale, leader change: from the oldest member of a big group
// deleted to a Watcher naming the next one, against a raw watch seeing a
// DELETE (the leader-change/* sub-benchmarks of BenchmarkScale).

package biregister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// leaderChangeBiregister times "the oldest member deleted → the cache shows
// the next one as leader"; between two such changes, the deleted member is
// written again, at the back of the queue.
func leaderChangeBiregister(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup) {
	w, err := biregister.NewWatcher(nil, g.prefix, 600, biregister.WithClient(reader))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	go func() {
		for range w.Changes() {
		}
	}()
	probeWatcher(b, writer, w, g.prefix)
	settle(b, eps, nil)
	timeDeletes(b, writer, func(ctx context.Context, _ int) deleteStep {
		// The change is done once the cache names a leader other than the
		// deleted one; the check after makes sure it is the oldest left.
		old, _ := w.GetLeader()
		want := w.GetNames()[1]
		done, errs := make(chan time.Time, 1), make(chan error, 1)
		go func() {
			if err := awaitCache(w, func() bool { l, _ := w.GetLeader(); return l != old && l != "" }); err != nil {
				errs <- err
				return
			}
			done <- time.Now()
		}()
		return deleteStep{key: g.prefix + old, done: done, errs: errs, after: func() {
			if l, _ := w.GetLeader(); l != want || len(w.GetNames()) != len(g.keys)-1 {
				b.Fatalf("after deleting %q: leader %q (want %q), %d members (want %d)", old, l, want, len(w.GetNames()), len(g.keys)-1)
			}
			// Back at the end of the queue.
			v := fmt.Sprintf("back %d", time.Now().UnixNano())
			if _, err := writer.Put(ctx, g.prefix+old, v); err != nil {
				b.Fatal(err)
			}
			if err := awaitCache(w, func() bool { return w.GetValueByName(old) == v }); err != nil {
				b.Fatal(err)
			}
		}}
	})
}

// leaderChangeRawWatch times a member deleted → a raw watch of the group
// sees the DELETE; the member is written again after each.
func leaderChangeRawWatch(b *testing.B, writer, reader *clientv3.Client, g *scaleGroup) {
	wch, wcancel := openWatch(b, reader, g.prefix)
	defer wcancel()
	// The raw watch does not know the order; any member will do as "the
	// oldest": the event etcd sends for its DELETE is the same.
	timeDeletes(b, writer, func(ctx context.Context, i int) deleteStep {
		key := g.keys[i%len(g.keys)]
		done, errs := watchDelete(wch, key)
		return deleteStep{key: key, done: done, errs: errs, after: func() {
			if _, err := writer.Put(ctx, key, fmt.Sprintf("back %d", i)); err != nil {
				b.Fatal(err)
			}
		}}
	})
}

// deleteStep is one delete of a leader-change benchmark, readied: key is
// deleted, done yields when the deletion has been seen (or errs, if it
// cannot be), and after runs then (untimed).
type deleteStep struct {
	key   string
	done  <-chan time.Time
	errs  <-chan error
	after func()
}

// timeDeletes makes b.N deletes, each readied by next (untimed), and reports
// how long each took to be seen, from just before the Delete. Each comes
// after the quiet gap; the timer runs only from the Delete until it was seen.
func timeDeletes(b *testing.B, writer *clientv3.Client, next func(ctx context.Context, i int) deleteStep) {
	ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
	defer cancel()
	var lat benchutil.Latencies
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		step := next(ctx, i)
		time.Sleep(quietGap)
		b.StartTimer()
		start := time.Now()
		resp, err := writer.Delete(ctx, step.key)
		if err != nil {
			b.Fatal(err)
		}
		end := awaitTime(b, step.done, step.errs)
		b.StopTimer()
		if resp.Deleted != 1 {
			b.Fatalf("%q was not in etcd", step.key)
		}
		lat.Add(end.Sub(start))
		step.after()
	}
	lat.Report(b, "")
}

// BENCHMARKS.md section 10, a transaction that creates many members: from a
// raw watch's receipt of it to a Watcher's cache holding every one of its
// keys, both watching the same big group in the same run, on the embedded
// etcd and, with BIREGISTER_ETCD_BIN, on that etcd binary too
// (BenchmarkTxnCreates).
//
//	BIREGISTER_ETCD_BIN=/usr/bin/etcd go test -run '^$' -bench BenchmarkTxnCreates -benchtime 20x -timeout 30m .
//
// The keys of one transaction share a create revision, and come in the
// transaction's order, not necessarily in name order, which is the order
// index's.

package biregister_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

func BenchmarkTxnCreates(b *testing.B) {
	servers := benchutil.Servers(b)
	envOnce.Do(func() { logEnvironment(b, []string{servers[0].Endpoint}) })
	for _, n := range benchutil.Sizes(100000) {
		for _, srv := range servers {
			prefix := fmt.Sprintf("/bench/txn/%d/", n)
			benchutil.FillGroup(b, srv.Client, prefix, n)
			sides := newTxnSides(b, []string{srv.Endpoint}, srv.Client, prefix)
			for _, keys := range []int{100, 200} {
				for _, order := range []string{"descending", "random", "ascending"} {
					b.Run(fmt.Sprintf("server=%s/members=%d/keys=%d/%s", srv.Name, n, keys, order), func(b *testing.B) {
						var raw, cache, lag benchutil.Latencies
						for i := 0; i < b.N; i++ {
							names := txnNames(keys, order)
							rawAt, cacheAt, start := sides.create(b, names)
							raw.Add(rawAt.Sub(start))
							cache.Add(cacheAt.Sub(start))
							lag.Add(cacheAt.Sub(rawAt))
							b.StopTimer()
							sides.remove(b, names)
							b.StartTimer()
						}
						raw.Report(b, "raw")
						cache.Report(b, "cache")
						lag.Report(b, "cache-after-raw")
					})
				}
			}
			sides.close()
		}
	}
}

// txnSerial numbers the transactions, so that none creates a name another
// one made.
var txnSerial int

// txnNames returns the names of k new members, in the order one
// transaction creates them.
func txnNames(k int, order string) []string {
	txnSerial++
	names := make([]string, k)
	for i := range names {
		names[i] = fmt.Sprintf("t%05d-%03d", txnSerial, i)
	}
	switch order {
	case "descending":
		slices.Reverse(names)
	case "random":
		rand.Shuffle(k, func(i, j int) { names[i], names[j] = names[j], names[i] })
	}
	return names
}

// txnSides are a Watcher and a raw watch of one group, each on a client of
// its own, and the writer's client. newTxnSides sets every field; nothing
// changes them after.
type txnSides struct {
	prefix string
	writer *clientv3.Client
	w      biregister.Watcher
	wch    clientv3.WatchChan
	close  func()
}

func newTxnSides(b *testing.B, eps []string, writer *clientv3.Client, prefix string) *txnSides {
	w, err := biregister.NewWatcher(nil, prefix, 600, biregister.WithClient(benchClient(b, eps)))
	if err != nil {
		b.Fatal(err)
	}
	drained := make(chan struct{})
	go func() { // a Watcher's user takes its changes
		defer close(drained)
		for range w.Changes() {
		}
	}()
	wch, cancel := openWatch(b, benchClient(b, eps), prefix)
	s := &txnSides{prefix: prefix, writer: writer, w: w, wch: wch, close: func() {
		cancel()
		w.Close()
		<-drained
	}}
	probeWatcher(b, writer, w, prefix) // its events wait for the raw watch's first reader, who skips them
	settle(b, eps, nil)
	return s
}

// create commits one transaction that creates names, and returns when the
// raw watch received it, when the Watcher's cache held all of names, and
// when the transaction was sent.
func (s *txnSides) create(b *testing.B, names []string) (rawAt, cacheAt, start time.Time) {
	ops := make([]clientv3.Op, len(names))
	for i, name := range names {
		ops[i] = clientv3.OpPut(s.prefix+name, "10.0.0.1:8080")
	}
	rawDone := s.awaitRaw(names, mvccpb.PUT)
	cacheDone := make(chan time.Time, 1)
	go func() {
		if err := awaitCache(s.w, func() bool { return s.held(names) == len(names) }); err == nil {
			cacheDone <- time.Now()
		}
	}()
	ctx, cancel := ctxWait()
	defer cancel()
	start = time.Now()
	if _, err := s.writer.Txn(ctx).Then(nested(ops)...).Commit(); err != nil {
		b.Fatal(err)
	}
	return awaitTime(b, rawDone, nil), awaitTime(b, cacheDone, nil), start
}

// nested returns ops as the operations of one transaction: themselves, or,
// beyond the 128 operations etcd takes in a transaction by default
// (--max-txn-ops), transactions of 100 of them, which etcd runs in order at
// one revision.
func nested(ops []clientv3.Op) []clientv3.Op {
	if len(ops) <= 128 {
		return ops
	}
	var txns []clientv3.Op
	for chunk := range slices.Chunk(ops, 100) {
		txns = append(txns, clientv3.OpTxn(nil, chunk, nil))
	}
	return txns
}

// held returns how many of names the Watcher's cache holds.
func (s *txnSides) held(names []string) int {
	n := 0
	for _, name := range names {
		if s.w.GetValueByName(name) != "" {
			n++
		}
	}
	return n
}

// remove deletes names and waits until both sides saw it: the group is as
// before.
func (s *txnSides) remove(b *testing.B, names []string) {
	ctx, cancel := ctxWait()
	defer cancel()
	ops := make([]clientv3.Op, len(names))
	for i, name := range names {
		ops[i] = clientv3.OpDelete(s.prefix + name)
	}
	rawDone := s.awaitRaw(names, mvccpb.DELETE)
	if _, err := s.writer.Txn(ctx).Then(nested(ops)...).Commit(); err != nil {
		b.Fatal(err)
	}
	awaitTime(b, rawDone, nil)
	if err := awaitCache(s.w, func() bool { return s.held(names) == 0 }); err != nil {
		b.Fatal(err)
	}
}

// awaitRaw returns a channel that yields when the raw watch has received
// an event of type typ for every one of names.
func (s *txnSides) awaitRaw(names []string, typ mvccpb.Event_EventType) <-chan time.Time {
	left := make(map[string]bool, len(names))
	for _, name := range names {
		left[s.prefix+name] = true
	}
	done := make(chan time.Time, 1)
	go func() {
		for resp := range s.wch {
			for _, ev := range resp.Events {
				if ev.Type == typ {
					delete(left, string(ev.Kv.Key))
				}
			}
			if len(left) == 0 {
				done <- time.Now()
				return
			}
		}
	}()
	return done
}

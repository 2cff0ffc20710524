// Benchmark 7, terms of leadership: how soon a leader's term ends once its
// key is deleted from outside, beside a raw clientv3.Watch of that key — the
// floor, the moment etcd's news can reach any client (BenchmarkTermEnd).

package biregister_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// BenchmarkTermEnd deletes the key of a leading Register from outside, one
// op a deletion, and times, from the Delete, how long its term takes to end
// and how long a raw watch of the key takes to see the DELETE: both
// measure the same deletion. The Register registers again by itself
// between ops, and a new term begins.
func BenchmarkTermEnd(b *testing.B) {
	eps := startBenchEtcd(b)
	cli := benchClient(b, eps)
	reg, err := biregister.NewRegister(nil, uniquePrefix("term"), "leader", "v", benchTTL, biregister.WithClient(cli))
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	var termEnd, rawWatch benchutil.Latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ctx, cancel := ctxWait()
		term, err := reg.WaitTerm(ctx)
		cancel()
		if err != nil {
			b.Fatalf("no term: %v", err)
		}
		watchCtx, stopWatch := context.WithCancel(context.Background())
		events := cli.Watch(watchCtx, reg.MyKey(), clientv3.WithRev(term.Revision()+1), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
		if resp := <-events; !resp.Created {
			b.Fatalf("raw watch not created: %v", resp.Err())
		}
		b.StartTimer()

		ended := make(chan time.Time, 1)
		go func() {
			<-term.Done()
			ended <- time.Now()
		}()
		deleted := time.Now()
		if _, err := cli.Delete(context.Background(), reg.MyKey()); err != nil {
			b.Fatal(err)
		}
		for seen := false; !seen; {
			select {
			case resp := <-events:
				if len(resp.Events) > 0 {
					rawWatch.Add(time.Since(deleted))
					seen = true
				}
			case <-time.After(benchWait):
				b.Fatal("the raw watch did not see the deletion")
			}
		}
		select {
		case at := <-ended:
			termEnd.Add(at.Sub(deleted))
		case <-time.After(benchWait):
			b.Fatal("the term did not end")
		}
		stopWatch()
	}
	b.StopTimer()
	termEnd.Report(b, "term-end")
	rawWatch.Report(b, "raw-watch")
}

// BENCHMARKS.md section 8: what an idle Watcher or Register whose
// consumer keeps up holds in this process's heap, beyond its cache (a group
// of its own: the cache holds itself, or nothing). On the embedded etcd the
// server's share of each watch is in the same heap; with
// BIREGISTER_ETCD_BIN an etcd process serves too, and the figure on it is
// the library's and the client's alone:
//
//	BIREGISTER_ETCD_BIN=/usr/bin/etcd go test -run '^$' -bench BenchmarkFixedCost -benchtime 3x .

package biregister_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// fixedCostInstances is how many instances one measurement averages over.
const fixedCostInstances = 100

func BenchmarkFixedCost(b *testing.B) {
	for _, srv := range benchutil.Servers(b) {
		for _, kind := range []string{"Watcher", "Register"} {
			b.Run(fmt.Sprintf("server=%s/%s", srv.Name, kind), func(b *testing.B) {
				var total float64
				for i := 0; i < b.N; i++ {
					before := float64(benchutil.LiveHeap())
					var all []biregister.Watcher
					for j := range fixedCostInstances {
						prefix := uniquePrefix("fixed-cost")
						var w biregister.Watcher
						var err error
						if kind == "Register" {
							w, err = biregister.NewRegister(nil, prefix, fmt.Sprint("m", j), endpointAddr(j), benchTTL, biregister.WithClient(srv.Client))
						} else {
							w, err = biregister.NewWatcher(nil, prefix, benchTTL, biregister.WithClient(srv.Client))
						}
						if err != nil {
							b.Fatal(err)
						}
						// A consumer that keeps up.
						go func() {
							for range w.Changes() {
							}
						}()
						all = append(all, w)
					}
					// Idle: every watch created, every change consumed.
					time.Sleep(time.Second)
					total += float64(benchutil.LiveHeap()) - before
					for _, w := range all {
						w.Close()
					}
				}
				b.ReportMetric(total/float64(b.N)/fixedCostInstances/1024, "heap-KiB/inst")
			})
		}
	}
}

// BENCHMARKS.md section 15: biregister groups on a root of 10,000 groups of
// 10 members against one unpaginated Get of the root, with values and keys
// only, turn by turn in one run, on the embedded etcd and, with
// BIREGISTER_ETCD_BIN, on that binary too (where the bytes the process
// allocates are the command's alone: the embedded etcd allocates in the
// same process):
//
//	BIREGISTER_ETCD_BIN=/usr/bin/etcd go test -run '^$' -bench BenchmarkGroups -benchtime 5x -timeout 30m ./cmd/biregister

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/benchutil"
)

// benchGroupSize is how many members each group of BenchmarkGroups has.
const benchGroupSize = 10

func BenchmarkGroups(b *testing.B) {
	servers := benchutil.Servers(b)
	out, err := os.Create(filepath.Join(b.TempDir(), "groups.txt"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	counts := []int{1000, 10000}
	if benchutil.EnvOn("BIREGISTER_BENCH_1M") {
		counts = append(counts, 100000)
	}
	for _, groups := range counts {
		root := fmt.Sprintf("/bench/groups/%d/", groups)
		keys := make([]string, 0, groups*benchGroupSize)
		for g := range groups {
			for m := range benchGroupSize {
				keys = append(keys, fmt.Sprintf("%sg%07d/m%02d", root, g, m))
			}
		}
		for _, srv := range servers {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			err := benchutil.Populate(ctx, srv.Client, keys, func(i int) string { return fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255) }, 128, 16)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("server=%s/groups=%d/members=%d", srv.Name, groups, len(keys)), func(b *testing.B) {
				groupsInterleaved(b, srv, root, groups, len(keys), out)
			})
		}
	}
}

// groupsInterleaved times one Get of the whole root, one Get of its keys
// only, and the command printing its groups to out (a file), in turns
// that rotate; and measures what the command allocates.
func groupsInterleaved(b *testing.B, srv benchutil.Server, root string, groups, keys int, out *os.File) {
	var get, keysOnly, cmd benchutil.Latencies
	var allocated uint64
	timeCmd := func() {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		timedRun(b, out, &cmd, "groups", "-endpoints", srv.Endpoint, "-timeout", "600s", root)
		runtime.ReadMemStats(&after)
		allocated += after.TotalAlloc - before.TotalAlloc
		line := make([]byte, 64)
		n, _ := out.ReadAt(line, 0)
		if want := fmt.Sprintf("%d groups, %d members at revision ", groups, keys); !strings.HasPrefix(string(line[:n]), want) {
			b.Fatalf("groups printed %q, want a line that begins with %q", line[:n], want)
		}
	}
	turns := []func(){
		func() { timedGet(b, srv.Client, root, keys, &get) },
		func() { timedGet(b, srv.Client, root, keys, &keysOnly, clientv3.WithKeysOnly()) },
		timeCmd,
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range turns {
			turns[(i+j)%len(turns)]()
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(get.Mean()), "get-ms")
	b.ReportMetric(ms(keysOnly.Mean()), "keys-only-get-ms")
	b.ReportMetric(ms(cmd.Mean()), "groups-ms")
	b.ReportMetric(float64(cmd.Mean())/float64(get.Mean()), "groups/get-x")
	b.ReportMetric(float64(cmd.Mean())/float64(keysOnly.Mean()), "groups/keys-only-x")
	b.ReportMetric(float64(allocated)/float64(b.N)/(1<<20), "process-alloc-MB/groups")
}

// BENCHMARKS.md section 8: biregister members against one
// unpaginated Get of the group, turn by turn in one run, on the embedded etcd
// and, with BIREGISTER_ETCD_BIN, on that binary too:
//
//	BIREGISTER_ETCD_BIN=/usr/bin/etcd BIREGISTER_BENCH_1M=1 go test -run '^$' -bench BenchmarkMembers -benchtime 3x -timeout 60m ./cmd/biregister

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/benchutil"
)

func BenchmarkMembers(b *testing.B) {
	servers := benchutil.Servers(b)
	out, err := os.Create(filepath.Join(b.TempDir(), "members.txt"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	for _, n := range benchutil.Sizes(1000, 100000) {
		prefix := fmt.Sprintf("/bench/members/%d/", n)
		for _, srv := range servers {
			benchutil.FillGroup(b, srv.Client, prefix, n)
			b.Run(fmt.Sprintf("server=%s/members=%d", srv.Name, n), func(b *testing.B) {
				membersInterleaved(b, srv, prefix, n, out)
			})
		}
	}
}

// membersInterleaved times one Get of the group and the command printing
// it to out (a file), each first every other time.
func membersInterleaved(b *testing.B, srv benchutil.Server, prefix string, n int, out *os.File) {
	var get, cmd benchutil.Latencies
	timeGet := func() { timedGet(b, srv.Client, prefix, n, &get) }
	timeCmd := func() { timedRun(b, out, &cmd, "members", "-endpoints", srv.Endpoint, "-timeout", "600s", prefix) }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			timeGet()
			timeCmd()
		} else {
			timeCmd()
			timeGet()
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(get.Mean()), "get-ms")
	b.ReportMetric(ms(cmd.Mean()), "members-ms")
	b.ReportMetric(float64(cmd.Mean())/float64(get.Mean()), "members/get-x")
}

// timedGet reads every key under prefix in one Get, with opts, adds how
// long it took to l, and fails b unless it read want keys.
func timedGet(b *testing.B, client *clientv3.Client, prefix string, want int, l *benchutil.Latencies, opts ...clientv3.OpOption) {
	start := time.Now()
	resp, err := client.Get(context.Background(), prefix, append(opts, clientv3.WithPrefix())...)
	l.Add(time.Since(start))
	if err != nil || len(resp.Kvs) != want {
		b.Fatalf("Get: %d keys, want %d (%v)", len(resp.Kvs), want, err)
	}
}

// timedRun runs the command with args, printing to out (a file, emptied
// first), adds how long it took to l, and fails b unless it exits 0.
func timedRun(b *testing.B, out *os.File, l *benchutil.Latencies, args ...string) {
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		b.Fatal(err)
	}
	if err := out.Truncate(0); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	code := run(context.Background(), args, out, io.Discard)
	l.Add(time.Since(start))
	if code != 0 {
		b.Fatalf("biregister %s exited %d", args[0], code)
	}
}

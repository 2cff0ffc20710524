// Benchmark 4, reads: what each read of a Watcher or Register costs on a
// group of 1,000 members, alone and from parallel readers (BenchmarkReads).

package biregister_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
	"github.com/biregister/biregister/internal/metertest"
)

// The sinks of the sequential reads: a read whose result is stored nowhere
// could be dropped by the compiler.
var (
	sinkString  string
	sinkBool    bool
	sinkStrings []string
	sinkMap     map[string]string
	sinkMembers []biregister.Member
)

// readsMembers is the size of the group the reads read.
const readsMembers = 1000

// BenchmarkReads times each read of a Watcher, and a Register's AmILeader,
// on a group of 1,000 members that the Register leads; then the single
// reads again with metrics on (an OpenTelemetry SDK MeterProvider), which
// they must not feel.
func BenchmarkReads(b *testing.B) {
	const members = readsMembers
	eps := startBenchEtcd(b)
	reg, w := readsGroup(b, eps)
	names := w.GetNames()

	// One sub-benchmark a read. Each read is written out in the function
	// literal its sub-benchmark passes to readLoop, not called through the
	// table: readLoop and that literal are inlined, so an iteration is the
	// read and the store to a sink, nothing more (a call through a func value
	// would add a few ns to reads of 2 to 30).
	reads := []struct {
		name string
		run  func(b *testing.B)
	}{
		{"GetValueByName", func(b *testing.B) { readLoop(b, func(i int) { sinkString = w.GetValueByName(names[i%members]) }) }},
		{"GetLeader", func(b *testing.B) { readLoop(b, func(int) { sinkString, _ = w.GetLeader() }) }},
		{"AmILeader", func(b *testing.B) { readLoop(b, func(int) { sinkBool = reg.AmILeader() }) }},
		{"GetNames", func(b *testing.B) { readLoop(b, func(int) { sinkStrings = w.GetNames() }) }},
		{"GetValues", func(b *testing.B) { readLoop(b, func(int) { sinkStrings = w.GetValues() }) }},
		{"GetAll", func(b *testing.B) { readLoop(b, func(int) { sinkMap = w.GetAll() }) }},
		{"Members", func(b *testing.B) { readLoop(b, func(int) { sinkMembers = w.Members() }) }},
		// Parallel readers: with -cpu 1,2 the ns/op shows whether they scale.
		// Every reader keeps its last result in a variable of its own (one
		// sink for all would be a cache line they fight over), and its loop
		// is written out for the same reason as above: b.RunParallel calls
		// the function once per reader, the loop runs inside it.
		{"GetValueByName-parallel", func(b *testing.B) {
			var seed atomic.Int64
			readParallel(b, func(pb *testing.PB) {
				i := int(seed.Add(7919))
				var s string
				for pb.Next() {
					s = w.GetValueByName(names[i%members])
					i++
				}
				runtime.KeepAlive(s)
			})
		}},
		{"GetLeader-parallel", func(b *testing.B) {
			readParallel(b, func(pb *testing.PB) {
				var s string
				for pb.Next() {
					s, _ = w.GetLeader()
				}
				runtime.KeepAlive(s)
			})
		}},
		{"AmILeader-parallel", func(b *testing.B) {
			readParallel(b, func(pb *testing.PB) {
				var ok bool
				for pb.Next() {
					ok = reg.AmILeader()
				}
				runtime.KeepAlive(ok)
			})
		}},
	}
	// The floors, measured in the same run so that a slower machine shows as
	// such: a Go map lookup of the same names (what GetValueByName would
	// cost if every change copied a map), and the clock reads that
	// AmILeader cannot skip, since its answer is only as good as its reading
	// of the lease deadline: the monotonic clock, and since the deadline
	// counts time asleep, the wall clock too — time.Now reads
	// both.
	byName := w.GetAll()
	start := time.Now()
	reads = append(reads, []struct {
		name string
		run  func(b *testing.B)
	}{
		{"floor/map-lookup", func(b *testing.B) { readLoop(b, func(i int) { sinkString = byName[names[i%members]] }) }},
		{"floor/clock-read", func(b *testing.B) { readLoop(b, func(int) { sinkBool = time.Since(start) < time.Hour }) }},
		{"floor/both-clocks-read", func(b *testing.B) {
			readLoop(b, func(int) { now := time.Now(); sinkBool = now.Sub(start) < time.Hour && now.UnixNano() > 0 })
		}},
	}...)
	for _, r := range reads {
		b.Run(r.name, r.run)
	}
	if !reg.AmILeader() || len(w.Members()) != members {
		b.Fatal("the group changed during the reads")
	}

	measured := metertest.New(b)
	mreg, mw := readsGroup(b, eps, biregister.WithMeterProvider(measured.Provider))
	b.Run("metrics-on/GetValueByName", func(b *testing.B) {
		readLoop(b, func(i int) { sinkString = mw.GetValueByName(names[i%members]) })
	})
	b.Run("metrics-on/GetLeader", func(b *testing.B) { readLoop(b, func(int) { sinkString, _ = mw.GetLeader() }) })
	b.Run("metrics-on/AmILeader", func(b *testing.B) { readLoop(b, func(int) { sinkBool = mreg.AmILeader() }) })
	if !mreg.AmILeader() {
		b.Fatal("the measured Register stopped leading during the reads")
	}
}

// readsGroup fills a group of readsMembers members, led by a Register that
// registered first, and returns that Register and a Watcher of the group,
// both made with opts, each with a client of its own; b.Cleanup closes them.
func readsGroup(b *testing.B, eps []string, opts ...biregister.Option) (biregister.Register, biregister.Watcher) {
	b.Helper()
	prefix := uniquePrefix("reads")
	ctx, cancel := ctxWait()
	defer cancel()
	reg, err := biregister.NewRegister(nil, prefix, "leader", endpointAddr(0), benchTTL,
		append(opts, biregister.WithClient(benchClient(b, eps)))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(reg.Close)
	keys := make([]string, readsMembers-1)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sm%06d", prefix, i+1)
	}
	if err := benchutil.Populate(ctx, benchClient(b, eps), keys, func(i int) string { return endpointAddr(i + 1) }, 128, 4); err != nil {
		b.Fatal(err)
	}
	w, err := biregister.NewWatcher(nil, prefix, benchTTL, append(opts, biregister.WithClient(benchClient(b, eps)))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Close)
	for _, x := range []biregister.Watcher{w, reg} {
		if err := awaitCache(x, func() bool { return len(x.Members()) == readsMembers }); err != nil {
			b.Fatal(err)
		}
	}
	if err := reg.WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	return reg, w
}

// readLoop runs read b.N times, read(i) in iteration i. It is small enough to
// be inlined, and the function literal it is given with it.
func readLoop(b *testing.B, read func(i int)) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		read(i)
	}
}

// readParallel runs reader in every parallel reader of b.
func readParallel(b *testing.B, reader func(pb *testing.PB)) {
	b.ReportAllocs()
	b.RunParallel(reader)
}

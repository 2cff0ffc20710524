// Package benchutil holds the helpers of the benchmarks in bench_*_test.go:
// latency percentiles, reading etcd's Prometheus metrics, counting goroutines
// by origin and filling a group with many members quickly.
//
// It is measurement code only; nothing in the library imports it.
package benchutil

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Latencies collects the durations of single operations.
type Latencies struct {
	d []time.Duration
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) { l.d = append(l.d, d) }

// Len returns how many durations were recorded.
func (l *Latencies) Len() int { return len(l.d) }

// Quantile returns the q-quantile (0 < q ≤ 1) by nearest rank, or 0 if
// nothing was recorded.
func (l *Latencies) Quantile(q float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// Mean returns the mean duration, or 0 if nothing was recorded.
func (l *Latencies) Mean() time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range l.d {
		sum += d
	}
	return sum / time.Duration(len(l.d))
}

// Report reports p50 and p99 in microseconds as custom benchmark metrics,
// named "p50-µs" and "p99-µs", each preceded by name and "-" if name is not
// empty.
func (l *Latencies) Report(b *testing.B, name string) {
	if l.Len() == 0 {
		return
	}
	if name != "" {
		name += "-"
	}
	b.ReportMetric(Micros(l.Quantile(0.50)), name+"p50-µs")
	b.ReportMetric(Micros(l.Quantile(0.99)), name+"p99-µs")
}

// Micros returns d in microseconds.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Metrics is one scrape of a Prometheus text exposition: the value of every
// series, by metric name and then by its label set as written ("{a="x"}" or
// "" for a series without labels).
type Metrics map[string]map[string]float64

var httpClient = &http.Client{Timeout: 10 * time.Second}

// Scrape reads the /metrics page that etcd serves on its client URL. The
// embedded etcd serves it there even when no separate metrics listener is
// configured.
func Scrape(endpoint string) (Metrics, error) {
	resp, err := httpClient.Get(strings.TrimSuffix(endpoint, "/") + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	m := Metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value  or  name value
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		series := line[:sp]
		name, labels := series, ""
		if i := strings.IndexByte(series, '{'); i >= 0 {
			name, labels = series[:i], series[i:]
		}
		if m[name] == nil {
			m[name] = map[string]float64{}
		}
		m[name][labels] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	return m, nil
}

// Sum returns the sum of every series of the metric name.
func (m Metrics) Sum(name string) float64 {
	var s float64
	for _, v := range m[name] {
		s += v
	}
	return s
}

// Label returns the value of label key in a label set written as Scrape
// stores it, or "".
func Label(labels, key string) string {
	i := strings.Index(labels, key+`="`)
	if i < 0 {
		return ""
	}
	rest := labels[i+len(key)+2:]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return ""
}

// DeltaBy returns, for the metric name, how much each value of the label key
// grew from before to m (series that did not grow are left out).
func (m Metrics) DeltaBy(before Metrics, name, key string) map[string]float64 {
	d := map[string]float64{}
	for labels, v := range m[name] {
		if diff := v - before[name][labels]; diff != 0 {
			d[Label(labels, key)] += diff
		}
	}
	return d
}

// WaitWatchesSettled waits until etcd has no unsynced ("slow") watcher and
// the number of watchers satisfies ok. A watch created at a past revision
// is unsynced and only catches up in batches every 100 ms, so a latency
// measured before this holds measures etcd's catch-up loop instead.
func WaitWatchesSettled(endpoint string, ok func(watchers float64) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m, err := Scrape(endpoint)
		if err != nil {
			return err
		}
		watchers := m.Sum("etcd_debugging_mvcc_watcher_total")
		slow := m.Sum("etcd_debugging_mvcc_slow_watcher_total")
		if slow == 0 && ok(watchers) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("watches not settled after %v: %v watchers, %v unsynced", timeout, watchers, slow)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Goroutines counts the goroutines of the process by origin:
//
//   - "biregister": started by the library itself (the goroutine's first
//     function is in package biregister);
//   - "etcd-server": serving a request or a stream in the embedded etcd
//     (a frame in go.etcd.io/etcd/server);
//   - "etcd-client": the etcd client's own (a frame in
//     go.etcd.io/etcd/client);
//   - "grpc": gRPC transport goroutines of either side;
//   - "other": everything else.
//
// "total" is their sum.
func Goroutines() map[string]int {
	counts := map[string]int{}
	for _, g := range strings.Split(Stacks(), "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		counts["total"]++
		counts[origin(g)]++
	}
	return counts
}

// Stacks returns the stacks of every goroutine, as runtime.Stack writes
// them, whatever their size.
func Stacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// origin classifies one goroutine's stack as Goroutines describes.
func origin(stack string) string {
	lines := strings.Split(stack, "\n")
	// Function lines are those that do not start with a tab (file lines do),
	// after the "goroutine N [state]:" header; "created by" ends the stack.
	var funcs []string
	for _, l := range lines[1:] {
		if l == "" || l[0] == '\t' {
			continue
		}
		if strings.HasPrefix(l, "created by ") {
			break
		}
		funcs = append(funcs, l)
	}
	if len(funcs) > 0 {
		root := funcs[len(funcs)-1]
		if strings.HasPrefix(root, "github.com/biregister/biregister.") {
			return "biregister"
		}
	}
	all := strings.Join(funcs, "\n")
	switch {
	case strings.Contains(all, "go.etcd.io/etcd/server/"):
		return "etcd-server"
	case strings.Contains(all, "go.etcd.io/etcd/client/"):
		return "etcd-client"
	case strings.Contains(all, "google.golang.org/grpc"):
		return "grpc"
	}
	return "other"
}

// Populate puts value(i) at keys[i] for every i, perRequest keys per request
// (a transaction of up to 128 puts, etcd's default limit, or a plain Put for
// 1), from workers goroutines at once. Keys must be distinct.
//
// The keys written by one transaction share a create revision; with
// perRequest 1 every key has a create revision of its own, as members that
// register one by one do.
func Populate(ctx context.Context, c *clientv3.Client, keys []string, value func(i int) string, perRequest, workers int) error {
	perRequest = max(1, min(perRequest, 128))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := make([]clientv3.Op, 0, perRequest)
			for {
				start := int(next.Add(int64(perRequest))) - perRequest
				if start >= len(keys) {
					return
				}
				var err error
				if perRequest == 1 {
					_, err = c.Put(ctx, keys[start], value(start))
				} else {
					ops = ops[:0]
					for i := start; i < min(start+perRequest, len(keys)); i++ {
						ops = append(ops, clientv3.OpPut(keys[i], value(i)))
					}
					_, err = c.Txn(ctx).Then(ops...).Commit()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// LiveHeap returns the bytes of the heap's live objects, after two
// collections.
func LiveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// Sizes returns the group sizes a benchmark runs at: defaults, or the
// comma-separated list in BIREGISTER_BENCH_SIZES; BIREGISTER_BENCH_1M=1 adds
// a million.
func Sizes(defaults ...int) []int {
	sizes := defaults
	if env := os.Getenv("BIREGISTER_BENCH_SIZES"); env != "" {
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n >= 2 {
				sizes = append(sizes, n)
			}
		}
	}
	if EnvOn("BIREGISTER_BENCH_1M") && !slices.Contains(sizes, 1000000) {
		sizes = append(sizes, 1000000)
	}
	return sizes
}

// EnvOn reports whether the environment variable name is set to a true
// value ("1", "true", "yes").
func EnvOn(name string) bool {
	switch strings.ToLower(os.Getenv(name)) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// EnvDuration returns the duration in the environment variable name, or def
// if it is unset or not a duration.
func EnvDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// EnvInt returns the integer in the environment variable name, or def.
func EnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

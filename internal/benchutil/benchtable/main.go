// Command benchtable turns the output of the benchmarks in bench_*_test.go into
// the Markdown tables of BENCHMARKS.md: every figure beside its peer, the
// ratio, the target BENCHMARKS.md sets and whether it holds. It reads `go test -bench`
// output (one or more runs concatenated) on stdin and writes Markdown on
// stdout, so the tables are always computed from measured numbers:
//
//	go test -run '^$' -bench . -benchmem . > bench.txt
//	go test -run '^$' -bench Reads -benchmem -cpu 1,2 . >> bench.txt
//	go run ./internal/benchutil/benchtable < bench.txt
//
// A figure that is missing from the input is shown as "–".
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// result is one benchmark line: its metrics by unit.
type result map[string]float64

// results are keyed by the benchmark name without "Benchmark" and with the
// GOMAXPROCS suffix kept apart: name → procs → result. A later line for the
// same name and procs replaces an earlier one.
type results map[string]map[int]result

var (
	lineRE  = regexp.MustCompile(`^Benchmark(\S+?)(?:-(\d+))?\s+(\d+)\s+(.*)$`)
	metricR = regexp.MustCompile(`([-+0-9.eE]+)\s+(\S+)`)
)

func parse(r io.Reader) (results, []string) {
	res := results{}
	var notes []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# ") || strings.HasPrefix(line, "cpu: ") {
			notes = append(notes, line)
			continue
		}
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		procs := 1
		if m[2] != "" {
			procs, _ = strconv.Atoi(m[2])
		}
		r := result{}
		for _, mm := range metricR.FindAllStringSubmatch(m[4], -1) {
			if v, err := strconv.ParseFloat(mm[1], 64); err == nil {
				r[mm[2]] = v
			}
		}
		if res[m[1]] == nil {
			res[m[1]] = map[int]result{}
		}
		res[m[1]][procs] = r
	}
	return res, notes
}

// get returns a metric of a benchmark at the highest GOMAXPROCS it ran with
// (or at procs if procs > 0), or NaN.
func (rs results) get(name string, procs int, unit string) float64 {
	byProcs := rs[name]
	if byProcs == nil {
		return math.NaN()
	}
	if procs <= 0 {
		for p := range byProcs {
			procs = max(procs, p)
		}
	}
	r, ok := byProcs[procs]
	if !ok {
		return math.NaN()
	}
	v, ok := r[unit]
	if !ok {
		return math.NaN()
	}
	return v
}

func f(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}

func x(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "×"
}

// holds renders whether v ≤ limit.
func holds(v, limit float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v <= limit:
		return "yes"
	default:
		return "**no**"
	}
}

type table struct {
	w    io.Writer
	cols int
}

func newTable(w io.Writer, header ...string) *table {
	fmt.Fprintln(w, "| "+strings.Join(header, " | ")+" |")
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(header)))
	return &table{w: w, cols: len(header)}
}

func (t *table) row(cells ...string) {
	fmt.Fprintln(t.w, "| "+strings.Join(cells, " | ")+" |")
}

func main() {
	rs, notes := parse(os.Stdin)
	w := os.Stdout
	seen := map[string]bool{}
	for _, n := range notes {
		if !seen[n] {
			fmt.Fprintf(w, "    %s\n", n)
			seen[n] = true
		}
	}
	fmt.Fprintln(w)
	propagation(w, rs)
	failover(w, rs)
	registration(w, rs)
	reads(w, rs)
	scale(w, rs)
	footprint(w, rs)
}

func propagation(w io.Writer, rs results) {
	fmt.Fprintln(w, "### 1. Propagation: Put → change received")
	fmt.Fprintln(w)
	t := newTable(w, "peer", "run", "p50 µs", "p99 µs", "p50 / raw watch", "target", "holds")
	const sep, il = "Propagation/", "Propagation/interleaved"
	rawSep := rs.get(sep+"raw-watch", 0, "p50-µs")
	rawIl := rs.get(il, 0, "raw-watch-p50-µs")
	for _, p := range []string{"raw-watch", "biregister", "endpoints"} {
		target, ok := "", ""
		if p == "biregister" {
			target = "≤ 1.05×"
		}
		r := ratio(rs.get(sep+p, 0, "p50-µs"), rawSep)
		if target != "" {
			ok = holds(r, 1.05)
		}
		t.row(p, "alone", f(rs.get(sep+p, 0, "p50-µs")), f(rs.get(sep+p, 0, "p99-µs")), x(r), target, ok)
	}
	for _, p := range []string{"raw-watch", "biregister", "endpoints"} {
		target, ok := "", ""
		r := ratio(rs.get(il, 0, p+"-p50-µs"), rawIl)
		if p == "biregister" {
			target, ok = "≤ 1.05×", holds(r, 1.05)
		}
		t.row(p, "interleaved", f(rs.get(il, 0, p+"-p50-µs")), f(rs.get(il, 0, p+"-p99-µs")), x(r), target, ok)
	}
	fmt.Fprintln(w)
}

func failover(w io.Writer, rs results) {
	fmt.Fprintln(w, "### 2. Graceful failover")
	fmt.Fprintln(w)
	t := newTable(w, "peer", "what is timed", "p50 µs", "p99 µs", "p50 / floor", "target", "holds")
	floor := rs.get("Failover/raw-revoke-watch", 0, "p50-µs")
	rows := []struct{ name, what, target string }{
		{"raw-revoke-watch", "lease revoked → raw watch sees the DELETE (floor)", ""},
		{"biregister-WaitLeader", "leader `Close()` → next member's `WaitLeader` returns", "≤ 1.5×"},
		{"biregister-AmILeader-poll", "leader `Close()` → next member's `AmILeader()` true (polled every 10 µs)", "≤ 1.5×"},
		{"concurrency-Election", "leader's `Session.Close()` → next `Campaign` returns", ""},
	}
	for _, r := range rows {
		n := "Failover/" + r.name
		q := ratio(rs.get(n, 0, "p50-µs"), floor)
		ok := ""
		if r.target != "" {
			ok = holds(q, 1.5)
		}
		t.row(r.name, r.what, f(rs.get(n, 0, "p50-µs")), f(rs.get(n, 0, "p99-µs")), x(q), r.target, ok)
	}
	fmt.Fprintln(w)
	el := rs.get("Failover/concurrency-Election", 0, "p50-µs")
	fmt.Fprintf(w, "biregister (WaitLeader) against concurrency.Election: %s of its p50. ", x(ratio(rs.get("Failover/biregister-WaitLeader", 0, "p50-µs"), el)))
	fmt.Fprintf(w, "Within the biregister failover, the raw watch saw the old key's DELETE at p50 %s µs (WaitLeader run) after `Close()` began.\n\n",
		f(rs.get("Failover/biregister-WaitLeader", 0, "raw-delete-seen-p50-µs")))
}

func registration(w io.Writer, rs results) {
	fmt.Fprintln(w, "### 3. Registration")
	fmt.Fprintln(w)
	t := newTable(w, "peer", "p50 µs", "p99 µs", "p50 / Session+Campaign", "B/op", "allocs/op")
	peer := rs.get("Registration/concurrency-NewSession+Campaign", 0, "p50-µs")
	for _, p := range []string{"concurrency-NewSession+Campaign", "biregister-NewRegister-shared-client", "biregister-NewRegister-own-client", "biregister-NewRegister-shared-client-into-1000"} {
		n := "Registration/" + p
		t.row(p, f(rs.get(n, 0, "p50-µs")), f(rs.get(n, 0, "p99-µs")), x(ratio(rs.get(n, 0, "p50-µs"), peer)), f(rs.get(n, 0, "B/op")), f(rs.get(n, 0, "allocs/op")))
	}
	fmt.Fprintln(w)
}

func reads(w io.Writer, rs results) {
	fmt.Fprintln(w, "### 4. Reads, 1,000 members")
	fmt.Fprintln(w)
	t := newTable(w, "read", "ns/op (-cpu 1)", "ns/op (-cpu 2)", "B/op", "allocs/op", "target", "holds")
	type rd struct {
		name, target string
		ok           func(ns, allocs float64) bool
	}
	fast := func(ns, allocs float64) bool { return ns <= 50 && allocs == 0 }
	one := func(_, allocs float64) bool { return allocs <= 1 }
	for _, r := range []rd{
		{"GetValueByName", "≤ 50 ns, 0 allocs", fast},
		{"GetLeader", "≤ 50 ns, 0 allocs", fast},
		{"AmILeader", "≤ 50 ns, 0 allocs", fast},
		{"GetNames", "1 alloc", one},
		{"GetValues", "1 alloc", one},
		{"GetAll", "1 alloc", one},
		{"Members", "1 alloc (like GetNames)", one},
	} {
		n := "Reads/" + r.name
		ns1, ns2 := rs.get(n, 1, "ns/op"), rs.get(n, 2, "ns/op")
		allocs := rs.get(n, 0, "allocs/op")
		ok := "–"
		if !math.IsNaN(allocs) {
			ok = "yes"
			ns := ns2
			if math.IsNaN(ns) {
				ns = ns1
			}
			if !r.ok(ns, allocs) {
				ok = "**no**"
			}
		}
		t.row(r.name, f(ns1), f(ns2), f(rs.get(n, 0, "B/op")), f(allocs), r.target, ok)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Parallel readers (`b.RunParallel`; ns/op is wall time per read over all readers, so a perfect 2-core speed-up halves it):")
	fmt.Fprintln(w)
	t = newTable(w, "read", "ns/op -cpu 1", "ns/op -cpu 2", "speed-up", "allocs/op")
	for _, r := range []string{"GetValueByName", "GetLeader", "AmILeader"} {
		n := "Reads/" + r + "-parallel"
		ns1, ns2 := rs.get(n, 1, "ns/op"), rs.get(n, 2, "ns/op")
		t.row(r, f(ns1), f(ns2), x(ratio(ns1, ns2)), f(rs.get(n, 0, "allocs/op")))
	}
	fmt.Fprintln(w)
}

// sizes returns the member counts BenchmarkScale ran with, ascending.
func (rs results) sizes() []int {
	var out []int
	seen := map[int]bool{}
	for name := range rs {
		if rest, ok := strings.CutPrefix(name, "Scale/members="); ok {
			n, err := strconv.Atoi(strings.SplitN(rest, "/", 2)[0])
			if err == nil && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Ints(out)
	return out
}

func scale(w io.Writer, rs results) {
	sizes := rs.sizes()
	fmt.Fprintln(w, "### 5. Scale")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Initial sync (NewWatcher until it returns, vs. one unpaginated Get of the group). \"alone\": one sub-benchmark each, back to back; \"interleaved\": turn by turn, each first every other time, each after etcd settled from the last Watcher's watch:")
	fmt.Fprintln(w)
	t := newTable(w, "members", "alone: biregister ms", "alone: raw Get ms", "ratio", "interleaved: biregister ms", "interleaved: raw Get ms", "ratio", "target", "holds (interleaved)")
	for _, n := range sizes {
		p := fmt.Sprintf("Scale/members=%d/", n)
		a, b := rs.get(p+"sync/biregister", 0, "ms/sync"), rs.get(p+"sync/raw-get", 0, "ms/sync")
		ia, ib := rs.get(p+"sync/interleaved", 0, "biregister-ms"), rs.get(p+"sync/interleaved", 0, "raw-get-ms")
		t.row(strconv.Itoa(n), f(a), f(b), x(ratio(a, b)), f(ia), f(ib), x(ratio(ia, ib)), "≤ 1.5×", holds(ratio(ia, ib), 1.5))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Heap per member (live heap growth while a synced Watcher is held, after GC):")
	fmt.Fprintln(w)
	t = newTable(w, "members", "Watcher B/member", "marginal B/member", "raw listing B/member", "key+value B/member", "target (2×kv+100)", "holds (total)", "holds (marginal)")
	for _, n := range sizes {
		p := fmt.Sprintf("Scale/members=%d/heap/", n)
		heap, marg := rs.get(p+"biregister", 0, "heap-B/member"), rs.get(p+"biregister", 0, "marginal-B/member")
		target := rs.get(p+"biregister", 0, "target-B/member")
		t.row(strconv.Itoa(n), f(heap), f(marg), f(rs.get(p+"raw-kvs", 0, "heap-B/member")), f(rs.get(p+"biregister", 0, "kv-B/member")), f(target),
			holds(ratio(heap, target), 1), holds(ratio(marg, target), 1))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Burst of 20,000 updates (4 writers, transactions of 128 puts), from the first put until the burst's last change is out of `Changes()`, the cache updated before it (biregister) / all 20,000 events arrived (raw watch). \"alone\": one sub-benchmark each; \"interleaved\": bursts alternate between a Watcher of the group and a raw watch of a twin group, both live all along. B/op is the whole process's (etcd and the writers included):")
	fmt.Fprintln(w)
	t = newTable(w, "members", "alone: biregister ms (Changes ms)", "alone: raw ms", "ratio", "interleaved: biregister ms", "interleaved: raw ms", "ratio", "target", "holds (interleaved)", "B/op biregister / raw (alone)")
	for _, n := range sizes {
		p := fmt.Sprintf("Scale/members=%d/burst/", n)
		a, c, b := rs.get(p+"biregister", 0, "cache-ms"), rs.get(p+"biregister", 0, "changes-ms"), rs.get(p+"raw-watch", 0, "events-ms")
		ia, ib := rs.get(p+"interleaved", 0, "biregister-cache-ms"), rs.get(p+"interleaved", 0, "raw-events-ms")
		t.row(strconv.Itoa(n), f(a)+" ("+f(c)+")", f(b), x(ratio(a, b)), f(ia), f(ib), x(ratio(ia, ib)), "≤ 1.1×", holds(ratio(ia, ib), 1.1),
			f(rs.get(p+"biregister", 0, "B/op")/1e6)+" MB / "+f(rs.get(p+"raw-watch", 0, "B/op")/1e6)+" MB")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Leader change (the oldest member deleted → the Watcher's GetLeader names the next; raw: a member deleted → a raw watch sees the DELETE):")
	fmt.Fprintln(w)
	t = newTable(w, "members", "biregister p50 µs", "biregister p99 µs", "raw watch p50 µs", "ratio p50", "vs. smallest group")
	base := math.NaN()
	for i, n := range sizes {
		p := fmt.Sprintf("Scale/members=%d/leader-change/", n)
		a, b := rs.get(p+"biregister", 0, "p50-µs"), rs.get(p+"raw-watch", 0, "p50-µs")
		if i == 0 {
			base = a
		}
		t.row(strconv.Itoa(n), f(a), f(rs.get(p+"biregister", 0, "p99-µs")), f(b), x(ratio(a, b)), x(ratio(a, base)))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "#### How it scales")
	fmt.Fprintln(w)
	t = newTable(w, "members", "sync ms, interleaved (raw)", "heap B/member", "burst ms, interleaved (raw)", "leader change p50 µs (raw)")
	for _, n := range sizes {
		p := fmt.Sprintf("Scale/members=%d/", n)
		t.row(strconv.Itoa(n),
			f(rs.get(p+"sync/interleaved", 0, "biregister-ms"))+" ("+f(rs.get(p+"sync/interleaved", 0, "raw-get-ms"))+")",
			f(rs.get(p+"heap/biregister", 0, "heap-B/member")),
			f(rs.get(p+"burst/interleaved", 0, "biregister-cache-ms"))+" ("+f(rs.get(p+"burst/interleaved", 0, "raw-events-ms"))+")",
			f(rs.get(p+"leader-change/biregister", 0, "p50-µs"))+" ("+f(rs.get(p+"leader-change/raw-watch", 0, "p50-µs"))+")")
	}
	fmt.Fprintln(w)
}

func footprint(w io.Writer, rs results) {
	fmt.Fprintln(w, "### 6. Footprint and load on etcd at steady state")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Per instance, 10 instances on one shared client (watch streams also with a client per instance):")
	fmt.Fprintln(w)
	t := newTable(w, "instance", "library goroutines", "all goroutines", "etcd watchers", "watch streams (own client)", "target", "holds")
	for _, k := range []string{"biregister-Register", "biregister-Watcher", "concurrency-Session+Election"} {
		n := "Footprint/" + k
		lib, streams := rs.get(n, 0, "lib-goroutines/inst"), rs.get(n, 0, "watch-streams/inst-own-client")
		target, ok := "", ""
		if strings.HasPrefix(k, "biregister") {
			target = "≤ 2 goroutines"
			ok = holds(lib, 2)
			if k == "biregister-Register" {
				target += ", 1 watch stream"
				if ok == "yes" {
					ok = holds(streams, 1)
				}
			}
		}
		t.row(k, f(lib), f(rs.get(n, 0, "all-goroutines/inst")), f(rs.get(n, 0, "etcd-watchers/inst")), f(streams), target, ok)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Idle load: gRPC messages etcd receives per idle instance per 5 s (ttl 5 s; `grpc_server_msg_received_total`, which counts a stream's end as a receive too) and RPCs/streams started (`grpc_server_started_total`):")
	fmt.Fprintln(w)
	t = newTable(w, "instance", "msgs / 5 s", "by method", "RPCs+streams started / 5 s", "vs. Session+Election", "target", "holds")
	peer := rs.get("IdleLoad/concurrency-Session+Election", 0, "msgs/inst/5s")
	for _, k := range []string{"concurrency-Session+Election", "biregister-Register", "biregister-Watcher"} {
		n := "IdleLoad/" + k
		msgs := rs.get(n, 0, "msgs/inst/5s")
		var methods []string
		for _, r := range rs[n] {
			for unit, v := range r {
				if m, ok := strings.CutSuffix(unit, "-msgs/inst/5s"); ok {
					methods = append(methods, fmt.Sprintf("%s %s", m, f(v)))
				}
			}
			break
		}
		sort.Strings(methods)
		target, ok, vs := "", "", ""
		switch k {
		case "biregister-Register":
			target, ok, vs = "≤ 1.5× Session+Election", holds(ratio(msgs, peer), 1.5), x(ratio(msgs, peer))
		case "biregister-Watcher":
			target, ok = "≤ 1", holds(msgs, 1)
		}
		t.row(k, f(msgs), strings.Join(methods, ", "), f(rs.get(n, 0, "rpcs-started/inst/5s")), vs, target, ok)
	}
	fmt.Fprintln(w)
}

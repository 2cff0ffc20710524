// The resolver's own work for one view of a big group, against the resolver
// as it was before it followed views (c8d0af1), both on the same views of a
// Watcher of a real etcd, iteration by iteration.

package grpcresolver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// BenchmarkResolverView times what resolvers do with one new view of a
// group of 1,000 to 100,000 members (BIREGISTER_BENCH_SIZES), each with an
// address of its own, for one client and, up to 10,000 members, for 100
// clients of one Watcher.
// The views come from a Watcher of a real etcd; the time is that of the
// resolvers alone, gRPC being a ClientConn that keeps what it is told:
//
//   - nothing: a key under the prefix that is not a member (as a progress
//     notification, a view in which nothing the resolver serves changed);
//   - value: one member in the middle of the group changes its address;
//   - join: one member joins, and stays (the joiners leave, untimed, when
//     the sub-benchmark ends);
//   - leave: one member in the middle of the group leaves (and joins again
//     right after, untimed).
//
// In the "interleaved" runs, each iteration runs both resolvers on the
// same view, in turns; the benchmark reports the median and the 99th
// percentile of each, "before" for the peer and "after" for this
// package's, and the ratio of the medians. The "alone" runs time this
// package's alone, for reference: the peer's garbage keeps the collector
// busy, which makes copying a list dearer. (ns/op counts the writes to etcd
// and the waits for the Watcher too.)
func BenchmarkResolverView(b *testing.B) {
	srv := benchutil.Servers(b)[0]
	for _, n := range benchutil.Sizes(1000, 10000, 100000) {
		prefix := fmt.Sprintf("/bench/%d/", n)
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("%sm%07d", prefix, i)
		}
		ctx := context.Background()
		if err := benchutil.Populate(ctx, srv.Client, keys, benchAddr, 128, 16); err != nil {
			b.Fatal(err)
		}
		// Without protection, a delete from outside is a leave at once.
		w, err := biregister.NewWatcher(nil, prefix, 60, biregister.WithClient(srv.Client), biregister.WithoutProtection())
		if err != nil {
			b.Fatal(err)
		}
		for _, clients := range []int{1, 100} {
			if clients > 1 && n > 10000 {
				// The peer would take minutes, and gigabytes.
				continue
			}
			for _, change := range []string{"nothing", "value", "join", "leave"} {
				for _, peer := range []bool{true, false} {
					name := fmt.Sprintf("members=%d/clients=%d/%s/alone", n, clients, change)
					if peer {
						name = fmt.Sprintf("members=%d/clients=%d/%s/interleaved", n, clients, change)
					}
					b.Run(name, func(b *testing.B) {
						benchView(b, srv.Client, w, clients, change, peer)
					})
				}
			}
		}
		w.Close()
		if _, err := srv.Client.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
			b.Fatal(err)
		}
	}
}

// benchAddr is the i-th member's address.
func benchAddr(i int) string {
	return fmt.Sprintf("10.%d.%d.%d:80", i>>16&255, i>>8&255, i&255)
}

// benchView runs one sub-benchmark of BenchmarkResolverView; peer says
// whether the peer runs too.
func benchView(b *testing.B, cli *clientv3.Client, w biregister.Watcher, clients int, change string, peer bool) {
	ctx := context.Background()
	prefix := w.Prefix()
	n := w.View().Len()
	if n < 2 {
		b.Fatalf("a group of %d members", n)
	}
	logger := slog.New(slog.DiscardHandler)
	g := NewBuilder(w).(*builder).group
	var peers []*wholeGroup
	resolvers := make([]*watchResolver, clients)
	for i := range clients {
		if peer {
			peers = append(peers, &wholeGroup{cc: new(keeper), logger: logger})
		}
		resolvers[i] = &watchResolver{w: w, g: g, cc: new(keeper), logger: logger}
	}
	before := func() {
		for _, p := range peers {
			p.update(w.Members())
		}
	}
	after := func() {
		for _, r := range resolvers {
			r.update(r.g.current())
		}
	}
	write := func(op clientv3.Op) {
		resp, err := cli.Txn(ctx).Then(op).Commit()
		if err != nil {
			b.Fatal(err)
		}
		waitView(b, w, resp.Header.Revision)
	}
	// untimed writes op and lets both resolvers see it.
	untimed := func(op clientv3.Op) {
		b.StopTimer()
		write(op)
		before()
		after()
		b.StartTimer()
	}
	before()
	after()
	var tBefore, tAfter benchutil.Latencies
	b.ResetTimer()
	for i := range b.N {
		switch change {
		case "nothing":
			write(clientv3.OpPut(prefix+"sub/x", fmt.Sprint(i)))
		case "value":
			write(clientv3.OpPut(fmt.Sprintf("%sm%07d", prefix, n/2), benchAddr(n+i%2)))
		case "join":
			write(clientv3.OpPut(fmt.Sprintf("%sj%07d", prefix, i), benchAddr(n+2+i)))
		case "leave":
			write(clientv3.OpDelete(fmt.Sprintf("%sm%07d", prefix, n/2+i%(n/2))))
		}
		// In turns, so that neither always finds the caches warm.
		switch {
		case !peer:
			tAfter.Add(timed(after))
		case i%2 == 0:
			tBefore.Add(timed(before))
			tAfter.Add(timed(after))
		default:
			tAfter.Add(timed(after))
			tBefore.Add(timed(before))
		}
		if change == "leave" {
			untimed(clientv3.OpPut(fmt.Sprintf("%sm%07d", prefix, n/2+i%(n/2)), benchAddr(n/2+i%(n/2))))
		}
	}
	if change == "join" {
		untimed(clientv3.OpDelete(prefix+"j", clientv3.WithPrefix()))
	}
	b.StopTimer()
	for i, p := range peers {
		if !slices.EqualFunc(p.cc.(*keeper).state.Endpoints, resolvers[i].cc.(*keeper).state.Endpoints, sameEndpoint) {
			b.Fatal("the resolvers told gRPC different lists")
		}
	}
	tAfter.Report(b, "after")
	if peer {
		tBefore.Report(b, "before")
		b.ReportMetric(float64(tAfter.Quantile(0.5))/float64(tBefore.Quantile(0.5)), "p50-ratio")
	}
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// keeper is a resolver.ClientConn that keeps the last state it is told.
type keeper struct {
	resolver.ClientConn
	state resolver.State
}

func (k *keeper) UpdateState(s resolver.State) error {
	k.state = s
	return nil
}

func (k *keeper) ReportError(error) {}

// wholeGroup is the resolver as it was at c8d0af1, the peer: for every
// view, it copies the whole group (Members), builds its map of parsed
// values anew, parsing the values it has not seen, compares the whole list
// with the one it pushed, and builds each endpoint again to push it.
type wholeGroup struct {
	cc     resolver.ClientConn
	logger *slog.Logger
	pushed []Endpoint
	empty  bool
	parsed map[string]parsed
}

// parsed is a member's value and what ParseEndpoint made of it.
type parsed struct {
	value    string
	endpoint Endpoint
	err      error
}

func (r *wholeGroup) update(members []biregister.Member) {
	endpoints := r.endpoints(members)
	if len(endpoints) == 0 {
		if !r.empty {
			r.empty = true
			r.cc.ReportError(errNoMembers)
		}
		return
	}
	if !r.empty && r.pushed != nil && equalEndpoints(endpoints, r.pushed) {
		return
	}
	r.empty = false
	r.pushed = endpoints
	state := resolver.State{
		Endpoints: make([]resolver.Endpoint, len(endpoints)),
		Addresses: make([]resolver.Address, len(endpoints)),
	}
	for i, e := range endpoints {
		state.Endpoints[i] = e.resolverEndpoint()
		state.Addresses[i] = resolver.Address{Addr: e.Addr}
	}
	r.cc.UpdateState(state)
}

func (r *wholeGroup) endpoints(members []biregister.Member) []Endpoint {
	endpoints := make([]Endpoint, 0, len(members))
	seen := make(map[string]bool, len(members))
	next := make(map[string]parsed, len(members))
	for _, m := range members {
		p, ok := r.parsed[m.Name]
		if !ok || p.value != m.Value {
			p = parsed{value: m.Value}
			p.endpoint, p.err = ParseEndpoint(m.Value)
			if p.err != nil {
				r.logger.Warn("grpcresolver: skipping a member whose value is not an endpoint",
					"name", m.Name, "value", m.Value, "err", p.err)
			}
		}
		next[m.Name] = p
		if p.err != nil || seen[p.endpoint.Addr] {
			continue
		}
		seen[p.endpoint.Addr] = true
		endpoints = append(endpoints, p.endpoint)
	}
	r.parsed = next
	return endpoints
}

// Fuzzing what comes from the group's members: endpoint values, parsed and
// written back, and the resolver following any changes to a group in a
// real etcd.

package grpcresolver

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/fuzzbytes"
	"github.com/biregister/biregister/internal/leakcheck"
)

// requireNormalAddr fails t unless addr is what normalAddr documents: a
// host:port, the host non-empty, the port a number that fits 16 bits, in
// its normal form.
func requireNormalAddr(t *testing.T, addr string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		t.Fatalf("accepted address %q is not host:port (%v)", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		t.Fatalf("accepted address %q has no valid port", addr)
	}
	if again, err := normalAddr(addr); err != nil || again != addr {
		t.Fatalf("normal address %q reads back as %q (%v)", addr, again, err)
	}
}

// requireRoundTrip fails t unless what e.String writes, ParseEndpoint reads
// back as e, its address in normal form.
func requireRoundTrip(t *testing.T, e Endpoint) {
	t.Helper()
	s := e.String()
	back, err := ParseEndpoint(s)
	if err != nil {
		t.Fatalf("ParseEndpoint(%q), the String of %#v: %v", s, e, err)
	}
	want := e
	want.Addr, _ = normalAddr(e.Addr)
	if !equalEndpoint(back, want) {
		t.Fatalf("%#v written as %q reads back as %#v", e, s, back)
	}
	if len(e.Metadata) == 0 && s != e.Addr {
		t.Fatalf("%#v, without metadata, written as %q: want the plain address", e, s)
	}
}

// FuzzParseEndpoint parses any value: no panic; what it accepts has a
// normal address, which for a plain value is the value's, its host's case
// or IP spelling and its port's leading zeros aside; other spellings of
// that address read as the same; and the endpoint's String reads back as
// the same endpoint.
func FuzzParseEndpoint(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzParseEndpoint.
	f.Fuzz(func(t *testing.T, value string) {
		e, err := ParseEndpoint(value)
		if err != nil {
			return
		}
		requireNormalAddr(t, e.Addr)
		if v := strings.TrimSpace(value); !strings.HasPrefix(v, "{") {
			if e.Metadata != nil || !sameAddr(v, e.Addr) {
				t.Fatalf("plain value %q read as %#v", value, e)
			}
		}
		requireRoundTrip(t, e)
		host, port, _ := net.SplitHostPort(e.Addr)
		before, zone, hasZone := strings.Cut(host, "%")
		if hasZone {
			zone = "%" + zone // a zone is an interface's name, which has a case
		}
		other := net.JoinHostPort(upperASCII(before)+zone, "0"+port)
		if got, err := ParseEndpoint(other); err != nil || got.Addr != e.Addr {
			t.Fatalf("%q, another spelling of %q, reads as %q (%v)", other, e.Addr, got.Addr, err)
		}
	})
}

// upperASCII returns s with its ASCII letters in upper case.
func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// sameAddr reports whether the normal address n is a, by the rules that
// normalAddr documents.
func sameAddr(a, n string) bool {
	ah, ap, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	nh, np, _ := net.SplitHostPort(n)
	if p, err := strconv.ParseUint(ap, 10, 16); err != nil || strconv.FormatUint(p, 10) != np {
		return false
	}
	if ip, err := netip.ParseAddr(ah); err == nil {
		return ip.Unmap().String() == nh
	}
	return len(ah) == len(nh) && strings.EqualFold(ah, nh)
}

// FuzzEndpointString writes any endpoint whose address ParseEndpoint
// accepts, with any metadata of valid UTF-8 (JSON's strings), and reads it
// back.
func FuzzEndpointString(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzEndpointString.
	f.Fuzz(func(t *testing.T, addr, key, value string) {
		if _, err := normalAddr(addr); err != nil {
			return
		}
		e := Endpoint{Addr: addr}
		if key != "" || value != "" {
			if !utf8.ValidString(addr) || !utf8.ValidString(key) || !utf8.ValidString(value) {
				return // JSON has no other strings: see the README
			}
			e.Metadata = map[string]string{key: value}
		}
		requireRoundTrip(t, e)
		// The JSON form is JSON.
		if s := e.String(); len(e.Metadata) > 0 && !json.Valid([]byte(s)) {
			t.Fatalf("%#v written as invalid JSON %q", e, s)
		}
	})
}

// fuzzValues are member values the resolver gets: usable addresses, some
// the same, some spelt otherwise, JSON with and without metadata, and
// unusable ones.
var fuzzValues = []string{
	"10.0.0.1:80", "10.0.0.2:80", " 10.0.0.1:80 ", "[::1]:80", "10.0.0.1:080", "[::ffff:10.0.0.2]:80",
	`{"addr":"10.0.0.1:80","metadata":{"zone":"a"}}`, `{"addr":"10.0.0.3:80","metadata":{"zone":"b"}}`,
	`{"addr":"10.0.0.3:80"}`, "", "garbage", "10.0.0.1", `{"addr":`, "\xff\xfe:80",
}

// countingHandler counts the records logged at Warn and above.
type countingHandler struct {
	slog.Handler
	warnings *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warnings.Add(1)
	}
	return nil
}

func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

// FuzzResolverUpdate writes any sequence of changes to a group in a real
// etcd: members joining, changing their values, leaving, registering again,
// and keys beside them that are not members. Now and then, a resolver
// follows its Watcher's view, and what gRPC is told then is checked
// against the group that one Get reads at that revision: the members'
// usable addresses, oldest first, each once, with their metadata; nothing
// when they did not change; never an empty list, but one error when no
// member is usable; and one warning per unusable value that is new.
func FuzzResolverUpdate(f *testing.F) {
	cluster := etcdtest.Start(f, 1)
	// The writes share a client, which connects at its first request:
	// before the leak checks. Each Watcher has a client of its own, which
	// its Close closes: the shared client's watch streams could outlive
	// one input's leak check.
	client := cluster.Client(f)
	if _, err := client.Get(context.Background(), "/r/"); err != nil {
		f.Fatal(err)
	}
	var inputs atomic.Int64
	// Seeds: testdata/fuzz/FuzzResolverUpdate.
	f.Fuzz(func(t *testing.T, data []byte) {
		leakcheck.VerifyNoLeaks(t)
		in := fuzzbytes.New(data)
		ctx := context.Background()
		prefix := fmt.Sprintf("/r/%06d/", inputs.Add(1))
		// Deletes from outside are losses: held as suspects, they would
		// stay in the lists for a while (massloss_test.go tests that).
		w, err := biregister.NewWatcher(cluster.Endpoints(), prefix, 5, biregister.WithoutProtection())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		rec := newRecorder()
		var warnings atomic.Int64
		logger := slog.New(countingHandler{warnings: &warnings})
		b := NewBuilder(w, WithLogger(logger)).(*builder)
		r := &watchResolver{w: w, g: b.group, cc: rec, logger: logger}

		var pushed []Endpoint                  // what gRPC holds
		reported := false                      // the group's emptiness was reported since
		prev := map[string]biregister.Member{} // the group when the resolver last looked
		for step := 0; step < 10 && (step == 0 || !in.Empty()); step++ {
			rev := fuzzChanges(t, client, prefix, in)
			if !in.Empty() && in.Bool(4) {
				continue // the resolver looks at the next changes with these
			}
			waitView(t, w, rev)
			resp, err := client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
			if err != nil {
				t.Fatal(err)
			}
			var members []biregister.Member
			for _, kv := range resp.Kvs {
				if name := string(kv.Key[len(prefix):]); name != "" && !strings.Contains(name, "/") {
					members = append(members, biregister.Member{Name: name, Value: string(kv.Value), CreateRevision: kv.CreateRevision})
				}
			}
			slices.SortFunc(members, func(a, b biregister.Member) int {
				return cmp.Or(cmp.Compare(a.CreateRevision, b.CreateRevision), cmp.Compare(a.Name, b.Name))
			})
			var want []Endpoint
			seen := map[string]bool{}
			var newBad int64
			for _, m := range members {
				e, err := ParseEndpoint(m.Value)
				if err != nil && prev[m.Name] != m {
					newBad++
				}
				if err == nil && !seen[e.Addr] {
					seen[e.Addr] = true
					want = append(want, e)
				}
			}
			before := warnings.Load()
			r.update(r.g.current())
			if got := warnings.Load() - before; got-boolInt(len(want) == 0 && !reported) != newBad {
				t.Fatalf("step %d: %d warnings, want one per new unusable value (%d)", step, got, newBad)
			}
			prev = map[string]biregister.Member{}
			for _, m := range members {
				prev[m.Name] = m
			}
			var events []any
			for len(rec.events) > 0 {
				events = append(events, <-rec.events)
			}
			switch {
			case len(want) == 0 && reported:
				if len(events) != 0 {
					t.Fatalf("step %d: told gRPC %v again about an unusable group", step, events)
				}
			case len(want) == 0:
				if len(events) != 1 || events[0] != errNoMembers {
					t.Fatalf("step %d: told gRPC %v, want the error %v", step, events, errNoMembers)
				}
				reported = true
			case !reported && pushed != nil && equalEndpoints(want, pushed):
				if len(events) != 0 {
					t.Fatalf("step %d: told gRPC %v, though nothing changed", step, events)
				}
			default:
				if len(events) != 1 {
					t.Fatalf("step %d: told gRPC %v, want one state", step, events)
				}
				state, ok := events[0].(resolver.State)
				if !ok {
					t.Fatalf("step %d: told gRPC %v, want a state", step, events[0])
				}
				got := stateEndpoints(t, state)
				if !equalEndpoints(got, want) {
					t.Fatalf("step %d: gRPC got %v, want %v", step, got, want)
				}
				pushed, reported = want, false
			}
		}
	})
}

// fuzzChanges writes the changes of one step of FuzzResolverUpdate to the
// group under prefix, in as few transactions as etcd takes (one touches a
// key once), and returns the revision after them.
func fuzzChanges(t *testing.T, client *clientv3.Client, prefix string, in *fuzzbytes.Reader) int64 {
	t.Helper()
	var rev int64
	var ops []clientv3.Op
	keys := map[string]bool{}
	commit := func() {
		if len(ops) == 0 {
			return
		}
		resp, err := client.Txn(context.Background()).Then(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		rev, ops = resp.Header.Revision, nil
		clear(keys)
	}
	add := func(key string, op clientv3.Op) {
		if keys[key] {
			commit()
		}
		keys[key] = true
		ops = append(ops, op)
	}
	value := func() string {
		if in.Bool(8) {
			return in.String(24)
		}
		return fuzzbytes.Pick(in, fuzzValues...)
	}
	for range in.Intn(6) {
		// Names that share a create revision sort by name; "" is the
		// prefix's own key, and names with '/' are deeper keys: neither
		// is a member.
		key := prefix + fuzzbytes.Pick(in, "a", "b", "c", "d", "\xff", "", "sub/x")
		if in.Bool(8) {
			key = prefix + in.String(4)
		}
		switch in.Intn(6) {
		case 0:
			add(key, clientv3.OpDelete(key))
		case 1:
			// Registering again: a new create revision, maybe the same value.
			add(key, clientv3.OpDelete(key))
			commit()
			add(key, clientv3.OpPut(key, value()))
		default:
			add(key, clientv3.OpPut(key, value()))
		}
	}
	commit()
	if rev == 0 {
		// Nothing written: a step that changes nothing still moves the
		// revision, as a progress notification does.
		resp, err := client.Put(context.Background(), prefix+"sub/y", "")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	return rev
}

// waitView waits until w's view reflects revision rev.
func waitView(t testing.TB, w biregister.Watcher, rev int64) {
	t.Helper()
	deadline := time.After(eventTimeout)
	for v := w.View(); v.Revision() < rev; v = w.View() {
		select {
		case <-v.Updated():
		case <-deadline:
			t.Fatalf("the Watcher never saw revision %d", rev)
		}
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func equalEndpoints(a, b []Endpoint) bool {
	return slices.EqualFunc(a, b, equalEndpoint)
}

// equalEndpoint reports whether a and b resolve to the same gRPC endpoint.
func equalEndpoint(a, b Endpoint) bool {
	return a.Addr == b.Addr && maps.Equal(a.Metadata, b.Metadata)
}

// stateEndpoints returns the endpoints of state, checking that its
// Addresses, for older policies, are the same.
func stateEndpoints(t *testing.T, state resolver.State) []Endpoint {
	t.Helper()
	if len(state.Addresses) != len(state.Endpoints) {
		t.Fatalf("%d addresses for %d endpoints", len(state.Addresses), len(state.Endpoints))
	}
	var got []Endpoint
	for i, re := range state.Endpoints {
		if len(re.Addresses) != 1 || re.Addresses[0].Addr != state.Addresses[i].Addr {
			t.Fatalf("endpoint %d: %v, address %v", i, re.Addresses, state.Addresses[i])
		}
		got = append(got, Endpoint{Addr: re.Addresses[0].Addr, Metadata: Metadata(re)})
	}
	return got
}

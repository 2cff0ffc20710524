// Fuzzing what comes from the group's members: endpoint values, parsed and
// written back, and the resolver's update from any list of members.

package grpcresolver

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/fuzzbytes"
)

// requireValidAddr fails t unless addr is what checkAddr documents: a
// host:port, the host non-empty, the port a number that fits 16 bits.
func requireValidAddr(t *testing.T, addr string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		t.Fatalf("accepted address %q is not host:port (%v)", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		t.Fatalf("accepted address %q has no valid port", addr)
	}
}

// requireRoundTrip fails t unless what e.String writes, ParseEndpoint reads
// back as e.
func requireRoundTrip(t *testing.T, e Endpoint) {
	t.Helper()
	s := e.String()
	back, err := ParseEndpoint(s)
	if err != nil {
		t.Fatalf("ParseEndpoint(%q), the String of %#v: %v", s, e, err)
	}
	if !back.equal(e) {
		t.Fatalf("%#v written as %q reads back as %#v", e, s, back)
	}
	if len(e.Metadata) == 0 && s != e.Addr {
		t.Fatalf("%#v, without metadata, written as %q: want the plain address", e, s)
	}
}

// FuzzParseEndpoint parses any value: no panic; what it accepts has a
// valid address, a plain value is its own address, and the endpoint's
// String reads back as the same endpoint.
func FuzzParseEndpoint(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzParseEndpoint.
	f.Fuzz(func(t *testing.T, value string) {
		e, err := ParseEndpoint(value)
		if err != nil {
			return
		}
		requireValidAddr(t, e.Addr)
		if v := strings.TrimSpace(value); !strings.HasPrefix(v, "{") && (e.Addr != v || e.Metadata != nil) {
			t.Fatalf("plain value %q read as %#v", value, e)
		}
		requireRoundTrip(t, e)
	})
}

// FuzzEndpointString writes any endpoint whose address ParseEndpoint
// accepts, with any metadata of valid UTF-8 (JSON's strings), and reads it
// back.
func FuzzEndpointString(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzEndpointString.
	f.Fuzz(func(t *testing.T, addr, key, value string) {
		if checkAddr(addr) != nil {
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
// the same, JSON with and without metadata, and unusable ones.
var fuzzValues = []string{
	"10.0.0.1:80", "10.0.0.2:80", " 10.0.0.1:80 ", "[::1]:80",
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

// FuzzResolverUpdate gives the resolver any sequence of member lists, as
// its Watcher's snapshots, and checks what gRPC is told after each: the
// members' usable addresses, oldest first, each once, with their metadata;
// nothing when they did not change; never an empty list, but one error
// when no member is usable; and one warning per unusable value that is
// new.
func FuzzResolverUpdate(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzResolverUpdate.
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzbytes.New(data)
		rec := newRecorder()
		var warnings atomic.Int64
		r := &watchResolver{cc: rec, logger: slog.New(countingHandler{warnings: &warnings})}
		var pushed []Endpoint       // what gRPC holds
		reported := false           // the group's emptiness was reported since
		prev := map[string]string{} // the previous list's values, by name
		for step := 0; step < 50 && (step == 0 || !in.Empty()); step++ {
			n := in.Intn(7)
			var members []biregister.Member
			var want []Endpoint
			seen, names := map[string]bool{}, map[string]bool{}
			var newBad int64
			for i := range n {
				name := fuzzbytes.Pick(in, "a", "b", "c", "d", "\xff", "")
				if in.Bool(4) {
					name = in.String(4)
				}
				if names[name] {
					continue // a snapshot holds a name once
				}
				names[name] = true
				value := fuzzbytes.Pick(in, fuzzValues...)
				if in.Bool(8) {
					value = in.String(24)
				}
				members = append(members, biregister.Member{Name: name, Value: value, CreateRevision: int64(i + 1)})
				e, err := ParseEndpoint(value)
				if old, ok := prev[name]; err != nil && (!ok || old != value) {
					newBad++
				}
				if err == nil && !seen[e.Addr] {
					seen[e.Addr] = true
					want = append(want, e)
				}
			}
			before := warnings.Load()
			r.update(members)
			if got := warnings.Load() - before; got-boolInt(len(want) == 0 && !reported) != newBad {
				t.Fatalf("step %d: %d warnings, want one per new unusable value (%d)", step, got, newBad)
			}
			prev = map[string]string{}
			for _, m := range members {
				prev[m.Name] = m.Value
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

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func equalEndpoints(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].equal(b[i]) {
			return false
		}
	}
	return true
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

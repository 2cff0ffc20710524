package grpcresolver

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
)

var (
	// errNoMembers is reported while no member has a usable address.
	errNoMembers = errors.New("grpcresolver: the group has no member with a usable address")
	// errWatcherClosed is reported when the Watcher closes under a resolver.
	errWatcherClosed = fmt.Errorf("grpcresolver: watcher of the group: %w", biregister.ErrClosed)
)

// watchResolver follows a Watcher's group for one gRPC client.
type watchResolver struct {
	w         biregister.Watcher
	cc        resolver.ClientConn
	logger    *slog.Logger
	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when run has returned
	closeOnce sync.Once

	// Owned by run.
	pushed []Endpoint        // the last list given to gRPC; nil before the first
	empty  bool              // errNoMembers was reported after the last list
	parsed map[string]parsed // by member name, its value when last seen
}

// parsed is a member's value and what ParseEndpoint made of it.
type parsed struct {
	value    string
	endpoint Endpoint
	err      error
}

// run pushes the group to gRPC whenever it changes, until Close or until
// the Watcher closes.
func (r *watchResolver) run() {
	defer close(r.done)
	for {
		// Updated before Members: a change made between the two closes the
		// channel waited on below, so none is ever missed.
		updated := r.w.Updated()
		members := r.w.Members()
		// A closed Watcher reads as an empty group: it is reported as closed
		// instead. It publishes that empty group just before Closed, so
		// update may see it first, which only reports an error too.
		if len(members) == 0 && r.watcherClosed() {
			return
		}
		r.update(members)
		select {
		case <-updated:
		case <-r.w.Closed():
			r.watcherClosed()
			return
		case <-r.stop:
			return
		}
	}
}

// watcherClosed reports whether the Watcher is closed, and then tells gRPC,
// which keeps the last addresses.
func (r *watchResolver) watcherClosed() bool {
	select {
	case <-r.w.Closed():
	default:
		return false
	}
	r.logger.Warn("grpcresolver: watcher closed, keeping the last addresses")
	r.cc.ReportError(errWatcherClosed)
	return true
}

// update gives gRPC the members' endpoints if they changed. It never gives
// it an empty list: see the package documentation.
func (r *watchResolver) update(members []biregister.Member) {
	endpoints := r.endpoints(members)
	if len(endpoints) == 0 {
		if !r.empty {
			r.empty = true
			r.logger.Warn("grpcresolver: no member with a usable address, keeping the last addresses", "members", len(members))
			r.cc.ReportError(errNoMembers)
		}
		return
	}
	// Progress notifications and other keys' events publish snapshots too;
	// gRPC hears only of real changes. After an error it hears the list
	// again, though it would still use the old one.
	if !r.empty && r.pushed != nil && slices.EqualFunc(endpoints, r.pushed, Endpoint.equal) {
		return
	}
	r.empty = false
	r.pushed = endpoints
	state := resolver.State{
		Endpoints: make([]resolver.Endpoint, len(endpoints)),
		// Addresses too, for policies written before Endpoints existed.
		Addresses: make([]resolver.Address, len(endpoints)),
	}
	for i, e := range endpoints {
		state.Endpoints[i] = e.resolverEndpoint()
		state.Addresses[i] = resolver.Address{Addr: e.Addr}
	}
	// An error asks a polling resolver to poll again; this one hears of
	// every change anyway.
	if err := r.cc.UpdateState(state); err != nil {
		r.logger.Debug("grpcresolver: gRPC rejected the addresses", "err", err)
	}
}

// endpoints parses the members' values, oldest member first. It skips the
// unusable ones, logged once per value, and the addresses that an older
// member already has: a restarted server may be registered twice until its
// old lease expires. A value is parsed only when it is new: the Watcher
// publishes the whole group for every change.
func (r *watchResolver) endpoints(members []biregister.Member) []Endpoint {
	endpoints := make([]Endpoint, 0, len(members))
	seen := make(map[string]bool, len(members))
	// Built anew, so that members that left are forgotten, and are logged
	// again if they come back broken.
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

// ResolveNow does nothing: the Watcher's cache is always current.
func (r *watchResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops following the group and waits until the goroutine is gone.
func (r *watchResolver) Close() {
	r.closeOnce.Do(func() { close(r.stop) })
	<-r.done
}

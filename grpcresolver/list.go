// The list of endpoints handed to gRPC, and how a change makes the next one.

package grpcresolver

import (
	"slices"

	"google.golang.org/grpc/resolver"
)

// list is one list of endpoints for gRPC, oldest member first. Its
// endpoints never change once made, so resolvers hand them to gRPC, and
// keep them, without copying them.
type list struct {
	// places are those of each endpoint's member, read and written under
	// the group's mu: a member that registers again where its list
	// position stays moves its place, and nothing else.
	places    []place
	endpoints []resolver.Endpoint
	// addresses are the endpoints' addresses, for load-balancing policies
	// that read no Endpoints (those built on gRPC's balancer/base).
	addresses []resolver.Address
}

func (l *list) len() int { return len(l.places) }

// resolverState returns l as the State gRPC takes.
func (l *list) resolverState() resolver.State {
	return resolver.State{Endpoints: l.endpoints, Addresses: l.addresses}
}

// edit returns the list l becomes without the endpoints of the places
// removed and with added, each sorted by place, and the range of positions
// between the first change and the last: before and after it, a list as
// long as l holds what l holds. gRPC takes a whole list, so the new one is
// a copy, made of the runs of l between the changes.
func (l *list) edit(removed []place, added []*holder) (next *list, lo, hi int) {
	n := l.len() - len(removed) + len(added)
	next = &list{
		places:    make([]place, 0, n),
		endpoints: make([]resolver.Endpoint, 0, n),
		addresses: make([]resolver.Address, 0, n),
	}
	from := 0
	copyTo := func(to int) {
		next.places = append(next.places, l.places[from:to]...)
		next.endpoints = append(next.endpoints, l.endpoints[from:to]...)
		next.addresses = append(next.addresses, l.addresses[from:to]...)
		from = to
	}
	search := func(p place) int {
		at, _ := slices.BinarySearchFunc(l.places[from:], p, place.compare)
		return from + at
	}
	lo = -1
	for len(removed) > 0 || len(added) > 0 {
		if lo < 0 {
			lo = len(next.places)
		}
		// An endpoint added in the place of one removed goes first, and
		// the removed one is skipped right after.
		if len(added) > 0 && (len(removed) == 0 || added[0].place.compare(removed[0]) <= 0) {
			h := added[0]
			added = added[1:]
			copyTo(search(h.place))
			next.places = append(next.places, h.place)
			next.endpoints = append(next.endpoints, h.resolved)
			next.addresses = append(next.addresses, h.resolved.Addresses[0])
			continue
		}
		copyTo(search(removed[0]))
		from++
		removed = removed[1:]
	}
	hi = len(next.places)
	copyTo(l.len())
	return next, max(lo, 0), hi
}

// sameEndpoints reports whether a and b resolve alike.
func sameEndpoints(a, b []resolver.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y resolver.Endpoint) bool {
		return x.Addresses[0].Addr == y.Addresses[0].Addr && x.Attributes.Equal(y.Attributes)
	})
}

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

// resolverState returns l as the State gRPC takes. Its slices end where
// their arrays do: the next list may append to them (see edit).
func (l *list) resolverState() resolver.State {
	return resolver.State{Endpoints: slices.Clip(l.endpoints), Addresses: slices.Clip(l.addresses)}
}

// edit returns the list l becomes without the endpoints of the places
// removed and with added, each sorted by place, and the range of positions
// between the first change and the last: before and after it, a list as
// long as l holds what l holds. Members that join after the youngest, the
// most common change, are appended in the room the arrays have: only the
// current list is ever edited, so nothing else writes there. Otherwise
// gRPC, which takes a whole list, gets a copy, made of the runs of l
// between the changes.
func (l *list) edit(removed []place, added []*holder) (next *list, lo, hi int) {
	if len(removed) == 0 && (l.len() == 0 || l.places[l.len()-1].compare(added[0].place) < 0) {
		next = &list{places: l.places, endpoints: l.endpoints, addresses: l.addresses}
		next.add(added...)
		return next, l.len(), next.len()
	}
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
		if lo < 0 {
			lo = next.len()
		}
	}
	search := func(p place) int {
		at, _ := slices.BinarySearchFunc(l.places[from:], p, place.compare)
		return from + at
	}
	lo = -1
	for len(removed) > 0 || len(added) > 0 {
		// An endpoint added in the place of one removed goes first, and
		// the removed one is skipped right after.
		if len(added) > 0 && (len(removed) == 0 || added[0].place.compare(removed[0]) <= 0) {
			copyTo(search(added[0].place))
			next.add(added[0])
			added = added[1:]
			continue
		}
		copyTo(search(removed[0]))
		from++
		removed = removed[1:]
	}
	hi = next.len()
	copyTo(l.len())
	return next, lo, hi
}

// add appends the endpoints of holders.
func (l *list) add(holders ...*holder) {
	for _, h := range holders {
		l.places = append(l.places, h.place)
		l.endpoints = append(l.endpoints, h.resolved)
		l.addresses = append(l.addresses, h.resolved.Addresses[0])
	}
}

// sameEndpoints reports whether a and b resolve alike.
func sameEndpoints(a, b []resolver.Endpoint) bool { return slices.EqualFunc(a, b, sameEndpoint) }

// sameEndpoint reports whether x and y, endpoints of one address each,
// resolve alike.
func sameEndpoint(x, y resolver.Endpoint) bool {
	return x.Addresses[0].Addr == y.Addresses[0].Addr && x.Attributes.Equal(y.Attributes)
}

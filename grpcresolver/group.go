// The group as gRPC sees it: the usable endpoints of a Watcher's members,
// carried from one view to the next at a cost that grows with the change.

package grpcresolver

import (
	"cmp"
	"log/slog"
	"slices"
	"sync"

	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
)

// group is what a Builder's Watcher resolves to. The resolvers of one
// Builder share it: they follow one Watcher and so serve one list, worked
// out once for each view whoever asks first.
type group struct {
	w      biregister.Watcher // set by NewBuilder
	logger *slog.Logger       // set by NewBuilder

	mu sync.Mutex
	// Written under mu, by current.
	view   biregister.View     // the view served reflects
	byAddr map[string][]holder // the members that hold each usable address, oldest first
	served *list               // each address's oldest holder, oldest first
	// last is the last served list that was not empty, or nil: a resolver
	// that starts while the group reads empty, or after the Watcher closed,
	// starts from it (a channel that went idle builds a new resolver).
	last *list
}

// state is what a group resolves to at one view.
type state struct {
	view   biregister.View
	served *list // never nil
	last   *list // may be nil
}

// holder is a member whose value is a usable endpoint.
type holder struct {
	place    place
	resolved resolver.Endpoint // built once, when the value is parsed
}

// place is a member's place in the group's order: oldest first, by create
// revision, then by name.
type place struct {
	revision int64
	name     string
}

func placeOf(m biregister.Member) place { return place{m.CreateRevision, m.Name} }

func (p place) compare(o place) int {
	return cmp.Or(cmp.Compare(p.revision, o.revision), cmp.Compare(p.name, o.name))
}

// current brings the group up to the Watcher's view and returns it.
func (g *group) current() state {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Loaded under mu, so that the group only ever moves forward whichever
	// resolver asks.
	if v := g.w.View(); v != g.view {
		g.advance(v)
	}
	return state{view: g.view, served: g.served, last: g.last}
}

// advance moves the group from g.view to v. It parses only the members that
// changed, and makes a new served list only if an address's oldest holder
// changed or now resolves otherwise.
func (g *group) advance(v biregister.View) {
	old := g.view
	g.view = v
	put, gone := v.Diff(old)
	// The suspects are served with the members: lost, their servers may
	// well be alive (see biregister.Protection). A member that becomes a
	// suspect, or a suspect that registers again, is in both diffs.
	suspected, released := v.DiffSuspects(old)
	if len(put) == 0 && len(gone) == 0 && len(suspected) == 0 && len(released) == 0 {
		return
	}
	// The oldest holder of each address the changes touch, before them: a
	// copy, since drop and add move the holders.
	firstBefore := make(map[string]*holder)
	touch := func(addr string) {
		if _, ok := firstBefore[addr]; !ok {
			var was *holder
			if h := first(g.byAddr[addr]); h != nil {
				c := *h
				was = &c
			}
			firstBefore[addr] = was
		}
	}
	for _, m := range gone {
		g.drop(m, touch)
	}
	for _, m := range released {
		g.drop(m, touch)
	}
	for _, m := range put {
		// A new value in the same place: gone does not list the old one.
		if o, ok := old.Member(m.Name); ok && o.CreateRevision == m.CreateRevision {
			g.drop(o, touch)
		}
		g.add(m, touch)
	}
	for _, m := range suspected {
		if _, err := ParseEndpoint(m.Value); err == nil { // logged as a member
			g.add(m, touch)
		}
	}
	var removed []place
	var added []*holder
	for addr, was := range firstBefore {
		now := first(g.byAddr[addr])
		if was != nil && now != nil && was.place == now.place && sameEndpoint(was.resolved, now.resolved) {
			continue
		}
		if was != nil {
			removed = append(removed, was.place)
		}
		if now != nil {
			added = append(added, now)
		}
	}
	if len(removed) == 0 && len(added) == 0 {
		return
	}
	slices.SortFunc(removed, place.compare)
	slices.SortFunc(added, func(a, b *holder) int { return a.place.compare(b.place) })
	next, lo, hi := g.served.edit(removed, added)
	if next.len() == g.served.len() && sameEndpoints(next.endpoints[lo:hi], g.served.endpoints[lo:hi]) {
		// Members moved, and the list reads the same: a server registered
		// again, say. gRPC need not hear of it.
		g.served.places = next.places
		return
	}
	g.served = next
	if g.served.len() > 0 {
		g.last = g.served
	}
}

// drop forgets m, which the group held, if its value is usable. Parsing the
// value again finds its address: keeping each member's address by name
// would cost a map as big as the group.
func (g *group) drop(m biregister.Member, touch func(addr string)) {
	e, err := ParseEndpoint(m.Value)
	if err != nil {
		return
	}
	touch(e.Addr)
	holders := g.byAddr[e.Addr]
	i, found := slices.BinarySearchFunc(holders, placeOf(m), holderAt)
	if !found {
		return
	}
	if len(holders) == 1 {
		delete(g.byAddr, e.Addr)
		return
	}
	g.byAddr[e.Addr] = slices.Delete(holders, i, i+1)
}

// add takes m, which is new or has a new value, and logs it if its value is
// not usable: only a new value is ever parsed here, so each is logged once.
func (g *group) add(m biregister.Member, touch func(addr string)) {
	e, err := ParseEndpoint(m.Value)
	if err != nil {
		g.logger.Warn("grpcresolver: skipping a member whose value is not an endpoint",
			"name", m.Name, "value", m.Value, "err", err)
		return
	}
	touch(e.Addr)
	if g.byAddr == nil {
		g.byAddr = make(map[string][]holder)
	}
	holders := g.byAddr[e.Addr]
	i, _ := slices.BinarySearchFunc(holders, placeOf(m), holderAt)
	g.byAddr[e.Addr] = slices.Insert(holders, i, holder{place: placeOf(m), resolved: e.resolverEndpoint()})
}

func holderAt(h holder, p place) int { return h.place.compare(p) }

// first returns the oldest of holders, or nil.
func first(holders []holder) *holder {
	if len(holders) == 0 {
		return nil
	}
	return &holders[0]
}

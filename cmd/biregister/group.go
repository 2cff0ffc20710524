// The group as of the last change watch printed, which may be far behind
// the live cache when the output is slow: who leads it, with which term.

package main

import (
	"container/heap"

	"github.com/biregister/biregister"
)

// group is the group as watch printed it: the last table, and the changes
// printed since. Only watch's goroutine uses it.
type group struct {
	w       biregister.Watcher
	members map[string]int64 // create revision by name
	ages    places           // every member's place, and places of members gone since
	leader  place            // the leader last printed; the zero place for none
	// table is the read of the cache that the last table printed; changes
	// at or below its revision are in it (see shown).
	table *reading
	// skipping reports whether changes may still come that the table shows.
	skipping bool
	// lookup is the latest read of the cache, for the create revisions
	// that changes do not carry (see created).
	lookup *reading
}

// newGroup reads the group from w's cache, as its table will show it.
func newGroup(w biregister.Watcher) *group {
	g := &group{w: w}
	g.reset(read(w, nil))
	return g
}

// reread reads the group again from w's cache, after a RESYNC, and returns
// the read, for the table.
func (g *group) reread() *reading {
	g.reset(read(g.w, g.lookup))
	return g.table
}

// reset makes r the table, and the group as it shows it.
func (g *group) reset(r *reading) {
	g.table, g.lookup = r, r
	g.skipping = true
	g.members = make(map[string]int64, len(r.members))
	g.ages = make(places, len(r.members))
	for i, m := range r.members {
		g.members[m.Name] = m.CreateRevision
		g.ages[i] = place{created: m.CreateRevision, name: m.Name}
	}
	heap.Init(&g.ages)
	g.leader = g.oldest()
}

// shown reports whether the table shows c already, so that it is not
// printed: c is at or below the table's revision, and no listing of the
// group came that the table does not surely hold. The first change that is
// not shown ends those that may be: a change above the table's revision
// has every later one above it too, and after a listing, etcd may have been
// replaced or restored to an older revision, whose revisions tell nothing
// of the table's.
func (g *group) shown(c biregister.Change) bool {
	if g.skipping && c.Revision <= g.table.revision && g.w.Status().Listings <= g.table.covers {
		return true
	}
	g.skipping = false
	return false
}

// apply applies a PUT or DELETE to the group, and reports whether it
// made another member the leader, or none.
func (g *group) apply(c biregister.Change) bool {
	switch c.Op {
	case biregister.OpPut:
		if _, ok := g.members[c.Name]; !ok {
			created := g.created(c)
			g.members[c.Name] = created
			heap.Push(&g.ages, place{created: created, name: c.Name})
		}
	case biregister.OpDelete:
		delete(g.members, c.Name)
		if len(g.ages) > 2*len(g.members)+64 {
			g.compact()
		}
	}
	oldest := g.oldest()
	if oldest == g.leader {
		return false
	}
	g.leader = oldest
	return true
}

// created returns the create revision of the member that c, a PUT, adds.
// A member that registers is created by its PUT, but a PUT that a listing
// of the group delivers (etcd replaced, a watch restarted) is at the
// listing's revision: the cache knows its create revision, if the read of
// it is recent enough (see reading.covers).
func (g *group) created(c biregister.Change) int64 {
	if closed(g.lookup.replaced) && g.w.Status().Listings > g.lookup.covers {
		g.lookup = read(g.w, g.lookup)
	}
	if c.Revision > g.lookup.revision {
		return c.Revision // after the read: a member that registers
	}
	if created, ok := g.lookup.index()[c.Name]; ok && created <= c.Revision {
		return created
	}
	return c.Revision
}

// oldest returns the place of the leader, the oldest member, or the zero
// place for none. Places of members gone are dropped as they come first.
func (g *group) oldest() place {
	for len(g.ages) > 0 {
		first := g.ages[0]
		if created, ok := g.members[first.name]; ok && created == first.created {
			return first
		}
		heap.Pop(&g.ages)
	}
	return place{}
}

// compact drops the places of members gone, once they outnumber the
// members.
func (g *group) compact() {
	clear(g.ages)
	g.ages = g.ages[:0]
	for name, created := range g.members {
		g.ages = append(g.ages, place{created: created, name: name})
	}
	heap.Init(&g.ages)
}

// place is where a member stands in the order of leadership.
type place struct {
	created int64
	name    string
}

// places is a heap of places, the leader's first: the oldest, and of those
// created together the first by name, as the library orders them.
type places []place

func (p places) Len() int { return len(p) }
func (p places) Less(i, j int) bool {
	if p[i].created != p[j].created {
		return p[i].created < p[j].created
	}
	return p[i].name < p[j].name
}
func (p places) Swap(i, j int) { p[i], p[j] = p[j], p[i] }
func (p *places) Push(x any)   { *p = append(*p, x.(place)) }
func (p *places) Pop() any {
	old := *p
	last := old[len(old)-1]
	old[len(old)-1] = place{}
	*p = old[:len(old)-1]
	return last
}

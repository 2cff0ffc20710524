package biregister

import (
	"cmp"
	"iter"
	"slices"
	"sort"
)

// byCreate is a persistent B+tree of members in ascending create revision:
// the leader is its first member. Every update copies only the path it
// changes, so a snapshot costs O(log n) per change, and the next leader is
// found by walking down the left edge, never by a scan.
//
// Members only ever join at the young end (a key created now has the highest
// revision yet), so push appends along the right edge and nodes fill up
// completely; a departure just shrinks its leaf, and nothing is rebalanced.
// A full listing rebuilds the tree compactly (build).
type byCreate struct {
	root    *orderNode
	size    int
	lastRev int64 // at least the highest create revision in the tree
}

// orderNode is a leaf (members) or an inner node (children). It is immutable
// once a snapshot that reaches it has been published.
type orderNode struct {
	members  []Member
	children []*orderNode
	// lows[i] is a lower bound of the create revisions under children[i], and
	// lows[i+1] an upper bound: enough to find the child a revision is in.
	lows []int64
}

// orderFanout is the size of a full node: large enough for a shallow tree
// (three levels hold 262,144 members), small enough that copying the nodes
// on one path stays cheap.
const orderFanout = 64

func (n *orderNode) leaf() bool { return n.children == nil }

func (t byCreate) first() (Member, bool) {
	n := t.root
	if n == nil {
		return Member{}, false
	}
	for !n.leaf() {
		n = n.children[0]
	}
	return n.members[0], true
}

// all yields the members in ascending create revision.
func (t byCreate) all() iter.Seq[Member] {
	return func(yield func(Member) bool) { t.root.each(yield) }
}

func (n *orderNode) each(yield func(Member) bool) bool {
	if n == nil {
		return true
	}
	if n.leaf() {
		for _, m := range n.members {
			if !yield(m) {
				return false
			}
		}
		return true
	}
	for _, c := range n.children {
		if !c.each(yield) {
			return false
		}
	}
	return true
}

// insert returns the tree with m added.
func (t byCreate) insert(m Member) byCreate {
	if t.root != nil && m.CreateRevision <= t.lastRev {
		// Not the youngest: cannot happen with events in revision order, but
		// a rebuild keeps the tree right whatever comes.
		members := slices.AppendSeq(make([]Member, 0, t.size+1), t.all())
		i, _ := slices.BinarySearchFunc(members, m.CreateRevision, compareCreate)
		return buildByCreate(slices.Insert(members, i, m))
	}
	t.lastRev = m.CreateRevision
	t.size++
	if t.root == nil {
		t.root = &orderNode{members: []Member{m}}
		return t
	}
	root, split := t.root.push(m)
	if split != nil {
		root = &orderNode{children: []*orderNode{root, split}, lows: []int64{root.low(), m.CreateRevision}}
	}
	t.root = root
	return t
}

// push appends m at the young end; a full node returns a new sibling for its
// parent to take.
func (n *orderNode) push(m Member) (*orderNode, *orderNode) {
	if n.leaf() {
		if len(n.members) == orderFanout {
			return n, &orderNode{members: []Member{m}}
		}
		return &orderNode{members: append(slices.Clip(n.members), m)}, nil
	}
	last := len(n.children) - 1
	child, split := n.children[last].push(m)
	c := &orderNode{children: slices.Clone(n.children), lows: n.lows}
	c.children[last] = child
	if split == nil {
		return c, nil
	}
	if len(c.children) == orderFanout {
		return c, &orderNode{children: []*orderNode{split}, lows: []int64{m.CreateRevision}}
	}
	c.children = append(c.children, split)
	c.lows = append(slices.Clip(n.lows), m.CreateRevision)
	return c, nil
}

func (n *orderNode) low() int64 {
	if n.leaf() {
		return n.members[0].CreateRevision
	}
	return n.lows[0]
}

// remove returns the tree without the member created at revision.
func (t byCreate) remove(revision int64) byCreate {
	root, removed := t.root.remove(revision)
	if !removed {
		return t
	}
	for root != nil && !root.leaf() && len(root.children) == 1 {
		root = root.children[0]
	}
	t.root = root
	t.size--
	return t
}

func (n *orderNode) remove(revision int64) (*orderNode, bool) {
	if n == nil {
		return nil, false
	}
	if n.leaf() {
		i, found := slices.BinarySearchFunc(n.members, revision, compareCreate)
		switch {
		case !found:
			return n, false
		case len(n.members) == 1:
			return nil, true
		}
		return &orderNode{members: slices.Delete(slices.Clone(n.members), i, i+1)}, true
	}
	i := n.childFor(revision)
	if i < 0 {
		return n, false
	}
	child, removed := n.children[i].remove(revision)
	if !removed {
		return n, false
	}
	c := &orderNode{children: slices.Clone(n.children), lows: slices.Clone(n.lows)}
	if child != nil {
		c.children[i] = child
		return c, true
	}
	if len(c.children) == 1 {
		return nil, true
	}
	c.children = slices.Delete(c.children, i, i+1)
	c.lows = slices.Delete(c.lows, i, i+1)
	return c, true
}

// update returns the tree with the member created at m.CreateRevision
// replaced by m.
func (t byCreate) update(m Member) byCreate {
	if root, ok := t.root.update(m); ok {
		t.root = root
	}
	return t
}

func (n *orderNode) update(m Member) (*orderNode, bool) {
	if n == nil {
		return nil, false
	}
	if n.leaf() {
		i, found := slices.BinarySearchFunc(n.members, m.CreateRevision, compareCreate)
		if !found {
			return n, false
		}
		c := &orderNode{members: slices.Clone(n.members)}
		c.members[i] = m
		return c, true
	}
	i := n.childFor(m.CreateRevision)
	if i < 0 {
		return n, false
	}
	child, ok := n.children[i].update(m)
	if !ok {
		return n, false
	}
	c := &orderNode{children: slices.Clone(n.children), lows: n.lows}
	c.children[i] = child
	return c, true
}

// childFor returns the child whose range holds revision, or -1.
func (n *orderNode) childFor(revision int64) int {
	return sort.Search(len(n.lows), func(i int) bool { return n.lows[i] > revision }) - 1
}

// buildByCreate builds a compact tree of members, which must be in ascending
// create revision.
func buildByCreate(members []Member) byCreate {
	t := byCreate{size: len(members)}
	if len(members) == 0 {
		return t
	}
	t.lastRev = members[len(members)-1].CreateRevision
	var level []*orderNode
	for chunk := range slices.Chunk(members, orderFanout) {
		level = append(level, &orderNode{members: chunk})
	}
	for len(level) > 1 {
		var up []*orderNode
		for chunk := range slices.Chunk(level, orderFanout) {
			n := &orderNode{children: chunk, lows: make([]int64, len(chunk))}
			for i, c := range chunk {
				n.lows[i] = c.low()
			}
			up = append(up, n)
		}
		level = up
	}
	t.root = level[0]
	return t
}

func compareCreate(m Member, revision int64) int { return cmp.Compare(m.CreateRevision, revision) }

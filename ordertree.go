// The order index of a snapshot: a persistent B+tree of the members' places
// in create order, the leader first.

package biregister

import (
	"cmp"
	"iter"
	"slices"
	"sort"
)

// orderTree is a persistent B+tree of the members' places in ascending
// create revision, then name (keys created by one transaction share a
// revision): the leader is its first. Every update copies only the path it
// changes, so a snapshot costs O(log n) per change, and the next leader is
// found by walking down the left edge, never by a scan. It holds places, not
// members: a member's new value changes its place in nothing, so the most
// common event, a value change, leaves the tree alone, and the values live
// in the nameTrie only.
//
// Members nearly always join at the young end (a key created now has the
// highest revision yet), so push appends along the right edge and nodes fill
// up completely. The keys of one transaction share a revision and come in its
// order, not necessarily in name order: those that are not the youngest go in
// their place, in O(log n) too, a full leaf lending a place to a neighbour
// with room before it splits in halves. A departure just shrinks its leaf,
// and nothing is rebalanced. A full listing rebuilds the tree compactly
// (buildOrderTree).
type orderTree struct {
	root *orderNode
	size int
	last place // at least the place of the youngest member in the tree
}

// place is a member's place in the order.
type place struct {
	revision int64
	name     string
}

func placeOf(m Member) place { return place{m.CreateRevision, m.Name} }

// byPlace orders members oldest first: by create revision, then name.
func byPlace(a, b Member) int { return placeOf(a).compare(placeOf(b)) }

func (p place) compare(o place) int {
	if c := cmp.Compare(p.revision, o.revision); c != 0 {
		return c
	}
	return cmp.Compare(p.name, o.name)
}

// orderNode is a leaf (places) or an inner node (children). It is immutable
// once a snapshot that reaches it has been published.
type orderNode struct {
	places   []place
	children []*orderNode
	// lows[i] is a lower bound of the places under children[i], and
	// lows[i+1] an upper bound: enough to find the child a place is in.
	lows   []place
	madeBy *batch // the batch that made this node; see batch
}

// orderFanout is the size of a full node: large enough for a shallow tree
// (four levels hold 1,048,576 members), small enough that copying the nodes
// on one path stays cheap. 32 rather than 64 makes an event cheaper to
// apply (BenchmarkSnapshotApply; BENCHMARKS.md, "What changed"), for no
// measurable cost to reads.
const orderFanout = 32

func (n *orderNode) leaf() bool { return n.children == nil }

func (t orderTree) first() (place, bool) {
	n := t.root
	if n == nil {
		return place{}, false
	}
	for !n.leaf() {
		n = n.children[0]
	}
	return n.places[0], true
}

// all yields the places in ascending create revision.
func (t orderTree) all() iter.Seq[place] {
	return func(yield func(place) bool) { t.root.each(yield) }
}

func (n *orderNode) each(yield func(place) bool) bool {
	if n == nil {
		return true
	}
	if n.leaf() {
		for _, p := range n.places {
			if !yield(p) {
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

// insert returns the tree with p, which it must not hold, added; see batch
// for b.
func (t orderTree) insert(p place, b *batch) orderTree {
	t.size++
	if t.root == nil {
		t.root, t.last = &orderNode{places: []place{p}, madeBy: b}, p
		return t
	}
	var root, split *orderNode
	if p.compare(t.last) > 0 {
		t.last = p
		root, split = t.root.push(p, b)
	} else {
		root, split = t.root.insert(p, b)
	}
	if split != nil {
		root = &orderNode{children: []*orderNode{root, split}, lows: []place{root.low(), split.low()}, madeBy: b}
	}
	t.root = root
	return t
}

// push appends p at the young end; a full node returns a new sibling for its
// parent to take.
func (n *orderNode) push(p place, b *batch) (*orderNode, *orderNode) {
	if n.leaf() {
		if len(n.places) == orderFanout {
			return n, &orderNode{places: []place{p}, madeBy: b}
		}
		c := n.writable(b)
		c.places = append(c.places, p)
		return c, nil
	}
	last := len(n.children) - 1
	child, split := n.children[last].push(p, b)
	c := n.writable(b)
	c.children[last] = child
	if split == nil {
		return c, nil
	}
	if len(c.children) == orderFanout {
		return c, &orderNode{children: []*orderNode{split}, lows: []place{p}, madeBy: b}
	}
	c.children = append(c.children, split)
	c.lows = append(c.lows, p)
	return c, nil
}

// insert puts p in its place under n, copying the path to it; a full node
// splits in halves and returns the upper one for its parent to take. Only a
// place that is not the youngest comes here (push takes those): one of the
// keys a transaction created out of name order.
func (n *orderNode) insert(p place, b *batch) (*orderNode, *orderNode) {
	c := n.writable(b)
	if c.leaf() {
		i, _ := slices.BinarySearchFunc(c.places, p, place.compare)
		var split []place
		c.places, split = insertSplit(c.places, i, p)
		if split == nil {
			return c, nil
		}
		return c, &orderNode{places: split, madeBy: b}
	}
	// Below lows[0] if p is older than every place under n, or if a
	// departure raised lows[0]: the first child takes p, and its low goes down.
	i := max(c.childFor(p), 0)
	if p.compare(c.lows[i]) < 0 {
		c.lows[i] = p
	}
	if c.lend(i, b) {
		i = c.childFor(p)
	}
	child, split := c.children[i].insert(p, b)
	c.children[i] = child
	if split == nil {
		return c, nil
	}
	var children []*orderNode
	var lows []place
	c.children, children = insertSplit(c.children, i+1, split)
	c.lows, lows = insertSplit(c.lows, i+1, split.low())
	if children == nil {
		return c, nil
	}
	return c, &orderNode{children: children, lows: lows, madeBy: b}
}

// lend moves a place out of children[i], if it is a full leaf, into a
// neighbour with room: its last to the front of the next leaf, or its first
// to the end of the previous one. It reports whether it did. A leaf that
// splits is left half full; one that lends fills its neighbours first, so
// the keys of a transaction in descending name order fill their leaves as
// an append does.
func (n *orderNode) lend(i int, b *batch) bool {
	full := n.children[i]
	if !full.leaf() || len(full.places) < orderFanout {
		return false
	}
	switch {
	case i+1 < len(n.children) && len(n.children[i+1].places) < orderFanout:
		from, to := full.writable(b), n.children[i+1].writable(b)
		moved := from.places[len(from.places)-1]
		from.places = slices.Delete(from.places, len(from.places)-1, len(from.places))
		to.places = slices.Insert(to.places, 0, moved)
		n.children[i], n.children[i+1], n.lows[i+1] = from, to, moved
	case i > 0 && len(n.children[i-1].places) < orderFanout:
		from, to := full.writable(b), n.children[i-1].writable(b)
		to.places = append(to.places, from.places[0])
		from.places = slices.Delete(from.places, 0, 1)
		n.children[i-1], n.children[i], n.lows[i] = to, from, from.places[0]
	default:
		return false
	}
	return true
}

// insertSplit inserts e at i in s, which holds at most orderFanout elements.
// A full s splits first: it returns the lower half, e inserted in whichever
// half i falls in, and the upper half, in an array of its own; else s with e
// and nil.
func insertSplit[E any](s []E, i int, e E) ([]E, []E) {
	if len(s) < orderFanout {
		return slices.Insert(s, i, e), nil
	}
	half := len(s) / 2
	upper := make([]E, len(s)-half, orderFanout)
	copy(upper, s[half:])
	lower := s[:half]
	clear(s[half:]) // let what moved go, and keep nothing alive twice
	if i <= half {
		return slices.Insert(lower, i, e), upper
	}
	return lower, slices.Insert(upper, i-half, e)
}

// writable returns n itself if b made it, or else a copy that b owns, with
// arrays of its own: either may be changed at will. See batch.
func (n *orderNode) writable(b *batch) *orderNode {
	if b != nil && n.madeBy == b {
		return n
	}
	return &orderNode{
		places:   slices.Clone(n.places),
		children: slices.Clone(n.children),
		lows:     slices.Clone(n.lows),
		madeBy:   b,
	}
}

func (n *orderNode) low() place {
	if n.leaf() {
		return n.places[0]
	}
	return n.lows[0]
}

// remove returns the tree without p; see batch for b.
func (t orderTree) remove(p place, b *batch) orderTree {
	root, removed := t.root.remove(p, b)
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

func (n *orderNode) remove(p place, b *batch) (*orderNode, bool) {
	if n == nil {
		return nil, false
	}
	if n.leaf() {
		i, found := slices.BinarySearchFunc(n.places, p, place.compare)
		switch {
		case !found:
			return n, false
		case len(n.places) == 1:
			return nil, true
		}
		c := n.writable(b)
		c.places = slices.Delete(c.places, i, i+1)
		return c, true
	}
	i := n.childFor(p)
	if i < 0 {
		return n, false
	}
	child, removed := n.children[i].remove(p, b)
	if !removed {
		return n, false
	}
	if child == nil && len(n.children) == 1 {
		return nil, true
	}
	c := n.writable(b)
	switch {
	case child == nil:
		c.children = slices.Delete(c.children, i, i+1)
		c.lows = slices.Delete(c.lows, i, i+1)
	default:
		c.children[i] = child
	}
	return c, true
}

// childFor returns the child whose range holds p, or -1.
func (n *orderNode) childFor(p place) int {
	return sort.Search(len(n.lows), func(i int) bool { return n.lows[i].compare(p) > 0 }) - 1
}

// buildOrderTree builds a compact tree of places, which must be in order.
func buildOrderTree(places []place) orderTree {
	t := orderTree{size: len(places)}
	if len(places) == 0 {
		return t
	}
	t.last = places[len(places)-1]
	var tier []*orderNode
	for chunk := range slices.Chunk(places, orderFanout) {
		tier = append(tier, &orderNode{places: chunk})
	}
	for len(tier) > 1 {
		var up []*orderNode
		for chunk := range slices.Chunk(tier, orderFanout) {
			n := &orderNode{children: chunk, lows: make([]place, len(chunk))}
			for i, c := range chunk {
				n.lows[i] = c.low()
			}
			up = append(up, n)
		}
		tier = up
	}
	t.root = tier[0]
	return t
}

// placesOf returns the places of members.
func placesOf(members []Member) []place {
	places := make([]place, len(members))
	for i, m := range members {
		places[i] = placeOf(m)
	}
	return places
}

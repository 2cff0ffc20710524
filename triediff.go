// Comparing two name tries: what a re-listing changed in the cache.

package biregister

import "math/bits"

// diffTries returns the members of next that prev lacks or holds otherwise
// (another value or create revision), and the members of prev whose name
// next lacks or holds with another create revision, in no particular order.
// Two tries of the same names have the same shape (delete keeps it), so a
// re-listing that mostly equals the cache is compared node by node, each
// node's members in order, with no lookup per member. A big group's root
// slots are compared side by side.
func diffTries(prev, next nameTrie) (puts, gone []Member) {
	p, n := prev.root, next.root
	if p == n {
		return nil, nil // the same trie: views that share every member
	}
	if prev.size+next.size < parallelMin || p == nil || n == nil {
		diffNodes(p, n, 0, appendTo(&puts), appendTo(&gone))
		return puts, gone
	}
	slots := bitsOf(p.memberMap | p.childMap | n.memberMap | n.childMap)
	found := make([][2][]Member, len(slots))
	inParallel(len(slots), func(i int) {
		diffSlot(p, n, slots[i], 0, appendTo(&found[i][0]), appendTo(&found[i][1]))
	})
	for _, f := range found {
		puts, gone = append(puts, f[0]...), append(gone, f[1]...)
	}
	return puts, gone
}

func diffNodes(p, n *trieNode, shift uint, put, gone func(Member)) {
	switch {
	case p == n:
	case p == nil:
		n.each(yieldAll(put))
	case n == nil:
		p.each(yieldAll(gone))
	case shift >= trieMaxShift:
		// Colliding names, a handful at most: compared as lists.
		diffLists(p, n, put, gone)
	default:
		for used := p.memberMap | p.childMap | n.memberMap | n.childMap; used != 0; used &= used - 1 {
			diffSlot(p, n, used&-used, shift, put, gone)
		}
	}
}

// diffSlot compares what the nodes p and n, at shift, hold in slot bit.
func diffSlot(p, n *trieNode, bit uint32, shift uint, put, gone func(Member)) {
	switch pm, nm := p.memberMap&bit != 0, n.memberMap&bit != 0; {
	case pm && nm:
		diffPair(p.members[packedIndex(p.memberMap, bit)], n.members[packedIndex(n.memberMap, bit)], put, gone)
	case pm || nm:
		// A member against a subtrie or nothing: compared as lists, the
		// member a list of one.
		diffLists(p.slotNode(bit), n.slotNode(bit), put, gone)
	default:
		diffNodes(p.slot(bit), n.slot(bit), shift+trieBits, put, gone)
	}
}

// bitsOf returns the bits set in slots, lowest first.
func bitsOf(slots uint32) []uint32 {
	all := make([]uint32, 0, bits.OnesCount32(slots))
	for ; slots != 0; slots &= slots - 1 {
		all = append(all, slots&-slots)
	}
	return all
}

// slot returns the subtrie in n's slot bit, or nil.
func (n *trieNode) slot(bit uint32) *trieNode {
	if n.childMap&bit == 0 {
		return nil
	}
	return n.children[packedIndex(n.childMap, bit)]
}

// slotNode returns what n's slot bit holds as a node: its subtrie, a node of
// its one member, or nil.
func (n *trieNode) slotNode(bit uint32) *trieNode {
	if n.memberMap&bit != 0 {
		return &trieNode{members: []Member{n.members[packedIndex(n.memberMap, bit)]}}
	}
	return n.slot(bit)
}

// diffLists compares every member under p with every member under n, by
// name: for the few members where the two tries differ in shape.
func diffLists(p, n *trieNode, put, gone func(Member)) {
	var prev []Member
	p.each(yieldAll(appendTo(&prev)))
	seen := make([]bool, len(prev))
	n.each(func(m Member) bool {
		for i, o := range prev {
			if o.Name == m.Name {
				seen[i] = true
				diffPair(o, m, put, gone)
				return true
			}
		}
		put(m)
		return true
	})
	for i, o := range prev {
		if !seen[i] {
			gone(o)
		}
	}
}

// diffPair compares o, the member in prev's place, with m, the member in
// next's.
func diffPair(o, m Member, put, gone func(Member)) {
	switch {
	case o.Name != m.Name || o.CreateRevision != m.CreateRevision:
		put(m)
		gone(o)
	case o.Value != m.Value:
		put(m)
	}
}

func appendTo(all *[]Member) func(Member) {
	return func(m Member) { *all = append(*all, m) }
}

func yieldAll(f func(Member)) func(Member) bool {
	return func(m Member) bool { f(m); return true }
}

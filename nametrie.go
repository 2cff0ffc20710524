// The name index of a snapshot: a persistent hash trie from name to member.

package biregister

import (
	"hash/maphash"
	"iter"
	"math/bits"
	"slices"
)

// nameTrie is a persistent hash trie from name to member: every update returns
// a new trie that shares all but the path it changed with the old one, so a
// snapshot costs O(log n) per change instead of a copy of a map, and readers
// of an older snapshot are never disturbed. Each level consumes 5 bits of the
// name's hash; a level's members and subtries sit in two arrays indexed by the
// population count of bitmaps, as in Steindorfer and Vinju's CHAMP layout.
type nameTrie struct {
	root *trieNode
	size int
}

// trieNode is immutable once a snapshot that reaches it has been published.
type trieNode struct {
	memberMap uint32 // hash slots that hold a member directly
	childMap  uint32 // hash slots that hold a subtrie
	members   []Member
	children  []*trieNode
	madeBy    *batch // the batch that made this node; see batch
	// A node that writable copied shares its arrays with the original
	// until it changes them (ownMembers, ownChildren): an event changes one
	// array of a node on its path, a child pointer or a member.
	sharesMembers, sharesChildren bool
}

const (
	trieBits = 5
	// trieMaxShift is where the 64-bit hash runs out: a node below it holds
	// colliding names in members, compared one by one.
	trieMaxShift = 60
)

var nameSeed = maphash.MakeSeed()

func hashName(name string) uint64 { return maphash.String(nameSeed, name) }

// slotBit returns the bitmap bit of the slot that hash picks at shift.
func slotBit(hash uint64, shift uint) uint32 { return 1 << ((hash >> shift) & (1<<trieBits - 1)) }

// packedIndex returns where the entry of bit sits in the array that holds
// one entry per bit set in bitmap.
func packedIndex(bitmap, bit uint32) int { return bits.OnesCount32(bitmap & (bit - 1)) }

func (t nameTrie) get(name string) (Member, bool) {
	hash := hashName(name)
	n := t.root
	for shift := uint(0); n != nil; shift += trieBits {
		if shift >= trieMaxShift {
			for _, m := range n.members {
				if m.Name == name {
					return m, true
				}
			}
			return Member{}, false
		}
		bit := slotBit(hash, shift)
		if n.memberMap&bit != 0 {
			if m := n.members[packedIndex(n.memberMap, bit)]; m.Name == name {
				return m, true
			}
			return Member{}, false
		}
		if n.childMap&bit == 0 {
			return Member{}, false
		}
		n = n.children[packedIndex(n.childMap, bit)]
	}
	return Member{}, false
}

// all yields the members in no particular order.
func (t nameTrie) all() iter.Seq[Member] {
	return func(yield func(Member) bool) { t.root.each(yield) }
}

func (n *trieNode) each(yield func(Member) bool) bool {
	if n == nil {
		return true
	}
	for _, m := range n.members {
		if !yield(m) {
			return false
		}
	}
	for _, c := range n.children {
		if !c.each(yield) {
			return false
		}
	}
	return true
}

// set returns the trie with m stored under m.Name, and the member it
// replaced, if any; see batch for b. One walk does both, as an event needs.
func (t nameTrie) set(m Member, b *batch) (nameTrie, Member, bool) {
	root, old, replaced := t.root.set(m, hashName(m.Name), 0, b)
	if !replaced {
		t.size++
	}
	t.root = root
	return t, old, replaced
}

// delete returns the trie without name, and the member it removed, if any;
// see batch for b.
func (t nameTrie) delete(name string, b *batch) (nameTrie, Member, bool) {
	root, old, removed := t.root.delete(name, hashName(name), 0, b)
	if removed {
		t.size--
		t.root = root
	}
	return t, old, removed
}

// writable returns n itself if b made it, or else a copy that b owns, whose
// arrays it copies before it changes them (ownMembers, ownChildren).
func (n *trieNode) writable(b *batch) *trieNode {
	switch {
	case n == nil:
		return &trieNode{madeBy: b}
	case b != nil && n.madeBy == b:
		return n
	}
	return &trieNode{
		memberMap:      n.memberMap,
		childMap:       n.childMap,
		members:        n.members,
		children:       n.children,
		madeBy:         b,
		sharesMembers:  n.members != nil,
		sharesChildren: n.children != nil,
	}
}

// ownMembers gives n, which writable returned, members of its own to change.
func (n *trieNode) ownMembers() {
	if n.sharesMembers {
		n.members, n.sharesMembers = slices.Clone(n.members), false
	}
}

// ownChildren gives n, which writable returned, children of its own to
// change.
func (n *trieNode) ownChildren() {
	if n.sharesChildren {
		n.children, n.sharesChildren = slices.Clone(n.children), false
	}
}

// setChild makes child the subtrie at index i of n, which writable
// returned. A child that a batch already made is there already.
func (n *trieNode) setChild(i int, child *trieNode) {
	if n.children[i] != child {
		n.ownChildren()
		n.children[i] = child
	}
}

// set returns n with m stored under m.Name, and the member it replaced, if
// any.
func (n *trieNode) set(m Member, hash uint64, shift uint, b *batch) (*trieNode, Member, bool) {
	c := n.writable(b)
	if shift >= trieMaxShift {
		c.ownMembers()
		i := slices.IndexFunc(c.members, func(o Member) bool { return o.Name == m.Name })
		if i < 0 {
			c.members = append(c.members, m)
			return c, Member{}, false
		}
		old := c.members[i]
		c.members[i] = m
		return c, old, true
	}
	bit := slotBit(hash, shift)
	switch {
	case c.memberMap&bit != 0:
		i := packedIndex(c.memberMap, bit)
		old := c.members[i]
		c.ownMembers()
		if old.Name == m.Name {
			c.members[i] = m
			return c, old, true
		}
		// Two names share this slot: push both one level down.
		child, _, _ := (*trieNode)(nil).set(old, hashName(old.Name), shift+trieBits, b)
		child, _, _ = child.set(m, hash, shift+trieBits, b)
		c.ownChildren()
		c.memberMap &^= bit
		c.members = slices.Delete(c.members, i, i+1)
		c.childMap |= bit
		c.children = slices.Insert(c.children, packedIndex(c.childMap, bit), child)
		return c, Member{}, false
	case c.childMap&bit != 0:
		i := packedIndex(c.childMap, bit)
		child, old, replaced := c.children[i].set(m, hash, shift+trieBits, b)
		c.setChild(i, child)
		return c, old, replaced
	default:
		c.ownMembers()
		c.memberMap |= bit
		c.members = slices.Insert(c.members, packedIndex(c.memberMap, bit), m)
		return c, Member{}, false
	}
}

// delete returns n without name, and the member it removed, if any. A
// subtrie left with a single member and no subtries is folded into its
// parent, so the trie keeps the shape it would have had without the deleted
// name.
func (n *trieNode) delete(name string, hash uint64, shift uint, b *batch) (*trieNode, Member, bool) {
	if n == nil {
		return nil, Member{}, false
	}
	if shift >= trieMaxShift {
		i := slices.IndexFunc(n.members, func(o Member) bool { return o.Name == name })
		if i < 0 {
			return n, Member{}, false
		}
		old := n.members[i]
		c := n.writable(b)
		c.ownMembers()
		c.members = slices.Delete(c.members, i, i+1)
		return c.orNil(), old, true
	}
	bit := slotBit(hash, shift)
	switch {
	case n.memberMap&bit != 0:
		i := packedIndex(n.memberMap, bit)
		old := n.members[i]
		if old.Name != name {
			return n, Member{}, false
		}
		c := n.writable(b)
		c.ownMembers()
		c.memberMap &^= bit
		c.members = slices.Delete(c.members, i, i+1)
		return c.orNil(), old, true
	case n.childMap&bit != 0:
		i := packedIndex(n.childMap, bit)
		child, old, removed := n.children[i].delete(name, hash, shift+trieBits, b)
		if !removed {
			return n, Member{}, false
		}
		c := n.writable(b)
		switch {
		case child == nil:
			c.ownChildren()
			c.childMap &^= bit
			c.children = slices.Delete(c.children, i, i+1)
		case child.childMap == 0 && len(child.members) == 1:
			c.ownChildren()
			c.ownMembers()
			c.childMap &^= bit
			c.children = slices.Delete(c.children, i, i+1)
			c.memberMap |= bit
			c.members = slices.Insert(c.members, packedIndex(c.memberMap, bit), child.members[0])
		default:
			c.setChild(i, child)
		}
		return c.orNil(), old, true
	}
	return n, Member{}, false
}

// orNil returns nil for a node that holds nothing any more.
func (n *trieNode) orNil() *trieNode {
	if len(n.members) == 0 && len(n.children) == 0 {
		return nil
	}
	return n
}

// Building a cache whole from a listing: the members sorted into create
// order, and the name trie made level by level, every node once, at its
// final size.

package biregister

import (
	"slices"
	"strings"
)

// sortByCreate sorts members into the tree's order, in place. A listing
// comes from etcd in key order, which is name order: then each member's
// create revision and position pack into one integer, and sorting those
// needs no comparison function, while members that share a create revision
// (one transaction's) stay in name order, several times faster than
// sorting the members themselves (BenchmarkSortByCreate; BENCHMARKS.md,
// "What changed"). The members then move to their places
// along the cycles of the permutation, with no second slice: a listing of a
// million members is 40 MB of them.
func sortByCreate(members []Member) {
	const positionBits = 24
	const positionMask = 1<<positionBits - 1
	if len(members) >= 1<<positionBits ||
		!slices.IsSortedFunc(members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) }) {
		slices.SortFunc(members, byPlace)
		return
	}
	packed := make([]uint64, 0, len(members))
	for i, m := range members {
		if m.CreateRevision < 0 || m.CreateRevision >= 1<<(64-positionBits) {
			slices.SortFunc(members, byPlace)
			return
		}
		packed = append(packed, uint64(m.CreateRevision)<<positionBits|uint64(i))
	}
	slices.Sort(packed)
	// packed[i] names the position the member that belongs at i comes from;
	// a place that got its member is marked by naming itself.
	for i := range members {
		if int(packed[i]&positionMask) == i {
			continue
		}
		held := members[i]
		for j := i; ; {
			from := int(packed[j] & positionMask)
			packed[j] = packed[j]&^positionMask | uint64(j)
			if from == i {
				members[j] = held
				break
			}
			members[j] = members[from]
			j = from
		}
	}
}

// buildNameTrie returns the trie of members, whose names are distinct. It is
// built top-down, level by level, by a counting sort of the members on the
// slot their hash picks: every node is made once, at its final size, where
// setting the members one by one grows and copies nodes (a listing of 1,000
// members: 3× faster, a third of the allocations). The hashes move with the
// members' positions from level to level, so that each level reads them in
// order; only the members themselves are read out of order, once.
func buildNameTrie(members []Member) nameTrie {
	if len(members) == 0 {
		return nameTrie{}
	}
	n := len(members)
	hashes := make([]uint64, n)
	picked := make([]int32, n)
	for i, m := range members {
		hashes[i] = hashName(m.Name)
		picked[i] = int32(i)
	}
	tb := trieBuilder{members: members}
	at, scratch := level{hashes, picked}, level{make([]uint64, n), make([]int32, n)}
	if n < parallelMin {
		return nameTrie{root: tb.node(at, scratch, 0), size: n}
	}
	// The subtries of the root's slots share nothing: built side by side.
	root, starts := tb.sortLevel(at, scratch, 0)
	var slots []int
	for d := range 1 << trieBits {
		if starts[d+1]-starts[d] > 1 {
			slots = append(slots, d)
		}
	}
	root.children = make([]*trieNode, len(slots))
	inParallel(len(slots), func(i int) {
		from, to := starts[slots[i]], starts[slots[i]+1]
		root.children[i] = tb.node(scratch.slice(from, to), at.slice(from, to), trieBits)
	})
	return nameTrie{root: root, size: n}
}

// trieBuilder builds a trie from members.
type trieBuilder struct {
	members []Member
}

// level is a set of members, by their positions in trieBuilder.members,
// and the hashes of their names.
type level struct {
	hashes []uint64
	picked []int32
}

func (l level) slice(from, to int32) level { return level{l.hashes[from:to], l.picked[from:to]} }

// node returns the node at shift that holds the members of at (two or
// more, or any number at the bottom level), using scratch, as long as at,
// for its own work.
func (tb trieBuilder) node(at, scratch level, shift uint) *trieNode {
	if shift >= trieMaxShift {
		n := &trieNode{members: make([]Member, len(at.picked))}
		for j, i := range at.picked {
			n.members[j] = tb.members[i]
		}
		return n
	}
	n, starts := tb.sortLevel(at, scratch, shift)
	for d := range 1 << trieBits {
		if from, to := starts[d], starts[d+1]; to-from > 1 {
			// at is free now: it is the child's scratch.
			n.children = append(n.children, tb.node(scratch.slice(from, to), at.slice(from, to), shift+trieBits))
		}
	}
	return n
}

// sortLevel sorts the members of at into scratch by the slot their hash
// picks at shift, and returns the node of that level with its members,
// room for its subtries, and where each slot's members begin in scratch.
func (tb trieBuilder) sortLevel(at, scratch level, shift uint) (*trieNode, [1<<trieBits + 1]int32) {
	var starts [1<<trieBits + 1]int32
	for _, h := range at.hashes {
		starts[(h>>shift)&(1<<trieBits-1)+1]++
	}
	n := &trieNode{}
	var memberCount, childCount int
	for d := range 1 << trieBits {
		switch starts[d+1] {
		case 0:
		case 1:
			n.memberMap |= 1 << d
			memberCount++
		default:
			n.childMap |= 1 << d
			childCount++
		}
		starts[d+1] += starts[d]
	}
	next := starts
	for j, h := range at.hashes {
		d := (h >> shift) & (1<<trieBits - 1)
		scratch.hashes[next[d]] = h
		scratch.picked[next[d]] = at.picked[j]
		next[d]++
	}
	n.members = make([]Member, 0, memberCount)
	n.children = make([]*trieNode, 0, childCount)
	for d := range 1 << trieBits {
		if from := starts[d]; starts[d+1]-from == 1 {
			n.members = append(n.members, tb.members[scratch.picked[from]])
		}
	}
	return n, starts
}

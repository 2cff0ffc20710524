package biregister

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/biregister/biregister/internal/benchutil"
)

// checkOrderTree checks t against want, the places in order, and the
// tree's shape: every leaf at one depth, no node empty or beyond
// orderFanout, and every place within the lows that lead to it.
func checkOrderTree(tb testing.TB, t orderTree, want []place) {
	tb.Helper()
	if got := slices.Collect(t.all()); !slices.Equal(got, want) || t.size != len(want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		tb.Fatalf("tree of size %d holds %d places, want %d; from place %d: %v, want %v",
			t.size, len(got), len(want), i, got[i:min(i+3, len(got))], want[i:min(i+3, len(want))])
	}
	first, ok := t.first()
	if ok != (len(want) > 0) || (ok && first != want[0]) {
		tb.Fatalf("first = %v %v, want the first of %v", first, ok, want)
	}
	if len(want) > 0 && t.last.compare(want[len(want)-1]) < 0 {
		tb.Fatalf("last %v is below the youngest place %v", t.last, want[len(want)-1])
	}
	leafDepth := -1
	var walk func(n *orderNode, depth int, lo, hi *place)
	walk = func(n *orderNode, depth int, lo, hi *place) {
		within := func(p place) bool { return (lo == nil || lo.compare(p) <= 0) && (hi == nil || p.compare(*hi) < 0) }
		if n.leaf() {
			if leafDepth < 0 {
				leafDepth = depth
			}
			if depth != leafDepth || len(n.places) == 0 || len(n.places) > orderFanout {
				tb.Fatalf("leaf of %d places at depth %d (leaves at %d)", len(n.places), depth, leafDepth)
			}
			for _, p := range n.places {
				if !within(p) {
					tb.Fatalf("place %v outside its lows [%v, %v)", p, lo, hi)
				}
			}
			return
		}
		if len(n.children) == 0 || len(n.children) > orderFanout || len(n.lows) != len(n.children) {
			tb.Fatalf("inner node of %d children and %d lows", len(n.children), len(n.lows))
		}
		for i, c := range n.children {
			if !within(n.lows[i]) || (i > 0 && n.lows[i-1].compare(n.lows[i]) >= 0) {
				tb.Fatalf("lows %v: not ascending within the parent's [%v, %v)", n.lows, lo, hi)
			}
			next := hi
			if i+1 < len(n.lows) {
				next = &n.lows[i+1]
			}
			walk(c, depth+1, &n.lows[i], next)
		}
	}
	if t.root != nil {
		walk(t.root, 0, nil, nil)
	}
}

// Inserts anywhere (many places sharing a revision, their names in random
// order, as one transaction's keys come) and removals, in batches and
// without, checked after every step against a sorted slice; the trees
// published between batches must stay as they were.
func TestOrderTreeAgainstModel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		steps   int
		batched bool
		txn     int // most keys one revision creates
	}{
		{"small", 300, false, 4},
		{"small-batched", 300, true, 4},
		{"big-txns", 5000, false, 200},
		{"big-txns-batched", 5000, true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.steps)))
			var tree orderTree
			var want []place
			type version struct {
				tree orderTree
				want []place
			}
			var published []version
			revision := int64(0)
			var b *batch
			batchLeft := 0
			for step := 0; step < tc.steps; {
				if batchLeft == 0 {
					published = append(published, version{tree, slices.Clone(want)})
					b, batchLeft = nil, 1
					if tc.batched && rng.IntN(4) > 0 {
						b, batchLeft = new(batch), 1+rng.IntN(8)
					}
				}
				batchLeft--
				switch op := rng.IntN(10); {
				case op < 6 || len(want) == 0: // one transaction creates up to tc.txn keys, in any order
					revision++
					keys := 1 + rng.IntN(tc.txn)
					for _, i := range rng.Perm(keys) {
						p := place{revision, fmt.Sprintf("k%04d", i)}
						tree = tree.insert(p, b)
						j, _ := slices.BinarySearchFunc(want, p, place.compare)
						want = slices.Insert(want, j, p)
						step++
						checkOrderTree(t, tree, want)
					}
				case op < 7: // an old place anywhere: the tree takes any order
					p := place{rng.Int64N(revision + 1), fmt.Sprintf("old%d", step)}
					tree = tree.insert(p, b)
					j, _ := slices.BinarySearchFunc(want, p, place.compare)
					want = slices.Insert(want, j, p)
					step++
					checkOrderTree(t, tree, want)
				default: // removals, from anywhere, the first most often
					for range 1 + rng.IntN(tc.txn) {
						if len(want) == 0 {
							break
						}
						j := 0
						if rng.IntN(3) > 0 {
							j = rng.IntN(len(want))
						}
						tree = tree.remove(want[j], b)
						want = slices.Delete(want, j, j+1)
						step++
						checkOrderTree(t, tree, want)
					}
				}
			}
			for _, v := range published {
				checkOrderTree(t, v.tree, v.want)
			}
		})
	}
}

// depthOf returns how many levels t has.
func depthOf(t orderTree) int {
	depth := 0
	for n := t.root; n != nil; depth++ {
		if n.leaf() {
			n = nil
		} else {
			n = n.children[0]
		}
	}
	return depth
}

// newNodes returns the nodes of t that are not nodes of old.
func newNodes(old, t orderTree) []*orderNode {
	seen := map[*orderNode]bool{}
	var mark func(n *orderNode)
	mark = func(n *orderNode) {
		seen[n] = true
		for _, c := range n.children {
			mark(c)
		}
	}
	mark(old.root)
	var fresh []*orderNode
	var collect func(n *orderNode)
	collect = func(n *orderNode) {
		if !seen[n] {
			fresh = append(fresh, n)
		}
		for _, c := range n.children {
			collect(c)
		}
	}
	collect(t.root)
	return fresh
}

// A place that is not the youngest goes in at the cost of one path: the
// tree copies the nodes from the root to its leaf, and perhaps a neighbour
// of the leaf, splits at most each of them, and may add a root, whatever the
// tree's size (a rebuild makes a node per 32 places). The keys of one
// transaction, whatever their order, fill the leaves they take by three
// quarters at least: memory per member stays near an append's.
func TestOrderTreeInsertCopiesOnePath(t *testing.T) {
	const n = 100_000
	places := make([]place, n)
	for i := range places {
		places[i] = place{int64(i/128 + 1), fmt.Sprintf("m%07d", i)} // 128 keys a transaction, as FillGroup writes
	}
	base := buildOrderTree(places)
	depth := depthOf(base)
	young := int64(n/128 + 2)
	youngest := base.insert(place{young, "z"}, nil)
	for _, c := range []struct {
		into orderTree
		p    place
	}{
		{base, place{young, "z"}},          // the youngest: appended
		{youngest, place{1, "a"}},          // below every place: the left edge's lows go down
		{youngest, place{400, "m0051100"}}, // the middle, into a full leaf
		{youngest, place{young, "y"}},      // beside the youngest, out of name order
		{youngest, place{young - 1, "z"}},  // between the old and the young
	} {
		before := slices.Collect(c.into.all())
		next := c.into.insert(c.p, nil)
		if made := len(newNodes(c.into, next)); made > 2*depth+2 {
			t.Errorf("inserting %v into %d places of depth %d made %d nodes, want at most %d", c.p, c.into.size, depth, made, 2*depth+2)
		}
		checkOrderTree(t, c.into, before) // unchanged
		want := slices.Clone(before)
		i, _ := slices.BinarySearchFunc(want, c.p, place.compare)
		checkOrderTree(t, next, slices.Insert(want, i, c.p))
	}
	// One transaction of 500 keys, in one batch: each path is copied once,
	// then changed in place.
	const keys = 500
	rng := rand.New(rand.NewPCG(1, 2))
	for _, order := range []string{"descending", "random", "youngest-first"} {
		perm := rng.Perm(keys)
		for j := range perm {
			switch order {
			case "descending":
				perm[j] = keys - 1 - j
			case "youngest-first": // then the others in name order
				perm[j] = (j + keys - 1) % keys
			}
		}
		b := new(batch)
		tree := base
		for _, i := range perm {
			tree = tree.insert(place{young, fmt.Sprintf("new%03d", i)}, b)
		}
		made := newNodes(base, tree)
		if most := 2*depth + keys/8; len(made) > most {
			t.Errorf("%s: %d keys made %d nodes, want at most %d", order, keys, len(made), most)
		}
		leaves := 0
		for _, n := range made {
			if n.madeBy != b {
				t.Fatalf("%s: a node the batch made is not the batch's: its next event would copy it again", order)
			}
			if n.leaf() {
				leaves++
			}
		}
		// The leaf they join holds older places too.
		if most := (keys + orderFanout) / (orderFanout * 3 / 4); leaves > most {
			t.Errorf("%s: %d keys took %d new leaves, want at most %d", order, keys, leaves, most)
		}
		want := slices.Clone(places)
		for i := range keys {
			want = append(want, place{young, fmt.Sprintf("new%03d", i)})
		}
		checkOrderTree(t, tree, want)
	}
	checkOrderTree(t, base, places)
}

// BenchmarkOrderTreeTxn is the order index's share of a transaction that
// creates 100 members, in one batch, by the order of its keys: the time to
// take them into 100,000 places (txn/), and the index's heap per member once
// a whole group of 100,000 came in such transactions (heap/; a listing's
// compact tree for comparison).
func BenchmarkOrderTreeTxn(b *testing.B) {
	const n, keys = 100_000, 100
	names := make([]string, n+keys)
	for i := range names {
		names[i] = fmt.Sprintf("m%07d", i)
	}
	// order returns the order of a transaction's keys.
	order := func(name string, rng *rand.Rand) []int {
		keyOrder := rng.Perm(keys)
		switch name {
		case "ascending":
			slices.Sort(keyOrder)
		case "descending":
			slices.SortFunc(keyOrder, func(a, b int) int { return b - a })
		}
		return keyOrder
	}
	// grow adds the members from first to last, keys a transaction, each
	// transaction one batch.
	grow := func(tree orderTree, first, last int, name string, rng *rand.Rand) orderTree {
		for txn := first; txn < last; txn += keys {
			b := new(batch)
			for _, i := range order(name, rng) {
				tree = tree.insert(place{int64(txn/keys + 1), names[txn+i]}, b)
			}
		}
		return tree
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, name := range []string{"listing", "ascending", "descending", "random"} {
		b.Run("heap/"+name, func(b *testing.B) {
			var tree orderTree
			before := benchutil.LiveHeap()
			for b.Loop() {
				tree = orderTree{}
				if name != "listing" {
					tree = grow(tree, 0, n, name, rng)
					continue
				}
				places := make([]place, n)
				for i := range places {
					places[i] = place{int64(i/keys + 1), names[i]}
				}
				tree = buildOrderTree(places)
			}
			b.ReportMetric(float64(benchutil.LiveHeap()-before)/n, "B/member")
			runtime.KeepAlive(tree)
		})
	}
	base := grow(orderTree{}, 0, n, "ascending", rng)
	for _, name := range []string{"ascending", "descending", "random"} {
		b.Run("txn/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				grow(base, n, n+keys, name, rng)
			}
		})
	}
}

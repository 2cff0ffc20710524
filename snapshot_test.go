package biregister

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// model is the obvious, slow version of a snapshot's two indexes.
type model map[string]Member

func (m model) sorted() []Member {
	all := make([]Member, 0, len(m))
	for _, v := range m {
		all = append(all, v)
	}
	slices.SortFunc(all, func(a, b Member) int { return placeOf(a).compare(placeOf(b)) })
	return all
}

func (m model) clone() model {
	c := make(model, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func checkAgainst(t *testing.T, names nameTrie, order orderTree, want model) {
	t.Helper()
	if names.size != len(want) || order.size != len(want) {
		t.Fatalf("sizes %d/%d, want %d", names.size, order.size, len(want))
	}
	for name, m := range want {
		if got, ok := names.get(name); !ok || got != m {
			t.Fatalf("get(%q) = %v %v, want %v", name, got, ok, m)
		}
	}
	if got := maps.Collect(func(yield func(string, Member) bool) {
		for m := range names.all() {
			if !yield(m.Name, m) {
				return
			}
		}
	}); !maps.Equal(got, map[string]Member(want)) {
		t.Fatalf("all() = %v, want %v", got, want)
	}
	if _, ok := names.get("absent"); ok {
		t.Fatal("get of an absent name succeeded")
	}
	sorted := placesOf(want.sorted())
	if got := slices.Collect(order.all()); !slices.Equal(got, sorted) {
		t.Fatalf("order %v, want %v", got, sorted)
	}
	first, ok := order.first()
	if ok != (len(sorted) > 0) || (ok && first != sorted[0]) {
		t.Fatalf("first = %v %v, want %v", first, ok, sorted)
	}
}

// Random joins, departures and value changes, checked after every step
// against the model; earlier versions must stay as they were.
func TestIndexesAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{10, 300, 5000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var names nameTrie
			var order orderTree
			want := model{}
			type version struct {
				names nameTrie
				order orderTree
				want  model
			}
			var versions []version
			revision := int64(0)
			var keys []string // the names in want, in a reproducible order
			var b *batch      // the batch in progress, nil between batches
			batchLeft := 0
			for step := range 4 * size {
				if batchLeft == 0 {
					// A batch ends: what it built is published, and the next
					// one must copy before it changes anything.
					if step%(size/4+1) == 0 {
						versions = append(versions, version{names, order, want.clone()})
					}
					b, batchLeft = nil, 1
					if rng.IntN(2) == 0 {
						b, batchLeft = new(batch), 1+rng.IntN(8)
					}
				}
				batchLeft--
				switch op := rng.IntN(10); {
				case op < 5 || len(keys) == 0: // join
					if rng.IntN(4) > 0 { // else in the same transaction as the last
						revision++
					}
					m := Member{Name: fmt.Sprintf("m%d", rng.IntN(2*size)), Value: fmt.Sprint(revision), CreateRevision: revision}
					if old, ok := want[m.Name]; ok {
						order = order.remove(placeOf(old), b)
					} else {
						keys = append(keys, m.Name)
					}
					names, _, _ = names.set(m, b)
					order = order.insert(placeOf(m), b)
					want[m.Name] = m
				case op < 8: // leave
					i := rng.IntN(len(keys))
					k := keys[i]
					keys[i] = keys[len(keys)-1]
					keys = keys[:len(keys)-1]
					names, _, _ = names.delete(k, b)
					order = order.remove(placeOf(want[k]), b)
					delete(want, k)
				default: // new value, same registration
					k := keys[rng.IntN(len(keys))]
					m := want[k]
					m.Value += "'"
					names, _, _ = names.set(m, b)
					want[k] = m
				}
				if size <= 100 || step%(size/10) == 0 {
					checkAgainst(t, names, order, want)
				}
			}
			checkAgainst(t, names, order, want)
			for _, v := range versions {
				checkAgainst(t, v.names, v.order, v.want)
			}
			checkAgainst(t, buildNameTrie(want.sorted()), buildOrderTree(placesOf(want.sorted())), want)
		})
	}
}

// A member older than the youngest one still lands in its place.
func TestByCreateInsertOutOfOrder(t *testing.T) {
	var order orderTree
	for _, rev := range []int64{10, 20, 30, 15, 5} {
		order = order.insert(place{revision: rev, name: fmt.Sprint(rev)}, nil)
	}
	var revs []int64
	for k := range order.all() {
		revs = append(revs, k.revision)
	}
	if !slices.Equal(revs, []int64{5, 10, 15, 20, 30}) {
		t.Fatalf("order %v", revs)
	}
}

// Below the last level of the hash, names that collide share a node and are
// told apart by comparison.
func TestByNameCollisionLevel(t *testing.T) {
	var n *trieNode
	for _, name := range []string{"a", "b", "c"} {
		n, _, _ = n.set(Member{Name: name, Value: name}, 0, trieMaxShift, nil)
	}
	n, old, replaced := n.set(Member{Name: "b", Value: "b2"}, 0, trieMaxShift, nil)
	if !replaced || old.Value != "b" || len(n.members) != 3 || n.members[1].Value != "b2" {
		t.Fatalf("replace in a collision node: %+v", n.members)
	}
	n, old, removed := n.delete("a", 0, trieMaxShift, nil)
	if !removed || old.Value != "a" || len(n.members) != 2 {
		t.Fatalf("delete from a collision node: %+v", n.members)
	}
	if _, _, removed := n.delete("zz", 0, trieMaxShift, nil); removed {
		t.Fatal("deleted an absent name")
	}
	n, _, _ = n.delete("b", 0, trieMaxShift, nil)
	n, _, _ = n.delete("c", 0, trieMaxShift, nil)
	if n != nil {
		t.Fatal("an empty collision node must vanish")
	}
}

// sortByCreate agrees with the obvious comparison sort, for listings in
// name order (etcd's) and in any other order, ties included.
func TestSortByCreate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 50, 1000} {
		listing := make([]Member, n)
		for i := range listing {
			// Few revisions for many members: plenty of ties.
			listing[i] = Member{Name: fmt.Sprintf("m%05d", i), CreateRevision: 1 + rng.Int64N(int64(n/3+1))}
		}
		want := slices.Clone(listing)
		slices.SortFunc(want, func(a, b Member) int { return placeOf(a).compare(placeOf(b)) })
		got := slices.Clone(listing)
		if sortByCreate(got); !slices.Equal(got, want) {
			t.Fatalf("n=%d, name order: got %v, want %v", n, got, want)
		}
		rng.Shuffle(n, func(i, j int) { listing[i], listing[j] = listing[j], listing[i] })
		if sortByCreate(listing); !slices.Equal(listing, want) {
			t.Fatalf("n=%d, shuffled: got %v, want %v", n, listing, want)
		}
	}
}

// BenchmarkSortByCreate: a listing of 1,000 members in name order, by
// sortByCreate and by a comparison sort of the members.
func BenchmarkSortByCreate(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	listing := make([]Member, 1000)
	for i := range listing {
		listing[i] = Member{Name: fmt.Sprintf("member-%07d", i), Value: "10.0.0.1:8080", CreateRevision: rng.Int64N(1_000_000)}
	}
	work := make([]Member, len(listing))
	b.Run("sortByCreate", func(b *testing.B) {
		for b.Loop() {
			copy(work, listing)
			sortByCreate(work)
		}
	})
	b.Run("comparison-sort", func(b *testing.B) {
		for b.Loop() {
			copy(work, listing)
			slices.SortFunc(work, func(a, b Member) int { return placeOf(a).compare(placeOf(b)) })
		}
	})
}

// groupOf returns a snapshot of n members under prefix "/g/".
func groupOf(n int) *snapshot {
	listed := make([]Member, n)
	for i := range listed {
		listed[i] = Member{Name: fmt.Sprintf("member-%07d", i), Value: "10.0.0.1:8080", CreateRevision: int64(i + 1)}
	}
	s, _, _ := emptySnapshot(0).replace(listed, nil, int64(n), n)
	return s
}

// A watch started at the cache's own revision delivers that revision's
// events again: they change nothing and make no Change.
func TestApplySkipsEventsAlreadyHeld(t *testing.T) {
	s := groupOf(3)
	again := []*clientv3.Event{
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/g/member-0000002"), Value: []byte("10.0.0.1:8080"), CreateRevision: 3, ModRevision: 3}},
		{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/g/member-0000000"), ModRevision: 2}},
	}
	next, changes := s.apply("/g/", "", again, 3)
	if next != s || len(changes) != 0 {
		t.Fatalf("events at or below the snapshot's revision changed it: %v", changes)
	}
	newer := &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/g/member-0000000"), ModRevision: 4}}
	next, changes = s.apply("/g/", "", append(again, newer), 4)
	if len(changes) != 1 || changes[0].Op != OpDelete || next.leader.Name != "member-0000001" {
		t.Fatalf("changes %v, leader %q", changes, next.leader.Name)
	}
}

// etcd before 3.4.25 and 3.5.8 answers a progress request on a stream with
// its current revision even to a watch whose events below that revision are
// still on their way (etcd-io/etcd#15220): those events, when they come, are
// applied, not taken for replays, and the cache keeps the revision etcd
// reported.
func TestApplyEventsBehindEarlyProgress(t *testing.T) {
	s := groupOf(3) // at revision 3
	early, changes := s.apply("/g/", "", nil, 10)
	if len(changes) != 0 || early.revision != 10 {
		t.Fatalf("progress notification: revision %d, changes %v", early.revision, changes)
	}
	late := []*clientv3.Event{
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/g/late"), Value: []byte("v"), CreateRevision: 5, ModRevision: 5}},
		{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/g/member-0000000"), ModRevision: 6}},
	}
	next, changes := early.apply("/g/", "", late, 6)
	if len(changes) != 2 || next.revision != 10 || next.applied != 6 {
		t.Fatalf("events behind the progress notification: changes %v, revision %d, applied %d", changes, next.revision, next.applied)
	}
	if _, ok := next.lookup("late"); !ok || next.leader.Name != "member-0000001" {
		t.Fatalf("the cache did not take the late events: leader %q", next.leader.Name)
	}
	if again, changes := next.apply("/g/", "", late, 6); again != next || len(changes) != 0 {
		t.Fatalf("a replay of the late events changed the cache: %v", changes)
	}
}

// BenchmarkSnapshotApply is the cost of one watch event on the cache, by
// group size: it must not grow with the group (no copy, no scan).
func BenchmarkSnapshotApply(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		base := groupOf(n)
		leader := base.leader
		events := map[string]func(rev int64) *clientv3.Event{
			"value-change": func(rev int64) *clientv3.Event {
				return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/g/member-0000500"), Value: []byte("10.0.0.2:8080"), CreateRevision: 501, ModRevision: rev}}
			},
			"join": func(rev int64) *clientv3.Event {
				return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/g/newcomer"), Value: []byte("10.0.0.3:8080"), CreateRevision: rev, ModRevision: rev}}
			},
			"leader-leaves": func(rev int64) *clientv3.Event {
				return &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/g/" + leader.Name), ModRevision: rev}}
			},
		}
		for _, kind := range []string{"value-change", "join", "leader-leaves"} {
			b.Run(fmt.Sprintf("%s/%d", kind, n), func(b *testing.B) {
				ev := []*clientv3.Event{events[kind](int64(n) + 1)}
				b.ReportAllocs()
				for b.Loop() {
					next, _ := base.apply("/g/", "", ev, int64(n)+1)
					if kind == "leader-leaves" && next.leader == leader {
						b.Fatal("leader unchanged")
					}
				}
			})
		}
	}
}

// BenchmarkSnapshotReplace is the cost of turning a fresh listing into the
// cache (the initial sync, and every re-list), by group size.
func BenchmarkSnapshotReplace(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		listed := make([]Member, n)
		for i := range listed {
			listed[i] = Member{Name: fmt.Sprintf("member-%07d", i), Value: "10.0.0.1:8080", CreateRevision: int64(i + 1)}
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				emptySnapshot(0).replace(slices.Clone(listed), nil, int64(n), DefaultBufferSize)
			}
		})
	}
}

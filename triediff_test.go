package biregister

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/biregister/biregister/internal/leakcheck"
)

// diffTries finds what a lookup per member finds: the members of next that
// prev lacks or holds otherwise, and those of prev that next lacks or holds
// at another create revision; for tries built whole and built event by
// event (whose shapes may differ), of any overlap.
func TestDiffTriesAsLookups(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 80 {
		n := rng.IntN(3000)
		if round%8 == 0 {
			n = parallelMin + rng.IntN(parallelMin) // compared side by side
		}
		var prevMembers, nextMembers []Member
		for i := range n {
			m := Member{Name: fmt.Sprint("m", i), Value: "v", CreateRevision: int64(i + 1)}
			if rng.IntN(10) > 0 {
				prevMembers = append(prevMembers, m)
			}
			switch rng.IntN(20) {
			case 0: // gone
			case 1:
				m.Value = "changed"
				nextMembers = append(nextMembers, m)
			case 2:
				m.CreateRevision += int64(n) // recreated
				nextMembers = append(nextMembers, m)
			default:
				nextMembers = append(nextMembers, m)
			}
		}
		prev := buildNameTrie(slices.Clone(prevMembers))
		if round%2 == 1 {
			// Built event by event, with names set and deleted on the way.
			prev = nameTrie{}
			for _, m := range prevMembers {
				prev, _, _ = prev.set(m, nil)
				prev, _, _ = prev.set(Member{Name: m.Name + "-x"}, nil)
			}
			for _, m := range prevMembers {
				prev, _, _ = prev.delete(m.Name+"-x", nil)
			}
		}
		next := buildNameTrie(slices.Clone(nextMembers))
		var wantPuts, wantGone []Member
		puts, gone := diffTries(prev, next)
		for _, m := range nextMembers {
			if o, ok := prev.get(m.Name); !ok || o != m {
				wantPuts = append(wantPuts, m)
			}
		}
		for _, o := range prevMembers {
			if m, ok := next.get(o.Name); !ok || m.CreateRevision != o.CreateRevision {
				wantGone = append(wantGone, o)
			}
		}
		slices.SortFunc(puts, byPlace)
		slices.SortFunc(gone, byPlace)
		slices.SortFunc(wantPuts, byPlace)
		slices.SortFunc(wantGone, byPlace)
		if !slices.Equal(puts, wantPuts) || !slices.Equal(gone, wantGone) {
			t.Fatalf("round %d: puts %d gone %d, want %d and %d", round, len(puts), len(gone), len(wantPuts), len(wantGone))
		}
	}
}

// replace turns a listing into the changes from the cache: DELETEs of the
// members gone or recreated, then PUTs of the new, changed and recreated
// ones in create order, and nothing for a member listed as it was.
func TestReplaceChanges(t *testing.T) {
	old, _, _ := emptySnapshot(0).replace([]Member{
		{Name: "same", Value: "1", CreateRevision: 1},
		{Name: "gone", Value: "2", CreateRevision: 2},
		{Name: "changed", Value: "3", CreateRevision: 3},
		{Name: "recreated", Value: "4", CreateRevision: 4},
	}, nil, 4, 4)
	listed := []Member{
		{Name: "same", Value: "1", CreateRevision: 1},
		{Name: "changed", Value: "3b", CreateRevision: 3},
		{Name: "recreated", Value: "4", CreateRevision: 9},
		{Name: "new", Value: "5", CreateRevision: 8},
	}
	next, changes, cut := old.replace(slices.Clone(listed), nil, 9, 5)
	want := []Change{
		{Name: "gone", Op: OpDelete, Value: "2", Revision: 9},
		{Name: "recreated", Op: OpDelete, Value: "4", Revision: 9},
		{Name: "changed", Op: OpPut, Value: "3b", Revision: 9},
		{Name: "new", Op: OpPut, Value: "5", Revision: 9},
		{Name: "recreated", Op: OpPut, Value: "4", Revision: 9},
	}
	if !slices.Equal(changes, want) || cut {
		t.Fatalf("changes %v (cut %v), want %v", changes, cut, want)
	}
	// Every DELETE, PUTs up to most changes in all, and a word that more
	// than most came or some were left out.
	for most := range len(want) {
		wanted := want[:max(most, 2)]
		if _, changes, cut = old.replace(slices.Clone(listed), nil, 9, most); !slices.Equal(changes, wanted) || !cut {
			t.Fatalf("at most %d: changes %v (cut %v), want %v and cut", most, changes, cut, wanted)
		}
	}
	if _, changes, _ = next.replace(slices.Collect(next.members()), nil, 10, 5); len(changes) != 0 {
		t.Fatalf("an unchanged listing gave %v", changes)
	}
}

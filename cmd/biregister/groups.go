// The groups table: a line on the groups under a root, then one row a
// group, in name order, with its size and leader.

package main

import (
	"fmt"
	"io"

	"github.com/biregister/biregister"
)

// printGroups prints a line on the groups under a root, read at revision —
// how many, and how many members they have in all — then a table of them:
// each group's size, its leader, the leader's term (the create revision of
// its registration) and how many revisions ago it registered, as members
// says them.
func printGroups(out io.Writer, groups []biregister.GroupSummary, revision int64) {
	total := 0
	for _, g := range groups {
		total += g.Members
	}
	if len(groups) == 0 {
		fmt.Fprintf(out, "no groups at revision %d\n", revision)
	} else {
		fmt.Fprintf(out, "%d groups, %d members at revision %d\n", len(groups), total, revision)
	}
	header := []string{"GROUP", "MEMBERS", "LEADER", "TERM", "AGE-REVISIONS"}
	t := newColumns(out, header...)
	names := make([]string, len(groups))
	leaders := make([]string, len(groups))
	for i, g := range groups {
		names[i], leaders[i] = quote(g.Name), quote(g.Leader)
		t.fit(0, names[i])
		t.fitNumber(1, int64(g.Members))
		t.fit(2, leaders[i])
		t.fitNumber(3, g.Term)
	}
	t.row(header...)
	for i, g := range groups {
		t.text(names[i])
		t.number(int64(g.Members))
		t.text(leaders[i])
		t.number(g.Term)
		t.number(max(revision-g.Term, 0))
		t.end()
	}
	t.flush()
}

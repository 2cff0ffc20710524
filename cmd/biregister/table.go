// The members table: a line on the group and its leader, then one row a
// member, oldest first, in aligned columns.

package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/biregister/biregister"
)

// printGroup prints a line on the group, read at revision — its size, its
// leader and the leader's term (the create revision of its registration) —
// then the table of its members.
func printGroup(out io.Writer, members []biregister.Member, revision int64) {
	if len(members) == 0 {
		fmt.Fprintf(out, "no members at revision %d\n", revision)
	} else {
		leader := members[0]
		fmt.Fprintf(out, "%d members at revision %d; leader %s, term %d, registered %s\n",
			len(members), revision, quote(leader.Name), leader.CreateRevision, age(leader.CreateRevision, revision))
	}
	printTable(out, members, revision)
}

// age says how long before revision a member created at created
// registered, in revisions of etcd: etcd keeps no time of day with a key.
func age(created, revision int64) string {
	return strconv.FormatInt(max(revision-created, 0), 10) + " revisions ago"
}

// printTable prints members, read at revision, oldest first, the leader
// marked, with how many revisions ago each registered.
func printTable(out io.Writer, members []biregister.Member, revision int64) {
	header := []string{"LEADER", "NAME", "VALUE", "CREATE-REVISION", "AGE-REVISIONS"}
	t := newColumns(out, header...)
	names := make([]string, len(members))
	values := make([]string, len(members))
	for i, m := range members {
		names[i], values[i] = quote(m.Name), quote(m.Value)
		t.fit(1, names[i])
		t.fit(2, values[i])
		t.fitNumber(3, m.CreateRevision)
	}
	t.row(header...)
	for i, m := range members {
		mark := ""
		if i == 0 {
			mark = "*" // the leader is by definition the oldest member
		}
		t.text(mark)
		t.text(names[i])
		t.text(values[i])
		t.number(m.CreateRevision)
		t.number(max(revision-m.CreateRevision, 0))
		t.end()
	}
	t.flush()
}

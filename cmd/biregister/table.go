// The members table: a line on the group and its leader, then one row a
// member, oldest first, in aligned columns.

package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/biregister/biregister"
)

// columnGap is the room between two columns.
const columnGap = 2

// alignedRunes is the widest field that widens its column: a longer one, a
// value of megabytes say, runs over into its own row's next columns rather
// than pad every row by as much.
const alignedRunes = 80

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
// marked, with how many revisions ago each registered. Its columns are
// aligned as text/tabwriter aligns them, but for fields wider than
// alignedRunes, and it writes a million rows in a tenth of tabwriter's
// time: each column's width is found in one pass, and each row is written
// in one piece.
func printTable(out io.Writer, members []biregister.Member, revision int64) {
	header := [5]string{"LEADER", "NAME", "VALUE", "CREATE-REVISION", "AGE-REVISIONS"}
	names := make([]string, len(members))
	values := make([]string, len(members))
	width := [4]int{runes(header[0]), runes(header[1]), runes(header[2]), runes(header[3])}
	for i, m := range members {
		names[i], values[i] = quote(m.Name), quote(m.Value)
		width[1] = widen(width[1], runes(names[i]))
		width[2] = widen(width[2], runes(values[i]))
		width[3] = max(width[3], len(strconv.FormatInt(m.CreateRevision, 10)))
	}
	w := bufio.NewWriterSize(out, 64<<10)
	var line []byte
	pad := func(written, column int) {
		for range max(width[column]-written, 0) + columnGap {
			line = append(line, ' ')
		}
	}
	row := func(mark, name, value string, created, last []byte) {
		line = append(line[:0], mark...)
		pad(runes(mark), 0)
		line = append(line, name...)
		pad(runes(name), 1)
		line = append(line, value...)
		pad(runes(value), 2)
		line = append(line, created...)
		pad(len(created), 3)
		line = append(append(line, last...), '\n')
		w.Write(line)
	}
	row(header[0], header[1], header[2], []byte(header[3]), []byte(header[4]))
	var created, ago []byte
	for i, m := range members {
		mark := ""
		if i == 0 {
			mark = "*" // the leader is by definition the oldest member
		}
		created = strconv.AppendInt(created[:0], m.CreateRevision, 10)
		ago = strconv.AppendInt(ago[:0], max(revision-m.CreateRevision, 0), 10)
		row(mark, names[i], values[i], created, ago)
	}
	w.Flush()
}

// widen returns the width of a column that has a field of n characters
// besides those of width.
func widen(width, n int) int {
	if n > alignedRunes {
		return width
	}
	return max(width, n)
}

// runes returns how many characters s has, as text/tabwriter counts them.
func runes(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return i + utf8.RuneCountInString(s[i:])
		}
	}
	return len(s)
}

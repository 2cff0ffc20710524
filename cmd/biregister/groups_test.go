package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// txn commits ops in one transaction and returns its revision.
func txn(t *testing.T, cli *clientv3.Client, ops ...clientv3.Op) int64 {
	t.Helper()
	resp, err := cli.Txn(context.Background()).Then(ops...).Commit()
	require.NoError(t, err)
	return resp.Header.Revision
}

// groupsHeader is the header row of the groups table.
var groupsHeader = []string{"GROUP", "MEMBERS", "LEADER", "TERM", "AGE-REVISIONS"}

// groupRow returns the row of a group with members, led by leader
// registered at term, as the table prints it when read at revision.
func groupRow(name string, members int, leader string, term, revision int64) []string {
	return []string{name, strconv.Itoa(members), leader, strconv.FormatInt(term, 10), strconv.FormatInt(revision-term, 10)}
}

// groupsRevision returns the revision that the line above the groups table
// says it was read at, and fails unless the line says how many groups and
// members.
func groupsRevision(t *testing.T, out string, groups, members int) int64 {
	t.Helper()
	want := fmt.Sprintf("%d groups, %d members at revision ", groups, members)
	if groups == 0 {
		want = "no groups at revision "
	}
	line, _, _ := strings.Cut(out, "\n")
	require.True(t, strings.HasPrefix(line, want), "%q does not begin with %q", line, want)
	revision, err := strconv.ParseInt(strings.TrimPrefix(line, want), 10, 64)
	require.NoError(t, err)
	return revision
}

// TestGroups lists the groups under a root: in name order, each with its
// size and its leader, the oldest member, and of those a transaction
// created together the first by name; deeper keys, markers of graceful
// leaves and keys directly under the root belong to no group. The root
// reads the same with or without its trailing '/'.
func TestGroups(t *testing.T) {
	cluster := setup(t, true)
	ep := cluster.Endpoints()[0]
	cli := cluster.Client(t)
	api := txn(t, cli, clientv3.OpPut("/svc/api/node-2", "10.0.0.2:80"))
	txn(t, cli, clientv3.OpPut("/svc/api/node-1", "10.0.0.1:80"))
	// A graceful leave's marker, a sub-group's key and the group's own key.
	txn(t, cli, clientv3.OpPut("/svc/api/.leaving/node-0", "1"), clientv3.OpPut("/svc/api/sub/x", "v"), clientv3.OpPut("/svc/api/", "v"))
	// One transaction creates the oldest three, in another order than
	// their names; a younger member comes first by name.
	tie := txn(t, cli, clientv3.OpPut("/svc/tie/b", "v"), clientv3.OpPut("/svc/tie/c", "v"), clientv3.OpPut("/svc/tie/a", "v"))
	txn(t, cli, clientv3.OpPut("/svc/tie/0", "v"))
	// "a-b/" comes before "a/" as a key, after it as a name.
	ab := txn(t, cli, clientv3.OpPut("/svc/a-b/m", "v"))
	a := txn(t, cli, clientv3.OpPut("/svc/a/m", "v"))
	// No group: deeper keys only, directly under the root, an empty group
	// name, the root itself, beside the root.
	txn(t, cli, clientv3.OpPut("/svc/deeper/sub/x", "v"), clientv3.OpPut("/svc/deeper/.leaving/y", "1"),
		clientv3.OpPut("/svc/x", "v"), clientv3.OpPut("/svc//m", "v"), clientv3.OpPut("/svc/", "v"), clientv3.OpPut("/svc2/g/m", "v"))

	code, out, errOut := runCmd(t, "groups", "-endpoints", ep, "/svc")
	require.Equal(t, 0, code)
	assert.Empty(t, errOut)
	revision := groupsRevision(t, out, 4, 8)
	assert.Equal(t, [][]string{
		groupsHeader,
		groupRow("a", 1, "m", a, revision),
		groupRow("a-b", 1, "m", ab, revision),
		groupRow("api", 2, "node-2", api, revision),
		groupRow("tie", 4, "a", tie, revision),
	}, rows(out))

	code, again, _ := runCmd(t, "groups", "/svc/", "-endpoints", ep)
	require.Equal(t, 0, code)
	assert.Equal(t, out, again, "the root with its trailing '/'")
}

// An empty root, and one whose keys are in no group, print the header and
// no row.
func TestGroupsEmpty(t *testing.T) {
	cluster := setup(t, true)
	ep := cluster.Endpoints()[0]
	txn(t, cluster.Client(t), clientv3.OpPut("/none/x", "v"), clientv3.OpPut("/none/deeper/sub/x", "v"))
	for _, root := range []string{"/empty/", "/none/"} {
		code, out, errOut := runCmd(t, "groups", "-endpoints", ep, root)
		require.Equal(t, 0, code)
		assert.Empty(t, errOut)
		groupsRevision(t, out, 0, 0)
		assert.Equal(t, [][]string{groupsHeader}, rows(out), root)
	}
}

// TestGroupsMany lists more groups than a page holds keys: groups whose
// members a page boundary splits are listed once, with all their members.
func TestGroupsMany(t *testing.T) {
	cluster := setup(t, true)
	cli := cluster.Client(t)
	const groups, size = 300, 3
	terms := make([]int64, groups)
	for g := range groups {
		var ops []clientv3.Op
		for m := range size {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/many/g%03d/m%d", g, m), "v"))
		}
		terms[g] = txn(t, cli, ops...)
	}
	code, out, _ := runCmd(t, "groups", "-endpoints", cluster.Endpoints()[0], "/many/")
	require.Equal(t, 0, code)
	revision := groupsRevision(t, out, groups, groups*size)
	want := [][]string{groupsHeader}
	for g := range groups {
		want = append(want, groupRow(fmt.Sprintf("g%03d", g), size, "m0", terms[g], revision))
	}
	assert.Equal(t, want, rows(out))
}

// Group and leader names that would break a line or reach the terminal as
// control sequences print Go-quoted; a printable name prints as it is.
func TestGroupsOddNames(t *testing.T) {
	cluster := setup(t, true)
	cli := cluster.Client(t)
	for name := range oddNames {
		txn(t, cli, clientv3.OpPut("/odd/"+name+"/"+name, "v"))
	}
	blank := txn(t, cli, clientv3.OpPut("/odd/with blank/leader with blank", "v"))
	code, out, errOut := runCmd(t, "groups", "-endpoints", cluster.Endpoints()[0], "/odd/")
	require.Equal(t, 0, code)
	assert.Empty(t, unsafeText(out), "%q", out)
	assert.Empty(t, unsafeText(errOut), "%q", errOut)
	revision := groupsRevision(t, out, len(oddNames)+1, len(oddNames)+1)
	assert.Regexp(t, fmt.Sprintf(`(?m)^"with blank" +1 +"leader with blank" +%d +%d$`, blank, revision-blank), out)
	for name := range oddNames {
		printed := strconv.Quote(name)
		if name == fineName {
			printed = name
		}
		assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(printed)+` +1 +`+regexp.QuoteMeta(printed)+` +\d+ +\d+$`, out, "%q", name)
	}
}

// The watch command's loop: the table, then every change as it comes.

package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/biregister/biregister"
)

// watch prints the table, then every change, until ctx ends.
func watch(ctx context.Context, w biregister.Watcher, out io.Writer) int {
	// Changes starts with the members present at start, and in a group
	// bigger than its buffer a RESYNC for those that did not fit: the
	// table shows them all (see group.shown).
	g := newGroup(w)
	printGroup(out, g.table.members, g.table.revision)
	for {
		select {
		case <-ctx.Done():
			return 0
		case c, ok := <-w.Changes():
			if !ok {
				return 1 // only Close closes it, and that comes after return
			}
			if g.shown(c) {
				continue
			}
			now := time.Now().Format("2006-01-02T15:04:05.000Z07:00")
			if c.Op == biregister.OpResync {
				fmt.Fprintf(out, "%s %-6s rev %d: changes came too fast, the members are now:\n", now, c.Op, c.Revision)
				r := g.reread()
				printGroup(out, r.members, r.revision)
				continue
			}
			fmt.Fprintf(out, "%s %-6s %s %s rev %d%s\n", now, c.Op, quote(c.Name), quote(c.Value), c.Revision, how(c))
			if g.apply(c) {
				printLeader(out, now, g.leader, c.Revision)
			}
		}
	}
}

// how says how a member left: on purpose, or lost (and whether the
// resolver still serves it, as a suspect).
func how(c biregister.Change) string {
	switch {
	case c.Op != biregister.OpDelete:
		return ""
	case c.Left:
		return " (left)"
	case c.Suspect:
		return " (lost, suspect)"
	}
	return " (lost)"
}

// printLeader prints a line on a new leader of the group, as of revision.
func printLeader(out io.Writer, now string, leader place, revision int64) {
	if leader == (place{}) {
		fmt.Fprintf(out, "%s %-6s none: the group is empty\n", now, "LEADER")
		return
	}
	fmt.Fprintf(out, "%s %-6s %s term %d, registered %s\n", now, "LEADER", quote(leader.name), leader.created, age(leader.created, revision))
}

// What the command prints is safe for a terminal, whatever the group holds.

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/syncbuf"
)

// unsafeText returns what in s a terminal could take for something other
// than text, or "" if nothing: a byte that is not UTF-8, or a control
// character (C0, DEL, C1) other than a newline, and a tab that is not the
// layout of the flags' help ("\n    \t").
func unsafeText(s string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return fmt.Sprintf("byte %#x at %d is not UTF-8", s[i], i)
		case r == '\n':
		case r == '\t' && strings.HasSuffix(s[:i], "\n    "):
		case unicode.IsControl(r):
			return fmt.Sprintf("control character %U at %d", r, i)
		}
	}
	return ""
}

// oddNames are names and values a terminal must never get raw: 8-bit CSI
// and OSC (C1 bytes, not UTF-8), C1 characters encoded as UTF-8, ESC, BEL,
// DEL, bytes that are not UTF-8 at all; and one that prints as it is.
var oddNames = map[string]string{
	"c1-csi-\x9b31m":     "\x9b2J",
	"c1-osc-\x9d0;t\x07": "\x9d0;title\x9c",
	"c1-utf8-\u009b31m":  "\u009d0;t\u009c",
	"esc-\x1b[31m":       "\x1b]0;t\x07",
	"del-\x7f":           "bad-\xff\xfe",
	"fine-ü-名字":          "10.0.0.1:80",
}

// TestOutputSafe prints a group of odd names and values with members and
// watch, and as changes: nothing that reaches the terminal is a control
// character or not UTF-8, and a printable name prints as it is.
func TestOutputSafe(t *testing.T) {
	cluster := setup(t, true)
	ep := cluster.Endpoints()[0]
	cli := cluster.Client(t)
	ctx := context.Background()
	// The oldest, the leader, is odd too: its name is on the group's line.
	for _, name := range []string{"c1-csi-\x9b31m", "fine-ü-名字"} {
		_, err := cli.Put(ctx, "/svc/odd/"+name, oddNames[name])
		require.NoError(t, err)
	}
	for name, value := range oddNames {
		_, err := cli.Put(ctx, "/svc/odd/"+name, value)
		require.NoError(t, err)
	}

	code, out, errOut := runCmd(t, "members", "-endpoints", ep, "/svc/odd/")
	require.Equal(t, 0, code)
	assert.Empty(t, unsafeText(out), "members: %q", out)
	assert.Empty(t, unsafeText(errOut), "members: %q", errOut)
	assert.Regexp(t, `(?m)^\s+fine-ü-名字\s+10\.0\.0\.1:80\s`, out)
	assert.Len(t, rows(out), len(oddNames)+1)

	var watchOut, watchErr syncbuf.Buffer
	stop := runInBackground(t, []string{"watch", "-endpoints", ep, "/svc/odd"}, &watchOut, &watchErr)
	waitOutput(t, &watchOut, `(?m)^\s+fine-ü-名字\s+10\.0\.0\.1:80\s`)
	// Every odd name leaves and comes back: DELETE, LEADER and PUT lines.
	for name, value := range oddNames {
		_, err := cli.Delete(ctx, "/svc/odd/"+name)
		require.NoError(t, err)
		_, err = cli.Put(ctx, "/svc/odd/"+name, value)
		require.NoError(t, err)
	}
	waitOutput(t, &watchOut, fmt.Sprintf(`(?s)( PUT .*){%d}`, len(oddNames)))
	assert.Regexp(t, `(?m)^\S+ PUT +fine-ü-名字 10\.0\.0\.1:80 rev \d+$`, watchOut.String())
	stop()
	assert.Equal(t, len(oddNames), strings.Count(watchOut.String(), " PUT "), watchOut.String())
	assert.Equal(t, len(oddNames), strings.Count(watchOut.String(), " DELETE "), watchOut.String())
	// Deleted from outside in a group of seven: losses, each held a moment
	// unless its PUT came in the same batch of events ("(lost)").
	assert.Equal(t, len(oddNames), strings.Count(watchOut.String(), " (lost, suspect)\n")+strings.Count(watchOut.String(), " (lost)\n"), watchOut.String())
	assert.Contains(t, watchOut.String(), " LEADER ")
	assert.Empty(t, unsafeText(watchOut.String()), "watch: %q", watchOut.String())
	assert.Empty(t, unsafeText(watchErr.String()), "watch: %q", watchErr.String())
}

// TestHugeNameAndValue: a name or value of 2 MiB is printed once, quoted,
// and does not widen the other rows' columns; an error cuts a huge argument
// short, and keeps its cause.
func TestHugeNameAndValue(t *testing.T) {
	cluster := setup(t, true)
	huge := strings.Repeat("x", 2<<20)
	members := []biregister.Member{
		{Name: "a", Value: "10.0.0.1:80", CreateRevision: 5},
		{Name: huge, Value: "v", CreateRevision: 6},
		{Name: "b", Value: huge + " \x9b", CreateRevision: 7},
		{Name: "c", Value: "10.0.0.3:80", CreateRevision: 8},
	}
	var out strings.Builder
	printGroup(&out, members, 9)
	// The two huge fields, and no more than a few lines' worth besides.
	assert.Less(t, out.Len(), 2*len(huge)+1000)
	lines := strings.Split(out.String(), "\n")
	require.Len(t, lines, 7)
	assert.Regexp(t, `^\*\s{1,80}a\s{1,80}10\.0\.0\.1:80\s{1,80}5\s{1,80}4$`, lines[2])
	assert.Regexp(t, `^\s{1,80}c\s{1,80}10\.0\.0\.3:80\s{1,80}8\s{1,80}1$`, lines[5])
	// The huge fields run over into their rows' next columns, a gap between.
	edges := func(line string) string { return line[:min(len(line), 40)] + "…" + line[max(0, len(line)-40):] }
	assert.Regexp(t, `^\s+xxxx+…xxx+  v  +6  +3$`, edges(lines[3]))
	assert.Regexp(t, `^\s+b  +"xxx+…xxx+ \\x9b"  7  +2$`, edges(lines[4]))
	assert.Empty(t, unsafeText(out.String()))

	ep := cluster.Endpoints()[0]
	for _, args := range [][]string{
		{"members", "-endpoints", ep, "/" + huge + "/"}, // etcd's client refuses so big a request
		{"watch", "-endpoints", ep, "/" + huge + "/"},
		{"members", "-" + huge, "/p"},
		{"members", "-endpoints", ep, "-timeout", huge, "/p"},
		{huge},
	} {
		var stdout, stderr strings.Builder
		code := run(context.Background(), args, &stdout, &stderr)
		assert.NotZero(t, code)
		assert.Empty(t, stdout.String())
		assert.Less(t, len(stderr.String()), 3000, "%.200s", stderr.String())
		assert.Contains(t, stderr.String(), "xxx…xxx")
		assert.Empty(t, unsafeText(stderr.String()))
		if args[0] == "members" && len(args) == 4 {
			assert.Contains(t, stderr.String(), "larger than max", "the cause, after the argument")
		}
	}

	// The library's warnings name the prefix too.
	prefix := "/" + strings.Repeat("y", 512<<10) + "/"
	var watchOut, watchErr syncbuf.Buffer
	stop := runInBackground(t, []string{"watch", "-endpoints", ep, "-timeout", "1s", prefix}, &watchOut, &watchErr)
	waitOutput(t, &watchOut, `^no members at revision \d+\n`)
	cluster.Stop(t, 0)
	require.Empty(t, watchErr.WaitFor(time.After(waitFor), "level=WARN"))
	stop()
	for _, line := range strings.Split(watchErr.String(), "\n") {
		assert.Less(t, len(line), 3000, "%.200s", line)
	}
	assert.Contains(t, watchErr.String(), "yyy…yyy")
	assert.Empty(t, unsafeText(watchErr.String()))
}

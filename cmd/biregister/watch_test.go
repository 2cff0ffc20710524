// watch against a real etcd that is wiped, a group bigger than the Changes
// buffer, and an output slower than the changes.

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/syncbuf"
)

// TestWatchAfterWipe: etcd is replaced by an empty one, whose revisions
// start again at 1, and that reaches the revision of the table watch
// printed before the watcher notices. watch prints the members that are
// gone and every change of the new etcd: first those the watcher's listing
// of the new etcd finds, at its revision, with the leader's term, the
// create revision the listing does not carry; then the next ones.
func TestWatchAfterWipe(t *testing.T) {
	cluster := setup(t, true)
	ctx := context.Background()
	cli := cluster.Client(t)
	for i := range 20 { // the table will be at revision 22
		_, err := cli.Put(ctx, fmt.Sprintf("/other/%d", i), "v")
		require.NoError(t, err)
	}
	_, err := cli.Put(ctx, "/svc/wipe/old", "10.0.0.1:80")
	require.NoError(t, err)

	var out, errOut syncbuf.Buffer
	stop := runInBackground(t, []string{"watch", "-endpoints", cluster.Endpoints()[0], "/svc/wipe/"}, &out, &errOut)
	waitOutput(t, &out, `^1 members at revision 22; .*\n.*\n\*\s+old\s+10\.0\.0\.1:80\s+22\s+0\n`)

	// An idle watcher notices at a check of its stream, which comes after
	// 5 s of silence (10 to 15 s after the wipe on this machine): most
	// often after these writes, which bring the new etcd to revision 22,
	// but on a busy machine it may list before the last of them.
	cluster.Wipe(t)
	fresh := cluster.Client(t)
	// The older comes later by name: the order is by create revision.
	for _, name := range []string{"z", "a"} {
		_, err = fresh.Put(ctx, "/svc/wipe/"+name, "10.0.0.2:80")
		require.NoError(t, err)
	}
	for i := 3; i < 22; i++ { // up to the table's revision
		_, err = fresh.Put(ctx, "/other/new", "v")
		require.NoError(t, err)
	}
	// old is a loss, held as a suspect if that listing found z and a.
	waitOutputFor(t, 30*time.Second+waitFor, &out, `(?m)^\S+ DELETE old 10\.0\.0\.1:80 rev \d+ \(lost(, suspect)?\)\n`+
		`\S+ LEADER none: the group is empty\n`+
		`\S+ PUT +z 10\.0\.0\.2:80 rev \d+\n`+
		`\S+ LEADER z term 2, registered \d+ revisions ago\n`+
		`\S+ PUT +a 10\.0\.0\.2:80 rev \d+\n$`)
	_, err = fresh.Delete(ctx, "/svc/wipe/z")
	require.NoError(t, err)
	waitOutput(t, &out, `(?m)^\S+ DELETE z 10\.0\.0\.2:80 rev 23 \(lost(, suspect)?\)\n\S+ LEADER a term 3, registered 20 revisions ago\n$`)
	stop()
}

// TestWatchBigGroupTableOnce: a group bigger than the Changes buffer fills
// it with the members present at start, and a RESYNC follows them; the
// table already shows those members, so watch prints it once.
func TestWatchBigGroupTableOnce(t *testing.T) {
	cluster := setup(t, true)
	const n = biregister.DefaultBufferSize + 1
	cli := cluster.Client(t)
	fill(t, cli, "/svc/big/", n, 128)
	var out syncbuf.Buffer
	w, stop := watchInBackground(t, cluster, "/svc/big/", &out)
	require.Eventually(t, func() bool { return w.Status().Resyncs == 1 }, waitFor, 10*time.Millisecond,
		"the members present at start overflow the buffer")
	// Printed after the RESYNC, which is then behind watch.
	_, err := cli.Put(context.Background(), "/svc/big/new", "v")
	require.NoError(t, err)
	waitOutput(t, &out, `(?m)^\S+ PUT +new v rev \d+$`)
	stop()

	text := out.String()
	assert.Equal(t, 1, strings.Count(text, fmt.Sprintf("%d members at revision", n)), "the table, once")
	assert.NotContains(t, text, "RESYNC")
}

// pausedOutput is an output that the test reads line by line, so that
// watch waits on its writes whenever the test does not read.
type pausedOutput struct {
	w     *io.PipeWriter
	lines chan string
}

func newPausedOutput(t *testing.T) *pausedOutput {
	r, w := io.Pipe()
	p := &pausedOutput{w: w, lines: make(chan string)}
	go func() {
		defer close(p.lines)
		scanner := bufio.NewScanner(r)
		scanner.Buffer(nil, 1<<20)
		for scanner.Scan() {
			p.lines <- scanner.Text()
		}
	}()
	t.Cleanup(func() {
		r.Close()
		for range p.lines {
		}
	})
	return p
}

// next returns the next line written.
func (p *pausedOutput) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		require.True(t, ok, "output closed")
		return line
	case <-time.After(waitFor):
		t.Fatal("no output line")
		return ""
	}
}

// changeLine is a change or LEADER line without its time and revisions.
var changeLine = regexp.MustCompile(`^\S+ (PUT|DELETE|LEADER|RESYNC) +(\S+)`)

// events returns what the change and LEADER lines among lines say, as
// "OP name", up to and including the line that has last.
func events(t *testing.T, p *pausedOutput, last string) []string {
	var got []string
	for {
		line := p.next(t)
		m := changeLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		got = append(got, m[1]+" "+m[2])
		if got[len(got)-1] == last {
			return got
		}
	}
}

// TestWatchLeaderAfterItsChange: the output stalls while the group changes
// several times. Each LEADER line follows the change that made that member
// the leader, as of the changes printed, not as of the live cache.
func TestWatchLeaderAfterItsChange(t *testing.T) {
	cluster := setup(t, true)
	ctx := context.Background()
	cli := cluster.Client(t)
	for _, name := range []string{"a", "b"} {
		_, err := cli.Put(ctx, "/svc/slow/"+name, "v-"+name)
		require.NoError(t, err)
	}
	out := newPausedOutput(t)
	w, stop := watchInBackground(t, cluster, "/svc/slow/", out.w)
	assert.Regexp(t, `^2 members at revision \d+; leader a, `, out.next(t))
	for range 3 { // the header and two members
		out.next(t)
	}

	// watch prints at most the first of these before its output stalls.
	for _, op := range []func() error{
		func() error { _, err := cli.Delete(ctx, "/svc/slow/a"); return err },
		func() error { _, err := cli.Put(ctx, "/svc/slow/b", "v-b2"); return err },
		func() error { _, err := cli.Delete(ctx, "/svc/slow/b"); return err },
		func() error { _, err := cli.Put(ctx, "/svc/slow/d", "v-d"); return err },
		func() error { _, err := cli.Put(ctx, "/svc/slow/c", "v-c"); return err },
	} {
		require.NoError(t, op())
	}
	require.Eventually(t, func() bool { name, _ := w.GetLeader(); return name == "d" && len(w.Members()) == 2 },
		waitFor, 10*time.Millisecond)
	assert.Equal(t, []string{
		"DELETE a", "LEADER b",
		"PUT b",
		"DELETE b", "LEADER none:",
		"PUT d", "LEADER d",
		"PUT c",
	}, events(t, out, "PUT c"))
	stop()
}

// TestWatchLeaderThroughManyLeaves: members registered four at a time
// (the four share a create revision, and lead by name) leave: the leader,
// then most of the others, newest first, then the leaders in turn. A LEADER
// line follows each leave of a leader, for the next by create revision and
// name, however many left before.
func TestWatchLeaderThroughManyLeaves(t *testing.T) {
	cluster := setup(t, true)
	ctx := context.Background()
	cli := cluster.Client(t)
	keys := fill(t, cli, "/svc/leave/", 200, 4)
	var out syncbuf.Buffer
	_, stop := watchInBackground(t, cluster, "/svc/leave/", &out)
	waitOutput(t, &out, `(?m)^\s+m199\s`)

	var leaving, want []string
	leave := func(i int, next string) {
		leaving = append(leaving, keys[i])
		want = append(want, fmt.Sprintf("DELETE m%03d", i))
		if next != "" {
			want = append(want, "LEADER "+next)
		}
	}
	leave(0, "m001")
	for i := 199; i >= 50; i-- {
		leave(i, "")
	}
	for i := 1; i < 49; i++ {
		leave(i, fmt.Sprintf("m%03d", i+1))
	}
	leave(49, "none:")
	for first := 0; first < len(leaving); first += 128 {
		var ops []clientv3.Op
		for _, key := range leaving[first:min(first+128, len(leaving))] {
			ops = append(ops, clientv3.OpDelete(key))
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
	}
	waitOutput(t, &out, `(?m)^\S+ LEADER none: `)
	stop()
	var got []string
	for _, line := range strings.Split(out.String(), "\n") {
		if m := changeLine.FindStringSubmatch(line); m != nil {
			got = append(got, m[1]+" "+m[2])
		}
	}
	assert.Equal(t, want, got)
}

// TestWatchResync: changes pile up behind a stalled output beyond the
// buffer; the RESYNC stands for changes after the table, so watch prints
// the group again, read then, and follows it from there.
func TestWatchResync(t *testing.T) {
	cluster := setup(t, true)
	ctx := context.Background()
	cli := cluster.Client(t)
	_, err := cli.Put(ctx, "/svc/rs/a", "v")
	require.NoError(t, err)
	out := newPausedOutput(t)
	w, stop := watchInBackground(t, cluster, "/svc/rs/", out.w, biregister.WithBufferSize(4))
	for range 3 {
		out.next(t)
	}

	for i := range 20 {
		_, err := cli.Put(ctx, fmt.Sprintf("/svc/rs/m%02d", i), "v")
		require.NoError(t, err)
	}
	_, err = cli.Delete(ctx, "/svc/rs/a")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(w.Members()) == 20 && w.GetValueByName("a") == "" },
		waitFor, 10*time.Millisecond)
	got := events(t, out, "RESYNC rev")
	assert.Less(t, len(got), 20, "changes were left out: %q", got)
	// One RESYNC, or two if the command read a change while the burst was
	// still coming in: the table below is printed once either way (a RESYNC
	// the table already covers is absorbed).
	assert.Contains(t, []int64{1, 2}, w.Status().Resyncs)
	assert.Regexp(t, `^20 members at revision \d+; leader m00, term \d+`, out.next(t))
	assert.Regexp(t, `^LEADER +NAME`, out.next(t))
	assert.Regexp(t, `^\*\s+m00\s`, out.next(t))

	_, err = cli.Delete(ctx, "/svc/rs/m00")
	require.NoError(t, err)
	assert.Equal(t, []string{"DELETE m00", "LEADER m01"}, events(t, out, "LEADER m01"))
	stop()
}

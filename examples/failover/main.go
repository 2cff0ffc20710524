// Command failover shows leader election at work, in one process: three
// members a, b and c of one group, and a watcher that prints every change
// of the group as it happens. The leader leaves, another takes over, the
// old leader comes back at the back of the queue, and the new leader
// resigns.
//
// It runs on an etcd of its own unless -endpoints names one, finishes by
// itself in a few seconds, and exits non-zero if anything does not happen
// as it says, so it doubles as a smoke test.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/devetcd"
)

const (
	// ttl only matters to a member that stops without Close: every member
	// here closes, which revokes its lease, so nobody waits for it.
	ttl = 5
	// stepTimeout bounds every wait. Each step takes milliseconds; running
	// out of time means something is wrong.
	stepTimeout = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

// run is the whole program.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("failover", flag.ExitOnError)
	endpoints := flags.String("endpoints", "", "etcd endpoints, comma-separated (default: start an etcd in-process)")
	prefix := flags.String("prefix", "/services/failover-demo/", "key prefix of the group; nobody else may use it")
	flags.Parse(args)

	d := &demo{out: stdout, prefix: *prefix, members: map[string]biregister.Register{}}
	if *endpoints != "" {
		d.endpoints = strings.Split(*endpoints, ",")
	} else {
		srv, err := devetcd.Start("")
		if err != nil {
			return err
		}
		defer srv.Close()
		d.endpoints = srv.Endpoints()
		d.say("started an etcd in-process at %s", strings.Join(d.endpoints, ","))
	}

	w, err := biregister.NewWatcher(d.endpoints, d.prefix, ttl)
	if err != nil {
		return err
	}
	d.watcher = w
	defer d.closeAll()
	if others := w.GetNames(); len(others) > 0 {
		return fmt.Errorf("%s already has members %v: choose another -prefix", d.prefix, others)
	}
	d.say("watching %s", d.prefix)
	d.play(ctx)
	return d.err
}

// play is the story the program tells. Every step checks what it expects;
// after the first that fails, the others do nothing (see demo.err).
func (d *demo) play(ctx context.Context) {
	d.say("\n1. a, b and c join, in that order; the oldest member leads")
	d.join(ctx, "a")
	d.join(ctx, "b")
	d.join(ctx, "c")
	d.waitLeader(ctx, "a")
	d.check("a", "b", "c")

	d.say("\n2. a, the leader, closes: its lease is revoked, so it leaves at once")
	start := time.Now()
	d.leave(ctx, "a")
	d.waitLeader(ctx, "b")
	d.say("   b became the leader %v after a began to close", time.Since(start).Round(time.Millisecond))
	d.check("b", "c")

	d.say("\n3. a comes back: it is the youngest member now, so it queues at the back")
	d.join(ctx, "a")
	d.check("b", "c", "a")

	d.say("\n4. b resigns: it stays a member, but registers again at the back")
	d.resign(ctx, "b")
	d.waitLeader(ctx, "c")
	d.say("   c became the leader")
	d.check("c", "a", "b")

	d.say("\n5. everyone leaves")
	d.leave(ctx, "c")
	d.leave(ctx, "a")
	d.leave(ctx, "b")
	d.check()

	d.say("\ndone")
}

// demo holds the members, by name, and the watcher that reports on them.
type demo struct {
	out       io.Writer
	endpoints []string
	prefix    string
	watcher   biregister.Watcher
	members   map[string]biregister.Register
	// err is the first step that failed. Once it is set, every step does
	// nothing, so that play reads as a script rather than as error checks.
	err error
}

func (d *demo) say(format string, args ...any) {
	if d.err == nil {
		fmt.Fprintf(d.out, format+"\n", args...)
	}
}

// join registers a member and waits until the watcher has seen it.
func (d *demo) join(ctx context.Context, name string) {
	if d.err != nil {
		return
	}
	value := "host-" + name + ":8080" // whatever the others need, e.g. an address
	r, err := biregister.NewRegister(d.endpoints, d.prefix, name, value, ttl)
	if err != nil {
		d.err = err
		return
	}
	d.members[name] = r
	d.await(ctx, biregister.OpPut, name)
}

// leave closes a member and waits until the watcher has seen it go.
func (d *demo) leave(ctx context.Context, name string) {
	if d.err != nil {
		return
	}
	d.members[name].Close()
	delete(d.members, name)
	d.await(ctx, biregister.OpDelete, name)
}

// resign makes a member resign and waits until the watcher has seen it
// come back.
func (d *demo) resign(ctx context.Context, name string) {
	if d.err != nil {
		return
	}
	if err := d.members[name].Resign(ctx); err != nil {
		d.err = err
		return
	}
	d.await(ctx, biregister.OpPut, name)
}

// await prints the watcher's changes until it sees op on name.
func (d *demo) await(ctx context.Context, op biregister.Op, name string) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	for d.err == nil {
		select {
		case c, ok := <-d.watcher.Changes():
			if !ok {
				d.err = errors.New("the watcher closed")
				return
			}
			d.say("   watcher: %-6s %s=%s", c.Op, c.Name, c.Value)
			if c.Op == op && c.Name == name {
				return
			}
		case <-ctx.Done():
			d.err = fmt.Errorf("the watcher did not see %s %s: %w", op, name, ctx.Err())
		}
	}
}

// waitLeader waits until the named member knows it leads.
func (d *demo) waitLeader(ctx context.Context, name string) {
	if d.err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := d.members[name].WaitLeader(ctx); err != nil {
		d.err = fmt.Errorf("%s did not become the leader: %w", name, err)
	}
}

// check fails unless the watcher sees exactly want, oldest first, and the
// oldest is the only member that believes it leads.
func (d *demo) check(want ...string) {
	if d.err != nil {
		return
	}
	var got []string
	for _, m := range d.watcher.Members() {
		got = append(got, m.Name)
	}
	if !slices.Equal(got, want) {
		d.err = fmt.Errorf("the watcher sees members %v, want %v", got, want)
		return
	}
	var leaders []string
	for name, r := range d.members {
		if r.AmILeader() {
			leaders = append(leaders, name)
		}
	}
	if len(want) > 0 && !slices.Equal(leaders, want[:1]) {
		d.err = fmt.Errorf("members that believe they lead: %v, want [%s]", leaders, want[0])
		return
	}
	leader, _ := d.watcher.GetLeader()
	d.say("   members, oldest first: %v; leader: %q", got, leader)
}

// closeAll closes whatever is still open, the watcher last.
func (d *demo) closeAll() {
	for _, r := range d.members {
		r.Close()
	}
	d.watcher.Close()
}

// Command leader runs leader-only work the safe way: once per term of
// leadership, under the term's context, with every write to etcd guarded by
// the term's fence. Start a few against one etcd, then stop or pause the
// leader (Ctrl-Z) and watch another take over, and the old one's work stop
// before the new one's begins:
//
//	go run ./examples/leader -endpoints localhost:2379 -name a
//	go run ./examples/leader -endpoints localhost:2379 -name b
//
// Without -endpoints it starts an etcd of its own, inside the process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/devetcd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "leader:", err)
		os.Exit(1)
	}
}

// run is the whole program; it returns when ctx ends.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	hostname, _ := os.Hostname()
	flags := flag.NewFlagSet("leader", flag.ExitOnError)
	endpoints := flags.String("endpoints", "", "etcd endpoints, comma-separated (default: start an etcd in-process)")
	prefix := flags.String("prefix", "/services/cron/", "key prefix of the group")
	name := flags.String("name", fmt.Sprintf("%s-%d", hostname, os.Getpid()), "name of this member")
	ttl := flags.Int64("ttl", 5, "lease TTL in seconds")
	every := flags.Duration("every", time.Second, "how often the leader does its work")
	flags.Parse(args)
	log := slog.New(slog.NewTextHandler(stdout, nil))

	var eps []string
	if *endpoints != "" {
		eps = strings.Split(*endpoints, ",")
	} else {
		srv, err := devetcd.Start("") // its data goes to a temporary directory
		if err != nil {
			return err
		}
		defer srv.Close()
		eps = srv.Endpoints()
		log.Info("started an etcd in-process", "endpoints", eps)
	}

	// A member that restarts under its name waits for its previous run's
	// lease instead of failing: a crash loop would not help.
	reg, err := biregister.NewRegister(eps, *prefix, *name, "", *ttl, biregister.WithNameWait(time.Duration(*ttl)*time.Second))
	if err != nil {
		return err
	}
	defer reg.Close()
	log.Info("registered", "key", reg.MyKey())

	err = reg.Lead(ctx, func(term *biregister.Term) {
		log.Info("term began", "revision", term.Revision())
		work(term, reg.EtcdClient(), *prefix, *name, *every, log)
		log.Info("term ended", "revision", term.Revision(), "cause", context.Cause(term))
	})
	if errors.Is(err, context.Canceled) {
		return nil // stopped by a signal
	}
	return err
}

// work is the leader-only work: it counts ticks in etcd until its term ends.
// Every write runs under the term's context and compares the term's fence,
// so a write this process makes after its term ended, paused or not, fails
// instead of overwriting the successor's.
func work(term *biregister.Term, cli *clientv3.Client, prefix, name string, every time.Duration, log *slog.Logger) {
	counter := strings.TrimSuffix(prefix, "/") + "-ticks"
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-term.Done():
			return
		case <-tick.C:
		}
		get, err := cli.Get(term, counter)
		if err != nil {
			continue // the term has likely ended; Done tells
		}
		n := 0
		if len(get.Kvs) > 0 {
			n, _ = strconv.Atoi(string(get.Kvs[0].Value))
		}
		resp, err := cli.Txn(term).
			If(term.Fence(), clientv3.Compare(clientv3.ModRevision(counter), "=", modRevision(get))).
			Then(clientv3.OpPut(counter, strconv.Itoa(n+1)), clientv3.OpPut(counter+"-by", name)).
			Commit()
		switch {
		case err != nil:
			log.Warn("tick not written", "err", err)
		case !resp.Succeeded:
			log.Warn("tick refused: no longer the registration that leads, or raced")
		default:
			log.Info("tick written", "ticks", n+1)
		}
	}
}

// modRevision returns the mod revision of the key a Get read, or 0 if it
// was absent, as a Compare on ModRevision expects.
func modRevision(get *clientv3.GetResponse) int64 {
	if len(get.Kvs) == 0 {
		return 0
	}
	return get.Kvs[0].ModRevision
}

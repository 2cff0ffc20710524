// Command service is the biregister quick start as a program: it registers
// itself in a group, logs every change of the group, and does leader-only
// work while it leads. Start a few against one etcd and stop the leader to
// see another take over:
//
//	go run ./examples/service -endpoints localhost:2379 -name a
//	go run ./examples/service -endpoints localhost:2379 -name b
//
// Without -endpoints it starts an etcd of its own, inside the process.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/devetcd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

// run is the whole program; it returns when ctx ends.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	hostname, _ := os.Hostname()
	flags := flag.NewFlagSet("service", flag.ExitOnError)
	endpoints := flags.String("endpoints", "", "etcd endpoints, comma-separated (default: start an etcd in-process)")
	prefix := flags.String("prefix", "/services/demo/", "key prefix of the group")
	name := flags.String("name", fmt.Sprintf("%s-%d", hostname, os.Getpid()), "name of this member")
	addr := flags.String("addr", "127.0.0.1:8080", "value of this member, e.g. its address")
	ttl := flags.Int64("ttl", 5, "lease TTL in seconds")
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

	reg, err := biregister.NewRegister(eps, *prefix, *name, *addr, *ttl)
	if err != nil {
		return err
	}
	log.Info("registered", "key", reg.MyKey(), "value", *addr)

	// The members present now come first, as PUTs; then every change.
	// Close closes the channel, which ends the loop.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range reg.Changes() {
			log.Info("change", "op", c.Op, "name", c.Name, "value", c.Value, "members", names(reg.Members()))
		}
	}()

	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			// Leadership can end at any moment; ask again before every piece of work.
			if reg.AmILeader() {
				log.Info("leader: doing leader-only work")
			}
		case <-ctx.Done():
			// Close revokes the lease: the others see this member leave at
			// once, not after ttl seconds.
			reg.Close()
			<-done
			log.Info("closed")
			return nil
		}
	}
}

// names lists the members' names, the leader first.
func names(members []biregister.Member) []string {
	var names []string
	for _, m := range members {
		names = append(names, m.Name)
	}
	return names
}

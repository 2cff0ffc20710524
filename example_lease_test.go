package biregister_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/biregister/biregister"
)

// A sharded worker runs for leadership of many shards, one group each, on
// one lease: one keepalive stream for all of them, and each shard led, fenced
// and repaired on its own.
func ExampleLease() {
	lease, err := biregister.NewLease(etcdEndpoints, 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Close() // every shard's key leaves in one revision

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var led, ended sync.WaitGroup
	for shard := range 8 {
		prefix := fmt.Sprintf("/example/shards/%02d/", shard)
		reg, err := biregister.NewRegister(etcdEndpoints, prefix, "worker-1", "10.0.0.1:8080", 5, biregister.WithLease(lease))
		if err != nil {
			fmt.Println(err)
			return
		}
		led.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			_ = reg.Lead(ctx, func(term *biregister.Term) {
				// Leader-only work for this shard goes here, its writes
				// fenced with term.Fence().
				led.Done()
				<-term.Done()
			})
		}()
	}
	led.Wait()
	cancel() // each term ends with ctx, and Lead returns
	ended.Wait()
	fmt.Println("leading 8 shards on one lease")
	// Output: leading 8 shards on one lease
}
